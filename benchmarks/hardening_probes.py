"""The hardening probes, rerun as a user runs them, with their times (docs/testing.md).

usage: .venv/bin/python benchmarks/hardening_probes.py [--markdown docs/testing-probes-table.md]

1. two `launch --detach --name same` at the same moment: the refused one's wall time, then `stop` of the other
   while vLLM is still starting (wall time), and the processes of the run left afterwards;
2. a corrupt state.json under a killed supervisor: `stop` (wall time) and what is left;
3. a bare install (declared dependencies only): a launch refused (wall time), a Hub model planned;
4. `launcher --help` and `--version` (median of 5).
Every time includes the interpreter's start, as a user's shell sees it.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "tiny-llama"
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def cli(*args, env=None, python=sys.executable):
    t0 = time.monotonic()
    r = subprocess.run([python, "-m", "launcher", *args], capture_output=True, text=True, env=env, cwd=str(ROOT))
    return r, time.monotonic() - t0


def tagged(run_id: str) -> list[int]:
    import psutil

    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("LAUNCHER_RUN_ID") == run_id and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except psutil.Error:
            pass
    return out


def wait_state(home: Path, name: str, key: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            st = json.loads((home / "runs" / name / "state.json").read_text())
            if st.get(key):
                return st
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{name}: no {key} in state.json")


def probe_same_name(env: dict, home: Path) -> list[tuple[str, str]]:
    args = ["launch", "--model-path", str(TINY), "--detach", "--name", "same", "--max-model-len", "512"]
    procs, t0 = [], time.monotonic()
    for port in ("18520", "18521"):
        procs.append(subprocess.Popen([sys.executable, "-m", "launcher", *args, "--port", port], cwd=str(ROOT), env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    while all(p.poll() is None for p in procs):
        time.sleep(0.01)
    refused_s = time.monotonic() - t0
    refused = next(p for p in procs if p.poll() is not None)
    err = refused.stderr.read().strip()
    st = wait_state(home, "same", "server")
    r, stop_s = cli("stop", "same", env=env)
    for p in procs:
        p.wait(timeout=60)
    time.sleep(0.5)
    return [("second `launch --detach --name same` at the same moment", f"refused in {refused_s:.2f} s, exit "
             f"{refused.returncode}: `{err[:90]}...`"),
            ("`stop same` while vLLM is STARTING", f"{stop_s:.2f} s, {r.stdout.strip()}; processes of the run left: "
             f"{len(tagged(st['run_id']))}")]


def probe_damaged(env: dict, home: Path) -> list[tuple[str, str]]:
    r, _ = cli("launch", "--model-path", str(TINY), "--detach", "--name", "dmg", "--max-model-len", "512", env=env)
    st = json.loads((home / "runs" / "dmg" / "state.json").read_text())
    os.kill(st["supervisor"]["pid"], signal.SIGKILL)
    time.sleep(0.5)
    (home / "runs" / "dmg" / "state.json").write_text("{")
    s, _ = cli("status", "dmg", "--json", env=env)
    r, stop_s = cli("stop", "dmg", env=env)
    time.sleep(0.5)
    return [("READY launch, supervisor killed, state.json `{`: `status`", f"{json.loads(s.stdout)['state']} (pid "
             f"{json.loads(s.stdout)['pid']} from launch.json)"),
            ("... then `stop dmg`", f"{stop_s:.2f} s, {r.stdout.strip()}; processes of the run left: {len(tagged(st['run_id']))}")]


def probe_bare(env: dict, home: Path) -> list[tuple[str, str]]:
    from fake_hub import FakeHub
    from test_bare_install import make_bare_env

    with tempfile.TemporaryDirectory() as d:
        py = make_bare_env(Path(d) / "venv")
        r, t = cli("launch", "--model-path", str(TINY), "--name", "bare", "--detach", env=env, python=py)
        with FakeHub({"acme/tiny": TINY}) as hub:
            e = dict(env, HF_ENDPOINT=hub.url, HF_HOME=str(Path(d) / "hf"))
            r2, t2 = cli("estimate", "--model", "acme/tiny", "--gpu", "L4", env=e, python=py)
    return [("bare install (no vLLM): `launch`", f"refused in {t:.2f} s, exit {r.returncode}: `{r.stderr.strip()[:100]}...`"),
            ("bare install: `estimate --model ORG/NAME` (local Hub stand-in)", f"exit {r2.returncode} in {t2:.2f} s")]


def probe_fast(env: dict) -> list[tuple[str, str]]:
    out = []
    for args in (["--help"], ["--version"]):
        times = [cli(*args, env=env)[1] for _ in range(5)]
        out.append((f"`launcher {' '.join(args)}`", f"median {statistics.median(times):.2f} s of 5"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--markdown")
    a = ap.parse_args()
    home = Path(tempfile.mkdtemp())
    env = dict(os.environ, LAUNCHER_HOME=str(home), VLLM_CPU_KVCACHE_SPACE="1")
    rows = probe_same_name(env, home) + probe_damaged(env, home) + probe_bare(env, home) + probe_fast(env)
    table = "| probe | result |\n|---|---|\n" + "\n".join(f"| {p} | {r} |" for p, r in rows) + "\n"
    print(table)
    if a.markdown:
        Path(a.markdown).write_text(f"Measured {time.strftime('%Y-%m-%d')} by `benchmarks/hardening_probes.py` on the 2-core "
                                    f"reference machine (vllm-cpu 0.32.0, no GPU).\n\n" + table)


if __name__ == "__main__":
    main()
