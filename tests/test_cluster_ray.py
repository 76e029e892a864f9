"""A real local Ray cluster (a head and a second node process on this host), started and stopped by
`launcher cluster`; the fake server plays vLLM's Ray executor on it (the CPU build of vLLM has no Ray
support: "current platform cpu does not support ray")."""
import json
import os
import threading

import psutil
import pytest

from conftest import FAKE, cli, wait_for
from launcher.cluster.placement import try_placement
from launcher.cluster.watch import ClusterWatch
from launcher.runs import read_state, run_dir
from launcher import health
from launcher.supervisor.machine import State
from launcher.supervisor.policy import RestartPolicy
from launcher.supervisor.run import GpuReleaseCheck, ServerRun

ray = pytest.importorskip("ray", reason="the cluster extra (ray) is not installed")
pytestmark = pytest.mark.timeout(300)

# quick node-death detection for the test cluster (Ray's defaults take about 15 s)
FAST_HEALTH = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "3",
               "RAY_health_check_initial_delay_ms": "0", "RAY_health_check_timeout_ms": "500"}


class NoGpus:
    def list(self):
        return []


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    home = tmp_path_factory.mktemp("cluster-home")
    env = {**os.environ, "LAUNCHER_HOME": str(home), **FAST_HEALTH}
    port, dash = health.find_free_port(), health.find_free_port()
    # one declared GPU per node (this machine has none: Ray takes the count as given, the inventory the model)
    r = cli("cluster", "up", "--local-nodes", "2", "--cpus-per-node", "1", "--gpus-per-node", "1", "--gpu", "H100-80GB",
            "--port", str(port), "--dashboard-port", str(dash), "--json", env=env, timeout=240)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    yield {"env": env, "home": home, **info}
    if (home / "clusters" / "local" / "cluster.json").exists():
        cli("cluster", "down", "--name", "local", env=env)


def ray_pids():
    out = []
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.info["name"] in ("raylet", "gcs_server") or "ray::" in (p.info["name"] or "") or "ray start" in cmd:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p.info["pid"])
            except psutil.Error:
                pass
    return out


def test_cluster_status_shows_both_nodes(cluster):
    r = cli("cluster", "status", "--json", env=cluster["env"])
    assert r.returncode == 0, r.stderr
    nodes = json.loads(r.stdout)["nodes"]
    assert [(n["label"], n["head"], n["alive"], n["resources"]["CPU"], n["resources"]["GPU"]) for n in nodes] == \
        [("head", True, True, 1.0, 1.0), ("worker1", False, True, 1.0, 1.0)]
    assert nodes[1]["resources"]["launcher_gpu_1"] == 1.0  # worker1 was given GPU 1 (CUDA_VISIBLE_DEVICES=1)


def test_status_of_an_unreachable_cluster_exits_5(cluster):
    r = cli("cluster", "status", "--ray-address", f"127.0.0.1:{health.find_free_port()}", env=cluster["env"])
    assert r.returncode == 5 and "did not answer" in r.stderr


def test_estimate_across_the_cluster_reads_its_nodes(cluster):
    args = ("estimate", "--model-name", "qwen2.5-instruct", "--size-in-billions", "7", "--ray-address", cluster["address"],
            "--max-model-len", "8192", "--json")
    r = cli(*args, "--pipeline-parallel-size", "2", env=cluster["env"])
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["gpu_source"] == "ray" and d["cluster"]["ranks"] == ["head", "worker1"]
    assert [n["gpu"] for n in d["cluster"]["per_node"]] == ["H100-80GB", "H100-80GB"]  # Ray's counts, the inventory's model
    r = cli(*args, "--pipeline-parallel-size", "4", env=cluster["env"])
    assert r.returncode == 3 and "needs 4 GPUs; the cluster has 2" in json.loads(r.stdout)["error"]


def test_plan_places_a_models_file_on_the_live_clusters_nodes(cluster, tmp_path):
    """`launcher plan --ray-address`: the nodes and GPUs the cluster reports (one H100-80GB each here); two 32B
    models at 16k (about 71 GiB each: one per GPU) go to different nodes, a third waits for one of them."""
    f = tmp_path / "models.yaml"
    f.write_text("models:\n" + "".join(
        f"  - {{name: q{i}, model_name: qwen2.5-instruct, size_in_billions: 32, engine_args: {{max-model-len: 16384}}}}\n"
        for i in range(3)))
    r = cli("plan", "--models", str(f), "--ray-address", cluster["address"], "--json", env=cluster["env"])
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    m = {x["name"]: x for x in d["models"]}
    assert sorted(g["node"] for g in d["gpus"]) == ["head", "worker1"]
    assert m["q0"]["awake"] and m["q1"]["awake"] and {m["q0"]["node"], m["q1"]["node"]} == {"head", "worker1"}
    assert not m["q2"]["awake"] and m["q2"]["gpus"] == [0] and len(m["q2"]["shares_with"]) == 1

def test_launch_preflight_reserves_on_the_cluster_and_plans_per_node(cluster, monkeypatch):
    """launch's pre-flight as on a GPU host (the CPU build is refused before this point)."""
    from dataclasses import replace

    from launcher.engines import vllm as vllm_engine
    from launcher.errors import ClusterError
    from launcher.launching import prepare
    from launcher.spec import LaunchSpec

    monkeypatch.setattr(vllm_engine.Installed, "cpu_build", property(lambda self: False))
    monkeypatch.setenv("LAUNCHER_HOME", str(cluster["home"]))  # where `cluster up` recorded the cluster
    spec = LaunchSpec(name="pp2", model_name="qwen2.5-instruct", size_in_billions="7", ray_address="auto",
                      engine_args={"pipeline-parallel-size": 2, "max-model-len": 8192})
    prep = prepare(spec)
    i = prep.argv.index("--distributed-executor-backend")
    assert prep.argv[i + 1] == "ray" and prep.env["RAY_ADDRESS"] == cluster["address"]
    assert prep.cluster == {"address": cluster["address"], "dashboard": cluster["dashboard"], "bundles": 2, "device": "GPU"}
    assert sorted(prep.plan.cluster.ranks) == ["head", "worker1"] and prep.plan.estimate.fits
    with pytest.raises(ClusterError, match=r"has 2 GPU on its alive nodes \(head: 1, worker1: 1\).*needs 4"):
        prepare(replace(spec, engine_args={"pipeline-parallel-size": 2, "tensor-parallel-size": 2}))


def test_placement_check_reserves_like_vllm_and_gives_back(cluster):
    ok = try_placement(cluster["address"], 2, "CPU", timeout_s=20)
    assert ok["ok"], ok
    assert len({b["node_id"] for b in ok["bundles"]}) == 2  # one CPU per node: PACK must span both
    bad = try_placement(cluster["address"], 3, "CPU", timeout_s=2)
    assert not bad["ok"] and "could not place 3 bundle" in bad["reason"]
    w = ClusterWatch(cluster["address"], cluster["dashboard"], bundles=3, device="CPU")
    why = w.preflight()
    assert "has 2 CPU on its alive nodes (head: 1, worker1: 1)" in why and "needs 3" in why
    pgs = w.api.placement_groups()
    assert pgs and all(p["state"] == "REMOVED" for p in pgs)  # the checks gave their reservations back


def _run_on_cluster(cluster, name):
    port = health.find_free_port()
    d = run_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    argv = [os.sys.executable, FAKE, "--port", str(port), "--mode", "ray", "--bundles", "2", "--device", "CPU"]
    env = {**os.environ, "RAY_ADDRESS": cluster["address"]}
    watch = ClusterWatch(cluster["address"], cluster["dashboard"], bundles=2, device="CPU", interval_s=0.5)
    pol = RestartPolicy(startup_timeout_s=120, probe_interval_s=0.2, probe_timeout_s=1, liveness_failures=3,
                        backoff_initial_s=0.2, backoff_max_s=1, stable_s=60, max_quick_failures=3, stop_grace_s=5)
    sr = ServerRun(name, argv, env, "127.0.0.1", port, d, pol, gpu_check=GpuReleaseCheck(NoGpus()), cluster=watch)
    th = threading.Thread(target=sr.run, kwargs={"install_signals": False, "tick_s": 0.1}, daemon=True)
    th.start()
    return sr, th, watch


def _stop(sr, th):
    sr.request_stop()
    th.join(60)
    assert not th.is_alive()
    st = read_state(sr.name)
    assert st["state"] == "STOPPED"
    left = st["ray_leftovers"]
    assert left["jobs"] and not (left["actors"] or left["placement_groups"] or left["workers"]), left
    assert not [r for r in sr.tree.members()]


def test_launch_on_the_cluster_spans_both_nodes_and_stops_without_leftovers(cluster):
    sr, th, watch = _run_on_cluster(cluster, "ray-ok")
    wait_for(lambda: sr.sup.state == State.READY, 120, what="READY on the cluster")
    st = read_state("ray-ok")
    placed = [n["label"] for n in st["cluster"]["nodes"] if n["placement"]]
    assert placed == ["head", "worker1"]
    # `launcher status` shows the launch's nodes, live from the dashboard
    (run_dir("ray-ok") / "launch.json").write_text(json.dumps({"cluster": {
        "address": cluster["address"], "dashboard": cluster["dashboard"], "bundles": 2, "device": "CPU"}}))
    r = cli("status", "ray-ok", "--json")
    assert r.returncode == 0, r.stderr
    nodes = json.loads(r.stdout)["cluster"]["nodes"]
    assert [(n["label"], n["alive"], n["placement"]) for n in nodes] == [("head", True, True), ("worker1", True, True)]
    _stop(sr, th)


def next_state(p):
    """The next JSON line of launching/on_node.py (Ray's driver may print lines of its own; they are skipped)."""
    for line in p.stdout:
        if line.startswith("{"):
            return json.loads(line)
    return {"state": "ended", "why": f"exit {p.wait()}"}


def test_a_server_runs_supervised_on_a_chosen_node_and_its_loss_is_reported(cluster, tmp_path):
    """launching/on_node.py: a detached actor pinned to worker1 runs the supervisor beside the (fake) server it spawns
    there; the process here reports ready with the node's address, the server answers there, and when worker1 is
    killed it reports the node lost (the building block of `serve --ray-address`)."""
    import subprocess
    import urllib.request

    from launcher.cluster import control

    nodes = json.loads(cli("cluster", "status", "--json", env=cluster["env"]).stdout)["nodes"]
    worker = next(n for n in nodes if n["label"] == "worker1" and n["alive"])
    port = health.find_free_port()
    job = {"argv": [os.sys.executable, FAKE, "--port", str(port)], "env": {}, "host": "127.0.0.1", "port": port,
           "home": str(tmp_path / "node-home"), "policy": {"startup_timeout_s": 60, "backoff_initial_s": 0.2}}
    (tmp_path / "job.json").write_text(json.dumps(job))
    p = subprocess.Popen([os.sys.executable, "-m", "launcher.launching.on_node", "--address", cluster["address"], "--node",
                          worker["node_id"], "--name", "on-worker1", "--job", str(tmp_path / "job.json")],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         env=cluster["env"])
    lines = []
    try:
        while not lines or lines[-1]["state"] not in ("ready", "fatal"):
            lines.append(next_state(p))
        assert lines[-1]["state"] == "ready" and lines[-1]["port"] == port and lines[-1]["node_ip"] == worker["ip"]
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status == 200
        server = next(q for q in psutil.process_iter(["cmdline"]) if FAKE in " ".join(q.info["cmdline"] or [])
                      and str(port) in q.info["cmdline"])
        rec = json.loads((cluster["home"] / "clusters" / "local" / "cluster.json").read_text())
        run_ids = {n["name"]: n["run_id"] for n in rec["nodes"] if n.get("run_id")}

        def node_tag(q):
            try:
                return q.environ().get("LAUNCHER_RUN_ID")
            except psutil.Error:
                return None
        # the server descends from worker1's node processes (its raylet's worker runs the actor), not the head's
        assert run_ids["worker1"] in {node_tag(a) for a in server.parents()}
        os.environ["LAUNCHER_HOME"], old = str(cluster["home"]), os.environ["LAUNCHER_HOME"]
        try:
            control.kill_node("local", "worker1")
        finally:
            os.environ["LAUNCHER_HOME"] = old
        last = next_state(p)
        assert last["state"] == "fatal" and "node lost" in last["why"]
        wait_for(lambda: not server.is_running() or server.status() == psutil.STATUS_ZOMBIE, 10,
                 what="the server gone with its node")  # no orphan left behind by the node's loss
        assert p.wait(30) == 1
    finally:
        if p.poll() is None:
            p.kill()
    r = cli("cluster", "up", "--local-nodes", "2", "--cpus-per-node", "1", "--gpus-per-node", "1", "--gpu", "H100-80GB",
            "--port", cluster["address"].rsplit(":", 1)[1], "--dashboard-port", cluster["dashboard"].rsplit(":", 1)[1],
            env=cluster["env"], timeout=240)
    assert r.returncode == 0, r.stderr  # worker1 back for the tests after this one


def test_node_loss_stops_the_server_waits_for_the_node_and_restarts(cluster):
    from launcher.cluster import control

    sr, th, watch = _run_on_cluster(cluster, "ray-loss")
    wait_for(lambda: sr.sup.state == State.READY, 120, what="READY on the cluster")
    os.environ["LAUNCHER_HOME"], old = str(cluster["home"]), os.environ["LAUNCHER_HOME"]
    try:
        control.kill_node("local", "worker1")
    finally:
        os.environ["LAUNCHER_HOME"] = old
    wait_for(lambda: sr.sup.state == State.BACKOFF and "waiting for the Ray cluster" in sr.sup.reason, 60,
             what="back-off waiting for the lost node")
    assert "has 1 CPU on its alive nodes (head: 1)" in sr.sup.reason
    log = (run_dir("ray-loss") / "supervisor.log").read_text()
    # the loss is seen first by the cluster watch, or by the server itself exiting on its lost actor (a race the
    # machine's load decides); either way the supervisor then waits for the cluster (above), not a crash loop
    assert "Ray node worker1 lost" in log or "a Ray worker died" in log, log
    assert sr.sup.restarts == 0 and not [r for r in sr.tree.members()]  # stopped, nothing half-alive
    # the dead instance's placement is freed (Ray removes a job's placement groups when its driver dies)
    wait_for(lambda: all(p["state"] == "REMOVED" for p in watch.api.placement_groups()), 30, what="placement freed")
    r = cli("cluster", "up", "--local-nodes", "2", "--cpus-per-node", "1", "--port", cluster["address"].rsplit(":", 1)[1],
            "--dashboard-port", cluster["dashboard"].rsplit(":", 1)[1], env=cluster["env"], timeout=240)
    assert r.returncode == 0, r.stderr  # `up` repairs: only the lost node is started again
    wait_for(lambda: sr.sup.state == State.READY and sr.sup.restarts == 1, 120, what="READY again after the node is back")
    _stop(sr, th)


def cluster_pids(home):
    """Every process of the cluster's nodes: each node's processes carry its run id in their environment."""
    rec = json.loads((home / "clusters" / "local" / "cluster.json").read_text())
    tags = {n["run_id"] for n in rec["nodes"]}
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("LAUNCHER_RUN_ID") in tags:
                out.append(p.info["pid"])
        except psutil.Error:
            pass
    return out


def test_cluster_down_leaves_no_ray_process(cluster, tmp_path):
    """... nor a server supervised on a node whose follower went away (a gateway killed with -9 leaves its models'
    actors running for the next one to adopt): `down` stops it after its node, so that nothing restarts it."""
    import subprocess

    nodes = json.loads(cli("cluster", "status", "--json", env=cluster["env"]).stdout)["nodes"]
    worker = next(n for n in nodes if n["label"] == "worker1" and n["alive"])  # a lost one stays listed, dead
    port = health.find_free_port()
    job = {"argv": [os.sys.executable, FAKE, "--port", str(port)], "env": {}, "host": "127.0.0.1", "port": port,
           "home": str(tmp_path / "node-home"), "policy": {"startup_timeout_s": 60}}
    (tmp_path / "job.json").write_text(json.dumps(job))
    p = subprocess.Popen([os.sys.executable, "-m", "launcher.launching.on_node", "--address", cluster["address"], "--node",
                          worker["node_id"], "--name", "left-running", "--job", str(tmp_path / "job.json")],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         env=cluster["env"])
    while next_state(p)["state"] not in ("ready", "fatal", "ended"):
        pass
    p.stdin.close()  # its follower goes away: the actor and the server run on
    assert p.wait(30) == 0
    server = next(q for q in psutil.process_iter(["cmdline"]) if FAKE in " ".join(q.info["cmdline"] or [])
                  and str(port) in q.info["cmdline"])
    before = cluster_pids(cluster["home"])
    assert len(before) >= 8  # ray start, gcs_server, raylets, dashboard, agents, idle workers
    r = cli("cluster", "down", "--name", "local", env=cluster["env"], timeout=120)
    assert r.returncode == 0 and "no Ray process left" in r.stdout, r.stdout + r.stderr
    r = cli("cluster", "down", "--name", "local", env=cluster["env"], timeout=60)  # twice: nothing to stop, no error
    assert r.returncode == 0 and "nothing to stop" in r.stdout, r.stdout + r.stderr
    def survivors():
        return [f"{p} {' '.join(psutil.Process(p).cmdline())[:120]}" for p in before
                if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    try:
        wait_for(lambda: not survivors(), 20, what="no ray process")
    except AssertionError:
        raise AssertionError(f"still alive: {survivors()}") from None
    wait_for(lambda: not server.is_running() or server.status() == psutil.STATUS_ZOMBIE, 10,
             what="the server supervised on worker1 stopped with the cluster")


def test_remote_nodes_go_through_the_inventory_ssh_command(tmp_path, monkeypatch):
    """The remote path (ray start / ray stop over ssh) with an ssh stand-in that runs the command here."""
    import socket
    import stat
    import sys

    ip = socket.gethostbyname(socket.gethostname())
    if ip.startswith("127."):
        ip = [a for a in psutil.net_if_addrs().get("eth0", []) if a.family == socket.AF_INET]
        if not ip:
            pytest.skip("no non-loopback address to stand for a remote host")
        ip = ip[0].address
    shim = tmp_path / "fake-ssh"
    calls = tmp_path / "calls"
    shim.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nhost="$1"; shift\nexec sh -c "$*"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    port, dash = health.find_free_port(), health.find_free_port()
    inv = tmp_path / "inv.yaml"
    inv.write_text(json.dumps({"name": "remote", "head": {"host": ip, "port": port, "dashboard_port": dash, "num_cpus": 1},
                               "ssh": [str(shim)], "ray": os.path.join(os.path.dirname(sys.executable), "ray")}))
    others = set(ray_pids())
    r = cli("cluster", "up", "--inventory", str(inv), "--json", timeout=240)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["nodes"][0]["label"] == "head"
    first = calls.read_text().splitlines()[0]
    assert first.startswith(f"{ip} env RAY_USAGE_STATS_ENABLED=0 ") and f"start --head --port {port}" in first
    r = cli("cluster", "down", "--name", "remote", timeout=120)
    assert r.returncode == 0, r.stderr
    assert calls.read_text().splitlines()[-1].endswith(" stop")
    wait_for(lambda: not set(ray_pids()) - others, 30, what="ray stop over ssh to end the node")


def test_the_cluster_examples_of_docs_cluster_md_run_as_written(tmp_path):
    """docs/cluster.md's commands as a reader pastes them (scripts/doc_examples.py): a local cluster up with Ray's
    default ports, its status, down with no Ray process left, and the inventory plan; after the module's own
    cluster is down (the last test here)."""
    import sys

    from conftest import ROOT
    from test_docs_examples_real import example_env, workdir_for

    sys.path.insert(0, str(ROOT / "scripts"))
    import doc_examples

    work, env = workdir_for(tmp_path), example_env()
    runs = [e for e in doc_examples.examples("docs/cluster.md") if e.runs_here]
    assert [e.command.split()[1] for e in runs] == ["cluster", "cluster", "cluster", "estimate"]
    try:
        for ex in runs:
            code, printed = doc_examples.run(ex, work, env, timeout_s=240)
            why = doc_examples.mismatch(ex, code, printed)
            assert why is None, why
    finally:
        cli("cluster", "down", env=env, timeout=120)
