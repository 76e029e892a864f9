"""Wall time of `launcher --help`, `launcher estimate ... --json` and a refused launch, median of N runs,
next to `python -c "import vllm"` where vLLM is installed.

usage: .venv/bin/python benchmarks/cli_speed.py [--runs 7] [--markdown FILE]
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = [os.path.join(os.path.dirname(sys.executable), "launcher")]
CASES = [
    ("launcher --help", LAUNCHER + ["--help"], 0, 0.3),
    ("launcher estimate (catalog, --gpu H100-80GB) --json",
     LAUNCHER + ["estimate", "--model-name", "deepseek-r1-distill-qwen", "--size-in-billions", "32", "--gpu", "H100-80GB",
                 "--max_model_len", "auto", "--json"], 0, 0.5),
    ("launcher estimate --model-path examples/tiny-llama --gpu-memory 24GiB --json",
     LAUNCHER + ["estimate", "--model-path", "examples/tiny-llama", "--gpu-memory", "24GiB", "--json"], 0, 0.5),
    ("launcher launch refused by pre-flight (exit 3)",
     LAUNCHER + ["launch", "--model-name", "deepseek-r1-distill-qwen", "--size-in-billions", "32", "--gpu", "H100-80GB",
                 "--max_model_len", "131072"], 3, 1.0),
    ("launcher smoke with a bad engine argument (exit 2)",
     LAUNCHER + ["smoke", "--model-path", "examples/tiny-llama", "--max-model-lenn", "1024"], 2, 1.0),
    ('python -c "import vllm"', [sys.executable, "-c", "import vllm"], 0, None),
]


def timed(cmd, want_rc):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True)
    dt = time.perf_counter() - t0
    if r.returncode != want_rc:
        raise SystemExit(f"{cmd}: exit {r.returncode}, expected {want_rc}: {r.stderr.decode()[-500:]}")
    return dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--markdown")
    a = ap.parse_args()
    lines = ["| command | median s | min s | max s | target |", "|---|---|---|---|---|"]
    ok = True
    for label, cmd, rc, target in CASES:
        try:
            timed(cmd, rc)  # warm-up (page cache, arg-spec cache)
        except SystemExit as e:
            if "import vllm" in label:
                lines.append(f"| {label} | (vLLM not installed) | | | |")
                continue
            raise e
        ts = [timed(cmd, rc) for _ in range(a.runs)]
        med = statistics.median(ts)
        ok &= target is None or med < target
        lines.append(f"| `{label}` | {med:.3f} | {min(ts):.3f} | {max(ts):.3f} | {'< ' + str(target) if target else '-'} |")
    text = "\n".join(lines) + f"\n\n{a.runs} runs each after one warm-up, on {os.cpu_count()} cores.\n"
    print(text)
    if a.markdown:
        open(a.markdown, "w").write(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
