"""What the gateway (`launcher serve`) adds over talking to the model's server directly, in one run.

A gateway with one model (the bundled tiny model, or --model-path), started by the gateway's first request; then, in
alternating rounds on the same server, the same `launcher bench` workload sent straight to the model's own server and
through the gateway, and a run of one-token requests one at a time (where the gateway's share of each request is not
hidden behind the model's own time).

usage: .venv/bin/python benchmarks/gateway_overhead.py [--rounds 3] [--concurrency 8] [--model-path DIR] [--markdown docs/gateway-overhead-table.md]
       on a GPU host (8B model, dummy weights): python3 benchmarks/gateway_overhead.py --model-path DIR \
           --engine-args '{"max-model-len": 8192, "load-format": "dummy"}' --env '{}' --label "..." --markdown FILE
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from launcher.bench import pct  # noqa: E402

from gateway_levers import cpu_s  # noqa: E402  (a process's CPU time, as the levers count it)


def start_gateway(home: str, model_path: str, port: int, engine_args: dict, env_vars: dict) -> subprocess.Popen:
    """The gateway through its library entry (run_gateway), as `launcher serve` runs it, in a process of its own."""
    models = {"models": [{"name": "m", "model_path": model_path, "env": env_vars, "engine_args": engine_args}]}
    path = os.path.join(home, "models.json")
    with open(path, "w") as fh:
        json.dump(models, fh)
    env = dict(os.environ, LAUNCHER_HOME=home)
    code = ("from launcher.gateway.run import GatewaySettings, run_gateway; "
            f"run_gateway(GatewaySettings(models_file={path!r}, port={port}))")
    p = subprocess.Popen([sys.executable, "-c", code],
                         env=env, cwd=ROOT, stdout=open(os.path.join(home, "gateway.log"), "w"), stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return p
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the gateway did not come up")


def one_token_latencies(url: str, key: str, n: int, timeout_s: float = 60) -> list[float]:
    body = json.dumps({"model": "m", "prompt": "Hello", "max_tokens": 1, "temperature": 0}).encode()
    out = []
    for _ in range(n):
        req = urllib.request.Request(url + "/v1/completions", body, {"Content-Type": "application/json",
                                                                     "Authorization": f"Bearer {key}"})
        t = time.perf_counter()
        urllib.request.urlopen(req, timeout=timeout_s).read()
        out.append(time.perf_counter() - t)
    return out




def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model-path", default=os.path.join(ROOT, "examples", "tiny-llama"))
    ap.add_argument("--one-token", type=int, default=200, help="one-token requests per path and round")
    ap.add_argument("--engine-args", default='{"max-model-len": 1024}', help="the model's engine_args (JSON)")
    ap.add_argument("--env", default='{"VLLM_CPU_KVCACHE_SPACE": "1"}', help="the model's env (JSON)")
    ap.add_argument("--concurrency", type=int, default=8, help="the bench's requests at once (its requests: 8 times as many)")
    ap.add_argument("--label", default="", help="what ran (GPU, model), for the table's first line")
    ap.add_argument("--markdown")
    a = ap.parse_args()
    from launcher.bench import Workload, run_bench
    from launcher import health

    home = tempfile.mkdtemp(prefix="gw-bench-")
    os.environ["LAUNCHER_HOME"] = home
    from launcher.gateway.model import backend_key

    port = health.find_free_port()
    gw = start_gateway(home, a.model_path, port, json.loads(a.engine_args), json.loads(a.env))
    gw_url = f"http://127.0.0.1:{port}"
    try:
        t = time.perf_counter()
        one_token_latencies(gw_url, "", 1, timeout_s=900)  # the first request starts the model
        cold_s = time.perf_counter() - t
        st = json.loads(urllib.request.urlopen(gw_url + "/gateway/status").read())["models"][0]
        direct_url, key = f"http://127.0.0.1:{st['port']}", backend_key("m")
        vocab = json.load(open(os.path.join(a.model_path, "config.json")))["vocab_size"]
        w = Workload(num_requests=8 * a.concurrency, concurrency=a.concurrency, prompt_len=(128, 128), output_len=(64, 64), warmup=4)
        rows = {"direct": [], "gateway": []}
        single = {"direct": [], "gateway": []}
        cores: list[float] = []
        for r in range(a.rounds):
            order = ["direct", "gateway"] if r % 2 == 0 else ["gateway", "direct"]
            for path in order:
                url, k = (direct_url, key) if path == "direct" else (gw_url, None)
                c0, t0 = cpu_s(gw.pid), time.perf_counter()
                rep = run_bench(url, "m", w, vocab_size=vocab, api_key=k)
                if path == "gateway":  # the share of a core the gateway's process took while it relayed the bench
                    cores.append((cpu_s(gw.pid) - c0) / (time.perf_counter() - t0))
                assert rep.failed == 0, rep.errors
                rows[path].append(rep)
                single[path] += one_token_latencies(url, k or "", a.one_token)
                print(path, r, f"p50 {rep.latency_s['p50'] * 1000:.1f} ms p99 {rep.latency_s['p99'] * 1000:.1f} ms "
                      f"{rep.output_throughput:.1f} tok/s", flush=True)
    finally:
        gw.send_signal(signal.SIGINT)
        gw.wait(120)

    def med(path, f):
        return statistics.median(f(x) for x in rows[path])

    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on "
        + (a.label or f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores), vLLM CPU build, the "
           "bundled tiny model") + f"; `benchmarks/gateway_overhead.py --rounds {a.rounds}`. First request through "
        f"the gateway (model started on demand): {cold_s:.1f} s.",
        "",
        "| | direct to the model's server | through the gateway | added / kept |",
        "|---|---|---|---|",
    ]
    for label, f, unit in (("bench latency p50", lambda x: x.latency_s["p50"], "ms"),
                           ("bench latency p99", lambda x: x.latency_s["p99"], "ms"),
                           ("bench TTFT p50", lambda x: x.ttft_s["p50"], "ms")):
        d, g = med("direct", f) * 1000, med("gateway", f) * 1000
        lines.append(f"| {label} ({w.num_requests} requests, {w.concurrency} at once, 128 in / 64 out; median of {a.rounds} rounds) | "
                     f"{d:.1f} {unit} | {g:.1f} {unit} | {g - d:+.2f} {unit} |")
    d, g = med("direct", lambda x: x.output_throughput), med("gateway", lambda x: x.output_throughput)
    lines.append(f"| bench output throughput | {d:.1f} tok/s | {g:.1f} tok/s | {g / d * 100:.1f}% kept |")
    kept = sorted(g.output_throughput / d.output_throughput * 100 for g, d in zip(rows["gateway"], rows["direct"]))
    lines.append(f"| bench output throughput, each round's gateway over its direct | - | - | "
                 + ", ".join(f"{k:.1f}%" for k in kept) + " |")
    lines.append(f"| the gateway's CPU while it relayed the bench (share of one core, median) | - | "
                 f"{statistics.median(cores) * 100:.0f}% | - |")
    for p in (50, 99):
        d, g = pct(single["direct"], p) * 1000, pct(single["gateway"], p) * 1000
        lines.append(f"| one-token request p{p} ({len(single['direct'])} one after another) | {d:.2f} ms | "
                     f"{g:.2f} ms | {g - d:+.2f} ms |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.markdown:
        with open(a.markdown, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
