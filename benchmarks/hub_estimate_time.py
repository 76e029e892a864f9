"""How long `launcher estimate --model ORG/NAME` takes: cold (empty Hugging Face cache), cached, offline.

usage: .venv/bin/python benchmarks/hub_estimate_time.py [--runs 7] [--markdown FILE]

The Hub here is tests/fake_hub.py on 127.0.0.1 serving examples/tiny-llama (this machine has no
internet): the numbers are the client's own cost (process start, huggingface_hub, two small
requests), not a real Hub's latency, which adds its round trips (HEAD + GET of config.json, a HEAD
for the safetensors index) on a cold cache.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from fake_hub import FakeHub  # noqa: E402

CMD = [sys.executable, "-m", "launcher", "estimate", "--model", "acme/tiny", "--device", "cpu", "--max-model-len", "1024", "--json"]


def timed(env):
    t0 = time.perf_counter()
    r = subprocess.run(CMD, cwd=ROOT, env=env, capture_output=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(r.stderr.decode()[-500:])
    return dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--markdown")
    a = ap.parse_args()
    rows = {"cold (empty HF_HOME)": [], "cached metadata": [], "cached, HF_HUB_OFFLINE=1": []}
    with FakeHub({"acme/tiny": os.path.join(ROOT, "examples", "tiny-llama")}) as hub:
        base = dict(os.environ, HF_ENDPOINT=hub.url, LAUNCHER_HOME=tempfile.mkdtemp())
        base.pop("HF_HUB_OFFLINE", None)
        for _ in range(a.runs):
            home = tempfile.mkdtemp()
            env = dict(base, HF_HOME=home)
            rows["cold (empty HF_HOME)"].append(timed(env))
            rows["cached metadata"].append(timed(env))
            rows["cached, HF_HUB_OFFLINE=1"].append(timed(dict(env, HF_HUB_OFFLINE="1")))
            shutil.rmtree(home, ignore_errors=True)
    lines = ["| `launcher estimate --model acme/tiny` | median s | min s | max s |", "|---|---|---|---|"]
    for k, ts in rows.items():
        lines.append(f"| {k} | {statistics.median(ts):.3f} | {min(ts):.3f} | {max(ts):.3f} |")
    text = "\n".join(lines) + f"\n\n{a.runs} runs each, on {os.cpu_count()} cores; Hub: tests/fake_hub.py on 127.0.0.1.\n"
    print(text)
    if a.markdown:
        open(a.markdown, "w").write(text)


if __name__ == "__main__":
    main()
