"""What runs a model's server on a Ray node (launching/on_node.NodeHost, the actor's body), run bare against the fake
server: two starts on one node one after the other (the second waits for the first's READY, as two vLLM starts on
one GPU must: on an H100 the second one profiled while the first loaded and failed, 2026-12-07), a host asked to stop
while it waits never starts its server. Real processes."""
import os
import time
from dataclasses import asdict

from conftest import fake_argv, wait_for
from launcher import health
from launcher.launching.on_node import NodeHost
from launcher.supervisor.policy import RestartPolicy

FAST = RestartPolicy(startup_timeout_s=20, probe_interval_s=0.1, probe_timeout_s=0.3, liveness_failures=3,
                     backoff_initial_s=0.1, backoff_max_s=0.5, stable_s=30, max_quick_failures=3, stop_grace_s=1.0)


def _job(home, delay):
    return {"argv": fake_argv(health.find_free_port(), "bind_late", delay) + ["--host", "127.0.0.1"], "env": {},
            "host": "127.0.0.1", "port": 0, "home": str(home), "policy": asdict(FAST)}


def test_a_second_start_on_a_node_waits_for_the_firsts_ready_and_a_stop_while_waiting_starts_nothing(tmp_path,
                                                                                                    monkeypatch):
    monkeypatch.setenv("LAUNCHER_HOME", os.environ.get("LAUNCHER_HOME", str(tmp_path)))  # NodeHost sets the job's
    home = tmp_path / "nodes"
    first = NodeHost("m1", _job(home, 2.0), "127.0.0.1", "node-a")
    second = NodeHost("m2", _job(home, 0.2), "127.0.0.1", "node-a")
    third = NodeHost("m3", _job(home, 0.2), "127.0.0.1", "node-a")
    try:
        seen_overlap = False
        deadline = time.monotonic() + 40
        while second.state()["state"] != "ready" and time.monotonic() < deadline:
            if first.state()["state"] == "starting" and second.ran:
                seen_overlap = True
            time.sleep(0.02)
        assert not seen_overlap, "the second server started while the first was still starting"
        assert first.state()["state"] == "ready" and second.state()["state"] == "ready"
        assert second.state()["gpus"] is None and second.state()["node_id"] == "node-a"
        # the third waits behind the second's start only until that one is READY: it is starting or ready now;
        # one asked to stop before its turn never runs its server
        fourth = NodeHost("m4", _job(home, 0.2), "127.0.0.1", "node-a")
        blocker = NodeHost("m5", _job(home, 3.0), "127.0.0.1", "node-a")
        wait_for(lambda: blocker.ran or fourth.ran, 20, what="one of the two to start")
        waiting = fourth if blocker.ran else blocker
        if waiting.ran:  # both ran already: nothing to check of a stop while waiting
            raise AssertionError("the start lock let both start at once")
        assert waiting.state()["state"] == "starting"
        assert waiting.stop()["state"] == "stopped" and not waiting.ran and waiting.run.tree is None
        for h in (fourth, blocker):
            if h is not waiting:
                h.stop()
    finally:
        for h in (first, second, third):
            h.stop()
