"""How long `launcher plan` takes for N models on G described GPUs (no GPU, nothing loaded): the library call, and the
command as a user runs it (a fresh Python process). Prints a Markdown table (docs/placement.md).

usage: .venv/bin/python benchmarks/plan_time.py [--markdown FILE]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
KINDS = [("llama-3.1-instruct", 8), ("qwen2.5-instruct", 7), ("qwen2.5-instruct", 14), ("qwen2.5-instruct", 3),
         ("qwen2.5-instruct", 32), ("llama-3.1-instruct", 70)]


def models_file(n: int, folder: str) -> str:
    lines = ["models:"]
    for i in range(n):
        name, size = KINDS[i % len(KINDS)]
        tp = 2 if size == 70 else 1
        lines.append(f"  - {{name: m{i}, model_name: {name}, size_in_billions: {size}, "
                     f"engine_args: {{max-model-len: {8192 * (1 + i % 3)}, tensor-parallel-size: {tp}}}}}")
    path = os.path.join(folder, f"models-{n}.yaml")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--markdown")
    a = ap.parse_args()
    from launcher.fleet.plan import plan_fleet

    rows = []
    with tempfile.TemporaryDirectory() as d:
        for n, g in ((4, 2), (20, 8), (40, 16)):
            f = models_file(n, d)
            plan_fleet(f, "H100-80GB", g)  # warm: imports and the catalog read once
            lib = min(_timed(lambda: plan_fleet(f, "H100-80GB", g)) for _ in range(3))
            cmd = [sys.executable, "-m", "launcher", "plan", "--models", f, "--gpu", "H100-80GB", "--num-gpus", str(g),
                   "--json"]
            runs = []
            for _ in range(3):
                t0 = time.perf_counter()
                out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                runs.append(time.perf_counter() - t0)
            placed = sum(1 for m in json.loads(out.stdout)["models"] if m["gpus"])
            rows.append(f"| {n} | {g} | {placed} | {lib:.3f} | {min(runs):.2f} |")
    text = ("| models | GPUs (H100-80GB, described) | placed | library call, s | `launcher plan --json`, s |\n"
            "|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    print(text)
    if a.markdown:
        with open(a.markdown, "w") as fh:
            fh.write(text)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
