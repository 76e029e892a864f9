"""`launcher bench`: measured throughput, latency and GPU memory for a workload."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import common
from ..errors import ExitCode
from .launch import spec_from_cli


def bench(
    ctx: typer.Context,
    name: Annotated[Optional[str], typer.Option("--name", help="Benchmark this running launch (else start one from the model flags).")] = None,
    model: common.Model = None,
    revision: common.Revision = None,
    download_dir: common.DownloadDir = None,
    model_path: common.ModelPath = None,
    model_name: common.ModelName = None,
    size_in_billions: common.Size = None,
    model_format: common.ModelFormat = None,
    config: common.Config = None,
    env: common.Env = None,
    num_requests: common.NumRequests = 64,
    concurrency: common.Concurrency = 8,
    request_rate: common.RequestRate = None,
    prompt_len: common.PromptLen = "128",
    output_len: common.OutputLen = "64",
    prompts_file: common.PromptsFile = None,
    workload: Annotated[Optional[str], typer.Option("--workload", "-w", help="A named workload (chat, rag, batch, agent; as in `launcher tune`) at --concurrency; --prompt-len/--output-len override its lengths.")] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Requests sent first and not measured.")] = 2,
    prompt_format: Annotated[str, typer.Option("--prompt-format", help="ids (token ids, exact lengths) or text (random ids decoded with the model's tokenizer.json, like vLLM's random dataset).")] = "ids",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    timeout: Annotated[float, typer.Option("--timeout", click_type=common.positive("--timeout"), help="Start-up deadline and per-request timeout, seconds.")] = 600.0,
    plot_file: Annotated[Optional[str], typer.Option("--plot", help="Write latency percentiles and throughput over time to this PNG.")] = None,
    json_out: common.Json = False,
) -> None:
    """Benchmark a server: request and token throughput, TTFT, TPOT and ITL (p50/p90/p99), errors,
    GPU memory and utilization (NVML). Exit: 0 all requests succeeded, 1 failures or the server died
    (partial results are still reported), 2 bad input, 3 does not fit, 4 never became ready."""
    import contextlib
    import os
    from dataclasses import replace

    from ..bench import plot, run_bench
    from ..errors import BadInput
    from ..launching import effective_state, prepare
    from ..planning import resolve_model
    from ..runs import read_json, read_state, run_dir
    from ..serving import served

    if workload:
        from ..workloads import at_level, named

        from ..bench import parse_range

        wl = named(workload, seed=seed,  # the length options override the workload's, as in `launcher tune`
                   prompt_len=parse_range(prompt_len, "--prompt-len") if prompt_len else None,
                   output_len=parse_range(output_len, "--output-len") if output_len else None)
        if len(wl) != 1:
            raise BadInput("bench takes one --workload at a time.")
        w = replace(at_level(wl[0], concurrency, 0), num_requests=num_requests, request_rate=request_rate,
                      warmup=warmup).validate()
    else:
        w = common.workload(num_requests, concurrency, request_rate, prompt_len, output_len, prompts_file,
                            warmup=warmup, seed=seed)
    if prompt_format not in ("ids", "text"):
        raise BadInput("--prompt-format must be ids or text.")
    api_key = os.environ.get("VLLM_API_KEY")
    model_path, model_repo = common.split_model(model, model_path)
    if name and not (model_path or model_name or config or model_repo):
        idle = [flag for flag, v in (("--revision", revision), ("--download-dir", download_dir), ("--env", env),
                                     ("--size-in-billions", size_in_billions), ("--model-format", model_format))
                if v] + [a for a in ctx.args if a.startswith("-")]
        if idle:
            raise BadInput(f"with --name (a running launch) {', '.join(idle)} would do nothing.",
                           hint="Drop them, or give model flags instead of --name to start a launch for the benchmark.")
        st = read_state(name)
        if st is None or effective_state(st) != "READY":
            raise BadInput(f"launch '{name}' is not running.", hint="See `launcher ps`, or give model flags to start one.")
        rec = read_json(run_dir(name) / "launch.json") or {}
        spec = rec.get("spec", {})
        argv = rec.get("argv", [])
        from ..engines.vllm import served_model_name

        model = served_model_name(argv)  # what the server answers to (a Hub launch: the repository id)
        ref = resolve_model(spec.get("model_path"), spec.get("model_name"), spec.get("size_in_billions"),
                            spec.get("model_format"), spec.get("quantization"), model_repo=spec.get("model"),
                            revision=spec.get("revision"))
        host = "127.0.0.1" if st.get("host") in ("0.0.0.0", None) else st["host"]
        base, vocab = f"http://{host}:{st['port']}", ref.arch.vocab_size
        ref_path = argv[argv.index("--model") + 1]  # the local folder vLLM loaded (a Hub model's snapshot)
        ctxm = contextlib.nullcontext(None)

        def alive():
            return effective_state(read_state(name) or {}) == "READY"
    else:
        spec = spec_from_cli(ctx, config, dict(model=model_repo, revision=revision, download_dir=download_dir,
                                               model_path=model_path, model_name=model_name, size_in_billions=size_in_billions,
                                               model_format=model_format, name=name or None, env=env, startup_timeout_s=timeout))
        if not name:
            spec = replace(spec, name=f"bench-{spec.name}"[:64])
        from .download import fetch_model

        prep = prepare(spec, fetch=fetch_model(), claim=True)
        from ..engines.vllm import served_model_name

        model = served_model_name(prep.argv)
        vocab = resolve_model(spec.model_path, spec.model_name, spec.size_in_billions, spec.model_format,
                              spec.quantization, model_repo=spec.model, revision=spec.revision).arch.vocab_size
        base = f"http://127.0.0.1:{prep.port}"
        ref_path = spec.model_path
        ctxm = served(prep, timeout_s=timeout)
        alive = None  # set from the in-process supervisor below
    if prompt_format == "text":
        from pathlib import Path

        tok = Path(ref_path or "") / "tokenizer.json"
        if not ref_path or not tok.is_file():
            raise BadInput("--prompt-format text needs a local model folder with tokenizer.json.")
        w = replace(w, tokenizer=str(tok))
    con = common.console(stderr=True)
    with ctxm as sr:
        if sr is not None:
            from ..supervisor.machine import State

            alive = (lambda: sr.sup.state == State.READY and sr.sup.restarts == 0)  # noqa: E731
        with con.status(f"benchmarking {model}: {w.num_requests} requests, concurrency {w.concurrency}"):
            rep = run_bench(base, model, w, vocab_size=vocab, api_key=api_key, timeout_s=timeout, alive=alive)
    if plot_file:
        plot(rep, plot_file)
    if json_out:
        common.emit_json(rep.to_dict())
    else:
        render(rep, common.console())
    if rep.failed or rep.aborted:
        raise typer.Exit(ExitCode.FAILED)


def render(rep, con) -> None:
    from rich.table import Table

    t = Table(title=f"bench: {rep.completed} ok, {rep.failed} failed in {rep.duration_s:.1f} s" + (f" — {rep.aborted}" if rep.aborted else ""))
    t.add_column("metric")
    for c in ("mean", "p50", "p90", "p99"):
        t.add_column(c, justify="right")
    for label, d in (("TTFT ms", rep.ttft_s), ("TPOT ms", rep.tpot_s), ("ITL ms", rep.itl_s), ("latency ms", rep.latency_s)):
        t.add_row(label, *("-" if d[k] is None else f"{d[k] * 1000:.1f}" for k in ("mean", "p50", "p90", "p99")))
    con.print(t)
    gpu = rep.gpu
    con.print(f"requests/s {rep.request_throughput:.2f} · output tokens/s {rep.output_throughput:.1f} · "
              f"total tokens/s {rep.total_token_throughput:.1f}" +
              (f" · GPU max used {gpu['max_used_bytes'] / 2**30:.2f} GiB, mean util {gpu['mean_util_pct']:.0f}%" if gpu.get("max_used_bytes") else " · no GPU sampled"))
    srv = rep.server
    if srv:
        con.print("server: " + " · ".join(
            x for x in (f"preemptions {srv['preemptions']:.0f}" if "preemptions" in srv else "",
                        f"prefix cache hit rate {srv['prefix_cache_hit_rate']:.0%}" if "prefix_cache_hit_rate" in srv else "")
            if x))
    for e in rep.errors:
        con.print(f"[red]error:[/] {e}")
