"""A node-loss drill on a real local Ray cluster (a head and a worker node process on this host):

  cluster up -> a launch placed across both nodes -> READY -> SIGKILL the worker node ->
  server stopped, back-off waiting for the cluster -> `cluster up` repairs the node -> READY again ->
  stop (Ray leftovers checked) -> cluster down (no Ray process left).

The server is tests/fake_server.py in its `ray` mode (a Ray driver with a placement group and one
actor per bundle, dying when a worker does, as vLLM's Ray executor does): the CPU build of vLLM has
no Ray executor. Times are wall-clock on this machine; median of --rounds, for Ray's default node
health checks and for fast ones (RAY_health_check_period_ms=500, failure threshold 3).

usage: .venv/bin/python benchmarks/cluster_drill.py [--rounds 3] [--markdown docs/cluster-drill-table.md]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
FAKE = os.path.join(ROOT, "tests", "fake_server.py")
FAST = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "3",
        "RAY_health_check_initial_delay_ms": "0", "RAY_health_check_timeout_ms": "500"}


def cli(args, env):
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "launcher", *args], env=env, capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    if r.returncode != 0:
        raise SystemExit(f"launcher {' '.join(args)} failed: {r.stderr}")
    return time.monotonic() - t0, r.stdout


def until(pred, timeout, what):
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - t0


def one_round(fast: bool) -> dict:
    home = tempfile.mkdtemp(prefix="drill-")
    os.environ["LAUNCHER_HOME"] = home
    from launcher.cluster import control
    from launcher.cluster.watch import ClusterWatch
    from launcher.runs import read_state, run_dir
    from launcher import health
    from launcher.supervisor.machine import State
    from launcher.supervisor.policy import RestartPolicy
    from launcher.supervisor.run import GpuReleaseCheck, ServerRun

    class NoGpus:
        def list(self):
            return []

    env = {**os.environ, **(FAST if fast else {})}
    port, dash = health.find_free_port(), health.find_free_port()
    up_args = ["cluster", "up", "--local-nodes", "2", "--cpus-per-node", "1", "--port", str(port),
               "--dashboard-port", str(dash), "--json"]
    t_up, out = cli(up_args, env)
    info = json.loads(out)
    d = run_dir("drill")
    d.mkdir(parents=True, exist_ok=True)
    sport = health.find_free_port()
    argv = [sys.executable, FAKE, "--port", str(sport), "--mode", "ray", "--bundles", "2", "--device", "CPU"]
    watch = ClusterWatch(info["address"], info["dashboard"], bundles=2, device="CPU", interval_s=0.5)
    pol = RestartPolicy(startup_timeout_s=180, probe_interval_s=0.2, probe_timeout_s=1, backoff_initial_s=0.2,
                        backoff_max_s=1, stable_s=60, stop_grace_s=5)
    sr = ServerRun("drill", argv, {**os.environ, "RAY_ADDRESS": info["address"]}, "127.0.0.1", sport, d, pol,
                   gpu_check=GpuReleaseCheck(NoGpus()), cluster=watch)
    th = threading.Thread(target=sr.run, kwargs={"install_signals": False, "tick_s": 0.05}, daemon=True)
    t0 = time.monotonic()
    th.start()
    t_ready = until(lambda: sr.sup.state == State.READY, 180, "READY")
    control.kill_node("local", "worker1")
    t_detect = until(lambda: sr.sup.state == State.BACKOFF, 120, "BACKOFF after the node loss")
    t_wait = until(lambda: "waiting for the Ray cluster" in sr.sup.reason, 120, "waiting for the cluster")
    reason = [ln for ln in (d / "supervisor.log").read_text().splitlines() if "-> BACKOFF" in ln][0].split("BACKOFF ", 1)[1]
    t1 = time.monotonic()
    t_repair, _ = cli(up_args, env)
    until(lambda: sr.sup.state == State.READY and sr.sup.restarts >= 1, 180, "READY again")
    t_recover = time.monotonic() - t1
    t1 = time.monotonic()
    sr.request_stop()
    th.join(120)
    t_stop = time.monotonic() - t1
    left = read_state("drill")["ray_leftovers"]
    t_down, _ = cli(["cluster", "down", "--name", "local"], env)
    return {"fast_health_checks": fast, "cluster_up_s": t_up, "first_ready_s": t_ready,
            "kill_to_server_stopped_s": t_detect, "kill_to_waiting_for_cluster_s": t_detect + t_wait,
            "repair_up_s": t_repair, "node_back_to_ready_s": t_recover, "stop_s": t_stop, "cluster_down_s": t_down,
            "leftovers": sum(len(left[k]) for k in ("actors", "placement_groups", "workers")), "reason": reason,
            "restarts": sr.sup.restarts, "supervisor_log": (d / "supervisor.log").read_text().splitlines(),
            "total_s": time.monotonic() - t0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--markdown")
    ap.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "cluster-drill.json"))
    a = ap.parse_args()
    rows = []
    for fast in (False, True):
        for i in range(a.rounds):
            r = one_round(fast)
            print(json.dumps(r), flush=True)
            rows.append(r)
    with open(a.json, "w") as fh:
        json.dump(rows, fh, indent=1)
    keys = ["cluster_up_s", "first_ready_s", "kill_to_server_stopped_s", "kill_to_waiting_for_cluster_s",
            "repair_up_s", "node_back_to_ready_s", "stop_s", "cluster_down_s", "leftovers"]
    lines = ["| step | Ray default health checks | fast health checks (500 ms x 3) |", "|---|---|---|"]
    for k in keys:
        cells = []
        for fast in (False, True):
            vals = [r[k] for r in rows if r["fast_health_checks"] == fast]
            cells.append(f"{statistics.median(vals):.1f} ({min(vals):.1f}-{max(vals):.1f})" if k != "leftovers"
                         else str(sum(vals)))
        label = (k[:-2] + " (s)" if k.endswith("_s") else k).replace("_", " ")
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    table = "\n".join(lines) + "\n"
    print(table)
    print("reasons:", sorted({r["reason"] for r in rows}))
    if a.markdown:
        with open(a.markdown, "w") as fh:
            fh.write(f"Median (min-max) of {a.rounds} rounds each; `benchmarks/cluster_drill.py`.\n\n" + table)


if __name__ == "__main__":
    main()
