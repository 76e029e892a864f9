"""Time from command to ready: `launcher launch --detach` vs bare `python -m vllm.entrypoints.openai.api_server`
on the same tiny model (CPU build here). Runs alternate; median of N each.

usage: .venv/bin/python benchmarks/launch_overhead.py [--runs 3] [--markdown FILE]
Bare vLLM counts as ready when GET /health answers 200 (polled every 0.1 s); the launcher counts
when its CLI returns (it waits for READY itself). Both are then stopped and the next run starts
with no process left over.
"""
import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "examples", "tiny-llama")
BIN = os.path.dirname(sys.executable)
ENV = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1")


def healthy(port):
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).status == 200
    except Exception:  # noqa: BLE001
        return False


def bare(port):
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", MODEL, "--host", "127.0.0.1",
                          "--port", str(port), "--max-model-len", "1024"], env=ENV, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    while not healthy(port):
        if p.poll() is not None:
            raise SystemExit("bare vLLM exited")
        time.sleep(0.1)
    dt = time.perf_counter() - t0
    os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    return dt


def launcher(port, home):
    env = dict(ENV, LAUNCHER_HOME=home)
    t0 = time.perf_counter()
    r = subprocess.run([os.path.join(BIN, "launcher"), "launch", "--model-path", MODEL, "--detach", "--name", "bench",
                        "--port", str(port), "--max-model-len", "1024"], env=env, capture_output=True, cwd=ROOT)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(r.stderr.decode()[-2000:])
    subprocess.run([os.path.join(BIN, "launcher"), "stop", "bench"], env=env, capture_output=True, check=True)
    return dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--markdown")
    a = ap.parse_args()
    home = tempfile.mkdtemp(prefix="launcher-bench-")
    b, l = [], []
    for i in range(a.runs):
        b.append(bare(18700 + i))
        l.append(launcher(18800 + i, home))
        print(f"run {i + 1}: bare {b[-1]:.1f} s, launcher {l[-1]:.1f} s", flush=True)
    shutil.rmtree(home, ignore_errors=True)
    mb, ml = statistics.median(b), statistics.median(l)
    text = ("| | median s | runs s |\n|---|---|---|\n"
            f"| bare `python -m vllm.entrypoints.openai.api_server` to /health 200 | {mb:.1f} | {', '.join(f'{x:.1f}' for x in b)} |\n"
            f"| `launcher launch --detach` to READY (CLI returns) | {ml:.1f} | {', '.join(f'{x:.1f}' for x in l)} |\n"
            f"\nOverhead: {ml - mb:+.1f} s ({(ml - mb) / mb * 100:+.1f}%), target within 5%.\n")
    print(text)
    if a.markdown:
        open(a.markdown, "w").write(text)
    return 0 if abs(ml - mb) / mb <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
