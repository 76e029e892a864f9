"""`launcher serve --ray-address` on a real local Ray cluster of two nodes (a head and a worker process on this host,
each offering 1.5 GiB: Ray's memory resource), the real vLLM engine (the CPU build), the real `openai` client: three
tiny models of about 1.0 GiB each, placed by the plan on the nodes' memory; two on different nodes, a third that
fits only once one of them stops; the worker killed mid-traffic and its model served again from the head; a gateway
killed with -9 and started again adopting what runs; Ctrl-C leaves nothing on any node."""
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request

import psutil
import pytest

from conftest import QUICK_VLLM, TINY, GatewayProc, cli, wait_for

pytest.importorskip("ray", reason="the cluster extra (ray) is not installed")
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]

QUICK = {"enforce-eager": True, "distributed-executor-backend": "uni"}
assert set(QUICK) == {a.lstrip("-") for a in QUICK_VLLM if a.startswith("--")}
NODE_MEMORY = "1.5GiB"  # each tiny model is planned at 1 GiB of KV cache plus its weights: one per node
FAST_HEALTH = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "3",
               "RAY_health_check_initial_delay_ms": "0", "RAY_health_check_timeout_ms": "500"}


class Serve(GatewayProc):
    """`python -m launcher serve --ray-address` as a user runs it."""

    def __init__(self, env, models, cluster):
        from launcher import health

        super().__init__(models.parent, models, health.find_free_port(), "--ray-address", cluster["address"],
                         "--ray-dashboard", cluster["dashboard"], env=env, up_s=120)

    def node_of(self, name):
        return self.status()[name]["node_id"]

    def ask(self, name):
        return self.client(timeout=300).completions.create(model=name, prompt="Once", max_tokens=3).choices[0].text


def actors(dashboard):
    data = json.loads(urllib.request.urlopen(f"{dashboard}/api/v0/actors?limit=1000&detail=false").read())
    return [a for a in data["data"]["result"]["result"] if (a.get("name") or "").startswith("launcher-model-")]


def vllm_on_nodes(home):
    """vLLM processes started by the nodes' supervisors (their LAUNCHER_HOME is under the gateway's)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        if "vllm.entrypoints" in " ".join(p.info["cmdline"] or []):
            try:
                if p.environ().get("LAUNCHER_HOME", "").startswith(str(home)) and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p.pid)
            except psutil.Error:
                pass
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import yaml

    from launcher import health

    home = tmp_path_factory.mktemp("serve-ray-home")
    env = {**os.environ, "LAUNCHER_HOME": str(home), "PYTHONUNBUFFERED": "1", **FAST_HEALTH}
    port, dash = health.find_free_port(), health.find_free_port()
    r = cli("cluster", "up", "--local-nodes", "2", "--cpus-per-node", "1", "--memory-per-node", NODE_MEMORY,
            "--port", str(port), "--dashboard-port", str(dash), "--json", env=env, timeout=240)
    assert r.returncode == 0, r.stderr
    cluster = json.loads(r.stdout)
    entry = {"model_path": str(TINY), "env": {"VLLM_CPU_KVCACHE_SPACE": "1"},
             "engine_args": {"max-model-len": 1024, **QUICK}}
    models = home / "models.yaml"
    models.write_text(yaml.safe_dump({"models": [{"name": n, **entry} for n in ("tiny-a", "tiny-b", "tiny-c")]}))
    yield env, home, models, cluster
    cli("cluster", "down", "--name", "local", env=env, timeout=120)  # first: a node's supervisor restarts its server
    for p in vllm_on_nodes(home):  # what a failed test left (the test itself checks that nothing is)
        os.kill(p, signal.SIGKILL)


def test_a_models_file_served_across_two_nodes_by_the_plan(setup):
    env, home, models, cluster = setup
    nodes = {n["node_id"]: n["label"] for n in json.loads(cli("cluster", "status", "--json", env=env).stdout)["nodes"]}
    # the plan, as `launcher plan` shows it before anything starts: one model on each node, the third waits
    r = cli("plan", "--models", str(models), "--ray-address", cluster["address"], "--ray-dashboard",
            cluster["dashboard"], "--json", env=env)
    assert r.returncode == 0, r.stderr
    plan = {m["name"]: m for m in json.loads(r.stdout)["models"]}
    assert [(plan[n]["node"], plan[n]["awake"]) for n in ("tiny-a", "tiny-b")] == [("head", True), ("worker1", True)]
    assert not plan["tiny-c"]["awake"] and plan["tiny-c"]["shares_with"], plan["tiny-c"]
    gw = Serve(env, models, cluster).start()
    try:
        # two models placed on different nodes by the plan, each answering through the gateway
        assert gw.ask("tiny-a") and gw.ask("tiny-b")
        where = {n: nodes[gw.node_of(n)] for n in ("tiny-a", "tiny-b")}
        assert where == {n: plan[n]["node"] for n in where}, where  # where the plan put them
        ps = {r["name"]: r for r in json.loads(cli("ps", "--json", env=env).stdout)}
        assert ps["tiny-a"]["node"].startswith(where["tiny-a"] + " ("), ps["tiny-a"]  # `launcher ps` says where
        # a third fits on no node beside them: the least recently used idle one on its node is stopped for it
        assert gw.ask("tiny-c")
        st = gw.status()
        assert sorted(st[n]["state"] for n in ("tiny-a", "tiny-b")) == ["running", "stopped"], st
        assert sorted(nodes[gw.node_of(n)] for n in st if st[n]["state"] == "running") == ["head", "worker1"]
        assert nodes[gw.node_of("tiny-c")] == plan["tiny-c"]["node"]  # where the plan said it would wait
        # a gateway killed with -9 and started again adopts both servers where they run (the same ports)
        ports = {n: st[n]["port"] for n in st if st[n]["state"] == "running"}
        gw.proc.kill()
        gw.proc.wait(30)
        gw = Serve(env, models, cluster).start()
        st = gw.status()
        assert {n: st[n]["port"] for n in st if st[n]["state"] == "running"} == ports, st
        # the worker killed mid-traffic: its model answers 503 with Retry-After, then again from the head
        on_worker = next(n for n in ports if nodes[gw.node_of(n)] == "worker1")
        codes, retry_after, kinds = [], [], []

        def traffic(seconds):
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                req = urllib.request.Request(gw.url + "/v1/completions", method="POST",
                                             data=json.dumps({"model": on_worker, "prompt": "Once",
                                                              "max_tokens": 3}).encode(),
                                             headers={"Content-Type": "application/json"})
                try:
                    codes.append(urllib.request.urlopen(req, timeout=300).status)
                except urllib.error.HTTPError as e:
                    codes.append(e.code)
                    retry_after.append(e.headers.get("Retry-After"))
                    kinds.append(json.loads(e.read()).get("error", {}).get("code"))
                if codes[-1] == 200 and 503 in codes:  # served again after the loss
                    return
                time.sleep(0.3)

        t = threading.Thread(target=traffic, args=(180,))
        t.start()
        wait_for(lambda: len(codes) >= 3, 60, what="traffic before the loss")
        os.environ["LAUNCHER_HOME"], old = str(home), os.environ.get("LAUNCHER_HOME", "")
        try:
            from launcher.cluster import control

            control.kill_node("local", "worker1")
        finally:
            os.environ["LAUNCHER_HOME"] = old
        t.join(200)
        assert 503 in codes and all(r and int(r) > 0 for r in retry_after), (codes, retry_after)
        # its next request starts it elsewhere: no retry window as after a failure of the model itself
        assert "model_failed" not in kinds, kinds
        assert codes[-1] == 200 and nodes[gw.node_of(on_worker)] == "head", (codes, gw.status()[on_worker])
        assert gw.ask(on_worker)
        # Ctrl-C: every model stopped on its node, no actor left, no vLLM process of any node
        gw.proc.send_signal(signal.SIGINT)
        assert gw.proc.wait(180) == 0
        wait_for(lambda: all(a["state"] == "DEAD" for a in actors(cluster["dashboard"])), 30, what="no actor alive")
        wait_for(lambda: not vllm_on_nodes(home), 30, what="no vLLM process left on any node")
    finally:
        if gw.proc.poll() is None:
            gw.proc.kill()
