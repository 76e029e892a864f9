"""Wall time of `launcher --help`, `launcher estimate ... --json` and a refused launch, median of N runs,
next to `python -c "import vllm"` where vLLM is installed.

usage: .venv/bin/python benchmarks/cli_speed.py [--runs 7] [--markdown FILE] [--launcher "python3 -m launcher"]

Bytecode is written and used as after `pip install` (PYTHONDONTWRITEBYTECODE is dropped for the runs; the warm-up
writes it). Rows marked "fresh home" run every time with a new, empty $LAUNCHER_HOME (as on a fresh CI runner),
so nothing cached by an earlier run helps them.
"""
import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SCRIPT = os.path.join(os.path.dirname(sys.executable), "launcher")
LAUNCHER = [_SCRIPT] if os.path.exists(_SCRIPT) else [sys.executable, "-m", "launcher"]


def cases(launcher):
    L = launcher
    return [
    ("launcher --help", L + ["--help"], 0, 0.3, False),
    ("launcher estimate (catalog, --gpu H100-80GB) --json",
     L + ["estimate", "--model-name", "deepseek-r1-distill-qwen", "--size-in-billions", "32", "--gpu", "H100-80GB",
          "--max_model_len", "auto", "--json"], 0, 0.5, False),
    ("launcher estimate --model-path examples/tiny-llama --gpu-memory 24GiB --json",
     L + ["estimate", "--model-path", "examples/tiny-llama", "--gpu-memory", "24GiB", "--json"], 0, 0.5, False),
    ("launcher launch refused by pre-flight (exit 3)",
     L + ["launch", "--model-name", "deepseek-r1-distill-qwen", "--size-in-billions", "32", "--gpu", "H100-80GB",
          "--max_model_len", "131072"], 3, 1.0, False),
    ("launcher smoke with a bad engine argument (exit 2)",
     L + ["smoke", "--model-path", "examples/tiny-llama", "--max-model-lenn", "1024"], 2, 1.0, False),
    ("launcher smoke with a bad engine argument, fresh home (exit 2)",
     L + ["smoke", "--model-path", "examples/tiny-llama", "--max-model-lenn", "1024"], 2, 0.5, True),
    ("launcher estimate --gpu all (Llama-3.1-70B, 44 cells) --json",
     L + ["estimate", "--model-name", "llama-3.1-instruct", "--size-in-billions", "70", "--gpu", "all",
          "--max_model_len", "32768", "--json"], 0, 1.0, False),
    *[(f"launcher estimate --vllm-version {v} with a bad engine argument, fresh home (exit 2)",
       L + ["estimate", "--model-path", "examples/tiny-llama", "--gpu", "H100", "--vllm-version", v,
            "--max-model-lenn", "1024"], 2, 0.5, True) for v in _releases()],
    ('python -c "import vllm"', [sys.executable, "-c", "import vllm"], 0, None, False),
    ]


def _releases() -> list[str]:
    import json

    data = json.load(open(os.path.join(ROOT, "launcher", "estimator", "vllm_releases.json")))
    return sorted(data["releases"], key=lambda v: tuple(map(int, v.split("."))))


def timed(cmd, want_rc, fresh=False):
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    home = tempfile.mkdtemp(prefix="launcher-home-") if fresh else None
    if home:
        env["LAUNCHER_HOME"] = home
        env.pop("LAUNCHER_CACHE", None)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, env=env)
    dt = time.perf_counter() - t0
    if home:
        shutil.rmtree(home, ignore_errors=True)
    if r.returncode != want_rc:
        raise SystemExit(f"{cmd}: exit {r.returncode}, expected {want_rc}: {r.stderr.decode()[-500:]}")
    return dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--markdown")
    ap.add_argument("--launcher", help="how to run the launcher (default: the console script beside this Python)")
    a = ap.parse_args()
    launcher = shlex.split(a.launcher) if a.launcher else LAUNCHER
    lines = ["| command | median s | min s | max s | target |", "|---|---|---|---|---|"]
    ok = True
    for label, cmd, rc, target, fresh in cases(launcher):
        try:
            timed(cmd, rc, fresh)  # warm-up (page cache; the arg-spec cache only for rows without a fresh home)
        except SystemExit as e:
            if "import vllm" in label:
                lines.append(f"| {label} | (vLLM not installed) | | | |")
                continue
            raise e
        ts = [timed(cmd, rc, fresh) for _ in range(a.runs)]
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
