"""Measure what vLLM itself reserves on a GPU, one `vllm serve` start per case.

Adapted from shared/calibration/measure_vllm.py: the architecture comes from the
launcher's own catalog (launcher/models/catalog.json), each case carries its own
engine flags, and vLLM runs with VLLM_LOGGING_LEVEL=DEBUG so that its memory
profiler's breakdown (torch peak increase, non-torch increase, weights) is logged.

usage: python3 benchmarks/gpu/measure_vllm.py CASES.json [CASE ...]
       PLAN_GPU=H200 python3 benchmarks/gpu/measure_vllm.py --blind DIR CASES.json [CASE ...]
           (no GPU: the launcher's plan of each case written to DIR/CASE.json, committed before the starts)
       python3 benchmarks/gpu/measure_vllm.py --parse LOG CASE MODEL SIZE [ARG ...]   (a log of another start)
Results: $OUT/results.jsonl (one JSON object per start) and $OUT/logs/CASE.log.
With tensor/pipeline parallelism each worker logs its own profile; `profile_all` keeps them all.
Needs vLLM importable (see shared/gpu/README.md) and a GPU.
"""
import json, os, re, signal, subprocess, sys, time, shutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.environ.get("OUT", "/tmp/out")
MODELS = os.environ.get("MODELS_DIR", "/root/models")
PAT = {k: re.compile(v) for k, v in {
    "weights_gib": r"Model loading took ([\d.]+) GiB",
    "kv_avail_gib": r"Available KV cache memory: ([\d.]+) GiB",
    "kv_tokens": r"GPU KV cache size: ([\d,]+) tokens",
    "max_conc": r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x",
    "cg_est_gib": r"Estimated CUDA graph memory: ([\d.]+) GiB",
    # the estimate's parts (DEBUG): first-capture MiB, graphs, per-graph MiB (benchmarks/results_io.graph_parts)
    "cg_full": r"Estimated FULL CUDA graph memory: ([\d.]+) MiB first-capture \+ \((\d+)-1\) .* ([\d.]+) MiB per-graph",
    "cg_piecewise": r"Estimated PIECEWISE CUDA graph memory: ([\d.]+) MiB first-capture \+ \((\d+)-1\) .* ([\d.]+) MiB per-graph",
    "cg_actual": r"CUDA graph pool memory: ([\d.]+) GiB \(actual\), ([\d.]+) GiB \(estimated\)",
    "graph_took_gib": r"Graph capturing finished in \d+ secs, took ([\d.]+) GiB",
    "profile": r"Total non KV cache memory: ([\d.]+)GiB; torch peak memory increase: ([\d.]+)GiB; non-torch forward increase memory: ([\d.]+)GiB; weights memory: ([\d.]+)GiB",
    "requested_gib": r"worker requested memory: ([\d.]+)GiB",
    "max_len": r"Using max model len (\d+)",
    "autofit": r"Auto-fit max_model_len: reduced from (\d+) to (\d+)",
    "est_max_len": r"estimated maximum model length is (\d+)",
    "batched": r"max_num_batched_tokens=(\d+)",
    "encoder_budget": r"Encoder cache will be initialized with a budget of (\d+) tokens",
    "linear_kernel": r"Using (\w+Kernel) for",
    "attn_block": r"Setting attention block size to (\d+) tokens",
    "mamba_pad_pct": r"Padding mamba page size by ([\d.]+)%",
    "mamba_mode": r"Mamba cache mode is set to '(\w+)'",
    "encoder_profile": r"profiled with (\d+) (\w+) items of the maximum feature size",
    "padding_layers": r"Add (\d+) padding layers",
    "runner_fallback": r"Model Runner V2 does not yet support ([^;]+); using the V1",
    "init_s": r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+)",
    "error": r"((?:ValueError|RuntimeError|torch.OutOfMemoryError|AssertionError|ImportError|ModuleNotFoundError|KeyError|TypeError): [^\n]{0,600})",
}.items()}


def config_for(case):
    if "config" in case:
        return case["config"]
    cat = json.load(open(os.path.join(ROOT, "launcher", "models", "catalog.json")))
    return cat["models"][case["model"]]["sizes"][case["size"]]["config"]


def write_folders(case):
    """The case's model folder (and its drafts' folders: a case's "drafts", each a "case" name with a "config" or a
    catalog "model" and "size"); returns the model folder and the case's arguments with {MODELS} filled in."""
    for draft in case.get("drafts", []):
        dd = os.path.join(MODELS, draft["case"])
        os.makedirs(dd, exist_ok=True)
        json.dump(config_for(draft), open(f"{dd}/config.json", "w"))
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(HERE, f), dd)
    d = os.path.join(MODELS, case["case"])
    os.makedirs(d, exist_ok=True)
    json.dump(config_for(case), open(f"{d}/config.json", "w"))
    return d, [a.replace("{MODELS}", MODELS) for a in case.get("args", [])]


def blind(out_dir, case):
    """The launcher's plan for this case on PLAN_GPU, written before vLLM starts (a dry run, no GPU)."""
    d, args = write_folders(case)
    launched_args, env, extra = launcher_graph_args(d, args)
    os.makedirs(out_dir, exist_ok=True)
    record = {"case": case["case"], "planned_gpu": os.environ.get("PLAN_GPU"), "planned_vllm": os.environ.get("PLAN_VLLM"),
              "user_args": args, **extra}
    json.dump(record, open(os.path.join(out_dir, case["case"] + ".json"), "w"), indent=1)
    print(case["case"], json.dumps(extra["estimate_at_start"]), flush=True)


def run(case, port):
    name = case["case"]
    d, case_args = write_folders(case)
    sys.path.insert(0, HERE)
    from make_dummy_model import write_gptq_headers, write_model
    if case.get("safetensors") == "gptq_headers":  # vLLM learns the quantized layers from the headers
        write_gptq_headers(d, config_for(case))
    if case.get("tokenizer"):  # a multimodal model: vLLM needs a tokenizer and processor for its dummy images
        write_model(d, config_for(case), tokenizer=case["tokenizer"])
    else:
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(HERE, f), d)
    args, env_extra, extra = case_args, {}, {}
    if case.get("graph_memory") == "launcher":  # started as `launcher launch` starts it
        args, env_extra, extra = launcher_graph_args(d, args)
    os.makedirs(f"{OUT}/logs", exist_ok=True)
    log = f"{OUT}/logs/{name}.log"
    cmd = [sys.executable, "-c", "import sys; from vllm.entrypoints.cli.main import main; sys.argv[0]='vllm'; main()",
           "serve", d, "--load-format", "dummy", *([] if case.get("tokenizer") else ["--skip-tokenizer-init"]),
           "--port", str(port), "--host", "127.0.0.1",
           *args]
    env = dict(os.environ, VLLM_LOGGING_LEVEL="DEBUG", VLLM_USE_FLASHINFER_SAMPLER="0", **env_extra)
    t0 = time.time()
    with open(log, "w") as fh:
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        ready, used_ready = False, None
        try:
            while time.time() - t0 < float(os.environ.get("CASE_S", 300)):
                time.sleep(1)
                if p.poll() is not None:
                    break
                if "Application startup complete" in open(log, errors="replace").read():
                    ready = True
                    used_ready = gpu_used_mib()  # all vLLM holds once serving (the share and beyond it)
                    break
        finally:
            # also when this script is itself stopped (`timeout` sends SIGTERM): vLLM runs in its own
            # process group (setsid) and would otherwise keep its GPU memory after we are gone
            ready_s = time.time() - t0
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(30)
            except Exception:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except Exception:
                    pass
    record(name, case, open(log, errors="replace").read(), ready=ready, ready_s=ready_s, rc=p.returncode,
           **({"used_ready_mib": used_ready} if used_ready is not None else {}), **extra)
    # wait until the GPU memory is free again before the next case
    for _ in range(60):
        if gpu_used_mib() < 2048:
            break
        time.sleep(1)


def launcher_graph_args(d, args):
    """The engine arguments and variables `launcher launch` gives vLLM for this model folder and these flags on
    this host's GPU (launching.graph_budget: its own graph share), with the estimate made here before the start."""
    sys.path.insert(0, ROOT)
    from launcher.engine_args import parse_argv, to_argv
    from launcher.engines import vllm as vllm_engine
    from launcher.launching import graph_budget
    from launcher.planning import plan, resolve_model

    # PLAN_VLLM: the release planned for in a dry run (the GPU host's own vLLM is read there)
    version = os.environ.get("PLAN_VLLM")
    spec = vllm_engine.arg_spec_for_version(version) if version else vllm_engine.arg_spec(allow_dump=False)
    engine_args = parse_argv(list(args), spec)
    p = plan(resolve_model(d, None, None, None, engine_args.get("quantization") or "none", dtype=engine_args.get("dtype")),
             engine_args, env=dict(os.environ), gpu_preset=os.environ.get("PLAN_GPU"),  # PLAN_GPU: a dry run without a GPU
             vllm_version=version)
    e = p.estimate
    server_args, env = graph_budget(e, engine_args)
    keep = ("fits", "graph_memory", "runner", "weights_bytes", "lora_bytes", "draft_weights_bytes", "draft_kv_layers",
            "activation_bytes", "kv_bytes_per_token", "gpu_memory_utilization", "vllm_gpu_memory_utilization", "kv_cache_tokens",
            "kv_cache_bytes", "cudagraph_bytes", "outside_budget_bytes", "max_model_len_fit", "requested_bytes")
    return to_argv(server_args, spec), env, {"graph_memory": e.graph_memory, "launched_env": env,
                                             "launched_args": to_argv(server_args, spec),
                                             "estimate_at_start": {k: getattr(e, k) for k in keep}}


def record(name, case, text, **extra):
    """One results line from a vLLM start-up log."""
    lines = gpu_info()
    r = {"case": name, "model": case.get("model"), "size": case.get("size"), **extra,
         **({"config": case["config"], "family": case.get("family")} if "config" in case else {}),
         **({"safetensors": case["safetensors"]} if case.get("safetensors") else {}),
         "args": case.get("args", []), "gpu": lines[0] if lines else "", "gpu_count": len(lines), "gpus_all": lines}
    if "ready_s" in r:
        r["ready_s"] = round(r["ready_s"], 1)
    for k, pat in PAT.items():
        m = pat.search(text)
        if k == "error":  # vLLM 0.24 logs a harmless ImportError listing unavailable KV-cache backends
            m = next((x for x in pat.finditer(text) if "TURBOQUANT" not in x.group(1)), None)
        if m:
            r[k] = m.groups() if len(m.groups()) > 1 else m.group(1)
    r["profile_all"] = PAT["profile"].findall(text)
    r["kv_tokens_all"] = PAT["kv_tokens"].findall(text)
    print(json.dumps(r), flush=True)
    os.makedirs(OUT, exist_ok=True)
    with open(f"{OUT}/results.jsonl", "a") as fh:
        fh.write(json.dumps(r) + "\n")
    return r


def gpu_info():
    """One line per GPU (name, total, used), as nvidia-smi prints them."""
    try:
        pin = os.environ.get("CUDA_VISIBLE_DEVICES")
        out = subprocess.run(["nvidia-smi", *(["-i", pin] if pin else []), "--query-gpu=name,memory.total,memory.used", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout
        return [x.strip() for x in out.splitlines() if x.strip()]
    except Exception as e:  # noqa: BLE001
        return [repr(e)]


def gpu_used_mib():
    try:
        pin = os.environ.get("CUDA_VISIBLE_DEVICES")
        out = subprocess.run(["nvidia-smi", *(["-i", pin] if pin else []), "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout
        return max(int(x) for x in out.split())
    except Exception:  # noqa: BLE001
        return 0


def _stop(signum, frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop)
    if sys.argv[1] == "--parse":
        log, name, model, size, *args = sys.argv[2:]
        record(name, {"model": model, "size": size, "args": args}, open(log, errors="replace").read(), ready=True)
        sys.exit(0)
    if sys.argv[1] == "--blind":
        out_dir, cases_file, *names = sys.argv[2:]
        for c in json.load(open(cases_file)):
            if not names or c["case"] in names:
                blind(out_dir, c)
        sys.exit(0)
    cases = json.load(open(sys.argv[1]))
    want = set(sys.argv[2:])
    for i, c in enumerate(cases):
        if not want or c["case"] in want:
            run(c, 18000 + i)
    print("ALL DONE", flush=True)
