"""Switching models behind one gateway (`launcher serve`) on a GPU: a cold start against a wake from sleep, and three
models taking requests in turn on one GPU, each planned at 32k, with none ever out of memory.

Three models (dummy weights: Llama-3.1-8B twice, Qwen2.5-7B), each with a 30 GiB budget: two fit beside each other
on an 80 GB card, the third only once one of them is put to sleep (vLLM's sleep mode level 1). The steps:
  1. A's first request: a cold start (compile cache empty), then B's: a cold start (cache warm), time to first token;
  2. C's first request: no room, so the least recently used idle model (A) is put to sleep, then C starts;
  3. A's next request: no room, so B sleeps and A is woken: time to first token against A's cold start;
  4. rounds of requests in turn A, B, C (one long prompt each, then short ones): every one answered, none out of
     memory; NVML's memory after each step and per process (what a sleeping model keeps on the device).
Results: OUT/switch.json (every step, its time, the gateway's state, NVML), the gateway's log, access log, metrics,
status and each model's server log.

usage (GPU host, vLLM staged under /root/site): python3 benchmarks/gpu/gateway_switch.py OUT_DIR
rehearsal on the CPU build (tiny model, stopped instead of put to sleep): .venv/bin/python benchmarks/gpu/gateway_switch.py OUT_DIR --cpu
the table of a run: python3 benchmarks/gpu/gateway_switch.py --report OUT_DIR/switch.json [SERVER_LOG_DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
GiB = 1 << 30


def models(cpu: bool, base: str) -> list[dict]:
    """The three entries of the models file."""
    if cpu:
        tiny = os.path.join(ROOT, "examples", "tiny-llama")
        common = {"model_path": tiny, "env": {"VLLM_CPU_KVCACHE_SPACE": "1"}, "engine_args": {"max-model-len": 1024}}
        return [{"name": n, **common} for n in ("a", "b", "c")]
    out = []
    for name, (family, size) in (("a", ("llama-3.1-instruct", "8")), ("b", ("llama-3.1-instruct", "8")),
                                 ("c", ("qwen2.5-instruct", "7"))):
        path = os.path.join(base, f"gw_{name}")
        if not os.path.isdir(path):
            subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu", "make_dummy_model.py"), family, size,
                            path], check=True, stdout=subprocess.DEVNULL)
        out.append({"name": name, "model_path": path, "gpu_memory_budget": "30GiB",
                    "engine_args": {"max-model-len": 32768, "load-format": "dummy"}})
    return out


def nvml() -> dict:
    """Used memory of the GPU and of each process on it (nvidia-smi), in GiB."""
    try:
        used = subprocess.run(["nvidia-smi", "--query-gpu=memory.used,memory.total", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        apps = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return {}
    u, t = (float(x) for x in used.split(","))
    procs = {}
    for line in apps:
        pid, mib = (x.strip() for x in line.split(","))
        procs[pid] = round(float(mib) / 1024, 2)
    return {"used_gib": round(u / 1024, 2), "total_gib": round(t / 1024, 2), "per_process_gib": procs}


def request(url: str, model: str, prompt_words: int, max_tokens: int, timeout_s: float = 900) -> dict:
    """One streamed completion: status, seconds to the first token and to the end."""
    prompt = " ".join(f"w{5 + i % 900}" for i in range(prompt_words))
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                       "ignore_eos": True, "stream": True}).encode()
    req = urllib.request.Request(url + "/v1/completions", body, {"Content-Type": "application/json"})
    t = time.perf_counter()
    first = None
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            for line in r:
                if line.startswith(b"data: ") and first is None:
                    first = time.perf_counter() - t
            status = r.status
        err = ""
    except urllib.error.HTTPError as e:
        status, err = e.code, e.read().decode(errors="replace")[:500]
    except OSError as e:
        status, err = 0, str(e)[:500]
    return {"model": model, "status": status, "ttft_s": round(first, 3) if first is not None else None,
            "total_s": round(time.perf_counter() - t, 3), "prompt_words": prompt_words, "error": err}


def states(url: str) -> dict:
    try:
        d = json.loads(urllib.request.urlopen(url + "/gateway/status", timeout=30).read())
    except OSError:
        return {}
    def gib(x):
        return None if x is None else round(x / GiB, 2)

    return {m["name"]: {"state": m["state"], "planned_gib": gib(m.get("planned_bytes")),
                        "nvml_gib": gib(m.get("nvml_bytes"))} for m in d.get("models", [])}


def report(path: str) -> str:
    """A markdown table of one run's steps (switch.json), with what vLLM logged of each sleep and wake."""
    import re

    d = json.load(open(path))
    logs = os.path.dirname(path)
    vllm_times: dict = {}
    for name in ("a", "b", "c"):
        f = os.path.join(logs, f"server-{name}.log")
        if os.path.exists(f):
            text = open(f, errors="replace").read()
            vllm_times[name] = ([float(x) for x in re.findall(r"It took ([0-9.]+) seconds to fall asleep", text)],
                                [float(x) for x in re.findall(r"It took ([0-9.]+) seconds to wake up", text)])
    lines = ["| step | model | status | first token (s) | models after (state, NVML GiB) | GPU used (GiB) |",
             "|---|---|---|---|---|---|"]
    for s in d["steps"]:
        after = ", ".join(f"{k}: {v['state']} {v['nvml_gib']}" for k, v in s["states_after"].items())
        lines.append(f"| {s['step']} | {s['model']} | {s['status']} | {s['ttft_s']} | {after} | "
                     f"{s['nvml_after'].get('used_gib')} |")
    lines.append("")
    for name, (sleeps, wakes) in vllm_times.items():
        lines.append(f"- `{name}`: vLLM's own times to fall asleep {sleeps} s, to wake up {wakes} s")
    lines.append(f"- answered {d.get('answered')} of {len(d['steps'])}; lines of the servers' logs saying out of "
                 f"memory: {len(d.get('out_of_memory_lines') or [])}; processes left after the gateway stopped: "
                 f"{d.get('left_over') or 'none'}")
    return "\n".join(lines) + "\n"


def main() -> None:
    if sys.argv[1:2] == ["--report"]:
        print(report(sys.argv[2]), end="")
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--cpu", action="store_true", help="rehearse on the CPU build with the tiny model")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a deadline (timeout) still saves and stops the gateway
    os.makedirs(a.out, exist_ok=True)
    home = tempfile.mkdtemp(prefix="gw-switch-")
    os.environ["LAUNCHER_HOME"] = home
    from launcher import health

    entries = models(a.cpu, os.environ.get("MODELS_DIR", "/root/models"))
    path = os.path.join(home, "models.json")
    with open(path, "w") as fh:
        json.dump({"models": entries}, fh)
    port = health.find_free_port()
    url = f"http://127.0.0.1:{port}"
    budget = "2.6GiB" if a.cpu else None  # the CPU build: room for two tiny models (1 GiB of KV each), not three
    code = ("import sys; from launcher.gateway.run import GatewaySettings, run_gateway; "
            f"run_gateway(GatewaySettings(models_file={path!r}, port={port}, memory_budget={budget!r}))")
    log = open(os.path.join(a.out, "gateway.log"), "w")
    gw = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ), stdout=log,
                          stderr=subprocess.STDOUT)
    result: dict = {"date": time.strftime("%Y-%m-%d"), "models": entries, "steps": [], "nvml_start": nvml()}

    def step(label: str, model: str, words: int = 32, max_tokens: int = 16) -> dict:
        r = request(url, model, words, max_tokens)
        r |= {"step": label, "states_after": states(url), "nvml_after": nvml()}
        result["steps"].append(r)
        print(json.dumps({k: r[k] for k in ("step", "model", "status", "ttft_s", "total_s", "states_after")}),
              flush=True)
        save()
        return r

    def save() -> None:
        with open(os.path.join(a.out, "switch.json"), "w") as fh:
            json.dump(result, fh, indent=1)

    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        step("A cold start (compile cache empty)", "a")
        step("B cold start (compile cache warm)", "b")
        step("C: no room, A (least recently used) let go", "c")
        step("A again: B let go, A woken", "a")
        step("B again: C let go, B woken", "b")
        step("C again: A let go, C woken", "c")
        long_words = 100 if a.cpu else 24000  # the CPU rehearsal's model takes 1024 tokens
        for m in ("a", "b", "c"):
            step(f"{m.upper()}: one long prompt ({long_words} words)", m, words=long_words, max_tokens=32)
        for r in range(a.rounds):
            for m in ("a", "b", "c"):
                step(f"round {r + 1}: {m.upper()}", m)
        result["metrics"] = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
        result["status"] = json.loads(urllib.request.urlopen(url + "/gateway/status", timeout=30).read())
    finally:
        save()
        gw.send_signal(signal.SIGTERM)
        try:
            gw.wait(300)
        except subprocess.TimeoutExpired:
            gw.kill()
        result["nvml_after_stop"] = nvml()
        result["left_over"] = subprocess.run(["pgrep", "-af", "vllm.entrypoints|VLLM::"], capture_output=True,
                                             text=True).stdout.strip()
        for name in ("a", "b", "c"):
            src = os.path.join(home, "runs", name, "server.log")
            if os.path.exists(src):
                shutil.copy(src, os.path.join(a.out, f"server-{name}.log"))
        for f in ("access.log",):
            src = os.path.join(home, "gateway", f)
            if os.path.exists(src):
                shutil.copy(src, os.path.join(a.out, f))
        oom = []
        for name in ("a", "b", "c"):
            p = os.path.join(a.out, f"server-{name}.log")
            if os.path.exists(p):
                oom += [f"{name}: {ln.strip()[:200]}" for ln in open(p, errors="replace")
                        if "out of memory" in ln.lower() or "CUDA error" in ln]
        result["out_of_memory_lines"] = oom
        result["answered"] = sum(s["status"] == 200 for s in result["steps"])
        save()
        print(json.dumps({"answered": result["answered"], "of": len(result["steps"]), "oom": len(oom),
                          "left_over": result["left_over"]}), flush=True)


if __name__ == "__main__":
    main()
