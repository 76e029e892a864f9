"""A model's server on a chosen node of a Ray cluster, supervised there: a detached Ray actor pinned to the node
(NodeAffinitySchedulingStrategy, not soft) runs the launcher's supervisor (supervisor/run.ServerRun) beside the
server it spawns on that node; a process here follows the actor and answers for it. The building block of
`launcher serve --ray-address` (gateway/nodes.py, docs/placement.md). Ray is imported only in that
process, as in cluster/placement.py:

    python -m launcher.launching.on_node --address HOST:PORT --node NODE_ID --name NAME --job JOB.json

JOB.json: {"argv": [...], "env": {...}, "host": "127.0.0.1", "port": N, "home": DIR} (the server's command line, its
environment and address, the LAUNCHER_HOME its supervisor records into on the node). "host": "node" makes the server
listen on the node's address (a gateway on another host reaches it there); "port": 0 has a free port of the node
chosen there (the argv's --host and --port are set to them). It prints one JSON line per change:
{"state": "starting|ready|backoff|restarting|fatal|stopped", "node_id": ..., "node_ip": ..., "port": N, "why": ...,
"gpus": its CUDA_VISIBLE_DEVICES or null};
"node lost" when the actor dies with its node. A line "stop" on its stdin stops the server and the actor, and ends it.
With --adopt (and no --job) it follows the actor an earlier process started under that name, or says
{"state": "none"} and ends: a gateway started again takes over what runs on every node.
"""
from __future__ import annotations

import json
import sys
import threading
import time

ACTOR_PREFIX = "launcher-model-"
NODE_LOST = "node lost"  # how a follower says the actor died with its node (the gateway starts the model elsewhere)
NAMESPACE = "launcher"


class NodeHost:
    """The supervisor of one model's server, on the node it was placed on (ModelHost, the Ray actor, is this on
    the node; tests run it bare). Its LAUNCHER_HOME is the job's: this process is the node's worker, not the user's."""

    def __init__(self, name: str, job: dict, node_ip: str, node_id: str) -> None:
        import os
        from pathlib import Path

        os.environ["LAUNCHER_HOME"] = job["home"]
        from launcher import health  # absolute: this class runs in a Ray worker on the node
        from launcher.runs import run_dir
        from launcher.supervisor.policy import RestartPolicy
        from launcher.supervisor.run import GpuReleaseCheck, ServerRun

        self.node_ip, self.node_id = node_ip, node_id
        job = _on_this_node(job, self.node_ip, health.find_free_port)
        d = run_dir(name)
        Path(d).mkdir(parents=True, exist_ok=True)
        # the node's tag (its processes carry LAUNCHER_RUN_ID) kept for the server, which gets a tag of its own:
        # a node's loss drill (cluster/control.kill_node) takes it down with the node
        env = {**os.environ, **job.get("env", {}), "LAUNCHER_NODE_RUN_ID": os.environ.get("LAUNCHER_RUN_ID", "")}
        self.gpus = job.get("env", {}).get("CUDA_VISIBLE_DEVICES")
        self.run = ServerRun(name, job["argv"], env, job["host"], job["port"], d,
                             RestartPolicy(**job.get("policy", {})), gpu_check=GpuReleaseCheck())
        self.waiting, self.stopping, self.ran = True, False, False  # for the start lock; asked to stop; run begun
        self.thread = threading.Thread(target=self._run, args=(name, job.get("start_wait_s", 900.0)), daemon=True)
        self.thread.start()  # state() says "starting" from here on

    def _run(self, name: str, wait_s: float) -> None:
        """The run once no other start is under way on this node (locks.StartLock in the nodes' LAUNCHER_HOME, as
        on one host: two vLLM starts profiling one GPU at once size their KV caches from memory the other is
        about to take; seen on an H100, 2026-12-07: "No available memory for the cache blocks"); released at
        READY by the supervisor. Waited for up to wait_s, then started regardless."""
        from launcher.errors import BadInput
        from launcher.locks import StartLock

        deadline = time.monotonic() + wait_s
        while not self.stopping and time.monotonic() < deadline:
            try:
                self.run.start_lock = StartLock.acquire_waiting(name, 1.0)
                break
            except BadInput:  # another start is under way: wait on, unless asked to stop
                continue
        if self.stopping:
            self.run._release_start()
            self.waiting = False
            return
        self.ran, self.waiting = True, False
        self.run.run(install_signals=False)

    def state(self) -> dict:
        from launcher.supervisor.machine import State

        sup = self.run.sup
        if self.waiting or (not self.stopping and sup.state == State.STOPPED and self.thread.is_alive()):
            state = "starting"  # for the start lock, or the run about to begin
        else:
            state = "stopped" if self.stopping and not self.ran else sup.state.value.lower()
        return {"state": state, "node_id": self.node_id, "node_ip": self.node_ip,
                "port": self.run.port, "why": sup.reason, "gpus": self.gpus}

    def stop(self) -> dict:
        self.stopping = True
        self.run.request_stop()
        self.thread.join(120)
        return self.state()


def _actor_class():
    import ray

    @ray.remote(num_cpus=0, max_restarts=0)
    class ModelHost(NodeHost):
        """NodeHost as a detached actor pinned to its node."""

        def __init__(self, name: str, job: dict) -> None:
            super().__init__(name, job, ray.util.get_node_ip_address(), ray.get_runtime_context().get_node_id())

    return ModelHost


def _on_this_node(job: dict, node_ip: str, free_port) -> dict:
    """The job with its address made on the node: "host": "node" -> the node's address, "port": 0 -> a free port
    there, each written into the server's argv (--host, --port) as well."""
    job = dict(job)
    if job.get("host") == "node":
        job["host"] = node_ip
    if not job.get("port"):
        job["port"] = free_port()
    argv = list(job["argv"])
    for flag, value in (("--host", job["host"]), ("--port", str(job["port"]))):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
    job["argv"] = argv
    return job


def _main(argv: list[str]) -> int:
    import argparse

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ap = argparse.ArgumentParser()
    ap.add_argument("--address", required=True)
    ap.add_argument("--node", help="the Ray node id to run on (not with --adopt)")
    ap.add_argument("--name", required=True)
    ap.add_argument("--job")
    ap.add_argument("--adopt", action="store_true", help="follow the running actor of this name, if any")
    ap.add_argument("--poll", type=float, default=0.5)
    a = ap.parse_args(argv)
    ray.init(address=a.address, namespace=NAMESPACE, logging_level="ERROR", log_to_driver=False)
    if a.adopt:
        try:
            actor = ray.get_actor(ACTOR_PREFIX + a.name, namespace=NAMESPACE)
        except ValueError:  # none of that name: nothing to adopt
            print(json.dumps({"state": "none"}), flush=True)
            return 0
    else:
        actor = _actor_class().options(
            name=ACTOR_PREFIX + a.name, lifetime="detached", get_if_exists=True,
            scheduling_strategy=NodeAffinitySchedulingStrategy(a.node, soft=False)).remote(a.name, json.load(open(a.job)))
    stop, gone = threading.Event(), threading.Event()

    def read() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                stop.set()
                return
        gone.set()  # stdin closed: whoever followed it went away; the actor runs on, for the next one to adopt

    threading.Thread(target=read, daemon=True).start()
    last = None
    while True:
        try:
            st = ray.get(actor.state.remote(), timeout=30)
        except Exception as e:  # noqa: BLE001 - the actor died (its node was lost) or cannot be reached
            print(json.dumps({"state": "fatal", "why": f"{NODE_LOST}: {type(e).__name__}"}), flush=True)
            return 1
        if st != last:
            print(json.dumps(st), flush=True)
            last = st
        if st["state"] in ("fatal", "stopped"):
            ray.kill(actor)
            return 0 if st["state"] == "stopped" else 1
        if stop.wait(a.poll):
            print(json.dumps(ray.get(actor.stop.remote(), timeout=180)), flush=True)
            ray.kill(actor)
            return 0
        if gone.is_set():
            return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
