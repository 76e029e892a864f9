"""A launch on a node of a Ray cluster, held by a long-running process of ours (the gateway): its server and its
supervisor run on the node (launching/on_node.py's actor), and this follows them through the process on_node.py runs
here, one JSON line per change. The same face as inprocess.Launch (state, alive, wait_ready, failure, stop), plus the
address the server answers at (the node's) and the node it runs on."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import asdict
from typing import TYPE_CHECKING

from ..runs import RunState

if TYPE_CHECKING:
    from .prepare import Prepared

NO_ACTOR = "none"  # on_node.py --adopt: no actor of that name runs
# sent to the node even where this host has the same value: the node's own (Ray's, for an actor asking no GPU) differs
ALWAYS_SENT = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")


class NodeLaunch:
    """One server supervised on a Ray node, followed from here. `state` is its supervisor's (RunState); a lost node
    reads FATAL with "node lost", and the follower process then ends (alive False)."""

    def __init__(self, name: str, proc: subprocess.Popen, prep: Prepared | None = None) -> None:
        self._name, self.proc, self.prep = name, proc, prep
        self.last: dict = {"state": "starting"}
        self.device: str | None = None  # the node as whoever placed it names it (gateway/nodes.py: "LABEL|ID")
        self.devices: tuple = ()  # its GPUs there, as whoever placed it names them (gateway/devices.py)
        self.seen = threading.Condition()
        self._reader = threading.Thread(target=self._read, name=f"follow-{name}", daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, prep: Prepared, address: str, node_id: str, home: str, env: dict | None = None) -> NodeLaunch:
        """The prepared launch started on that node (its server listening on the node's address, on a port chosen
        there); returns at once (wait_ready). home: the LAUNCHER_HOME its supervisor records into on the node."""
        from .records import policy_for

        # what the launcher sets for the server, not this host's whole environment: the node has its own
        sets = {k: v for k, v in prep.env.items() if os.environ.get(k) != v or k in ALWAYS_SENT}
        job = {"argv": prep.argv, "env": sets, "host": "node", "port": 0, "home": home,
               "policy": asdict(policy_for(prep.spec))}
        jobs = os.path.join(home, "jobs")
        os.makedirs(jobs, mode=0o700, exist_ok=True)
        path = os.path.join(jobs, f"{prep.spec.name}.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the model's key
        with os.fdopen(fd, "w") as fh:
            json.dump(job, fh)
        try:
            launch = cls(prep.spec.name, _follower(address, env, os.path.join(jobs, f"{prep.spec.name}.log"),
                                                  "--node", node_id, "--name", prep.spec.name, "--job", path), prep)
        finally:
            if prep.start_lock is not None:  # the plan placed it on its node: nothing on this host to wait for
                prep.start_lock.release()
        return launch

    @classmethod
    def adopt(cls, name: str, address: str, home: str, env: dict | None = None,
              timeout_s: float = 60.0) -> NodeLaunch | None:
        """Follow the server an earlier gateway started on a node under this name (its actor outlived that
        gateway); None where none runs."""
        os.makedirs(os.path.join(home, "jobs"), mode=0o700, exist_ok=True)
        launch = cls(name, _follower(address, env, os.path.join(home, "jobs", f"{name}.log"), "--adopt", "--name", name))
        with launch.seen:
            launch.seen.wait_for(lambda: launch.last.get("state") != "starting" or not launch._reader.is_alive(),
                                 timeout_s)
        if launch.last.get("state") in (NO_ACTOR, "starting", "fatal", "stopped"):
            launch.stop()
            return None
        return launch

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                st = json.loads(line)
            except ValueError:
                continue
            with self.seen:
                self.last = st
                self.seen.notify_all()
        self.proc.wait()
        with self.seen:
            if self.last.get("state") not in ("stopped", "fatal", NO_ACTOR):
                self.last = {**self.last, "state": "fatal", "why": self.last.get("why") or "its follower ended"}
            self.seen.notify_all()
        if self.prep is not None:
            self.prep.release_locks()

    @property
    def name(self) -> str:
        return self._name

    @property
    def state(self) -> RunState:
        s = str(self.last.get("state", "starting")).upper()
        return RunState(s) if s in RunState.__members__ else RunState.FATAL

    @property
    def alive(self) -> bool:
        """Whether it is still followed (the follower ends with the supervisor, or with the node)."""
        return self._reader.is_alive()

    @property
    def host(self) -> str:
        return self.last.get("node_ip") or "127.0.0.1"

    @property
    def port(self) -> int | None:
        return self.last.get("port")

    @property
    def node_id(self) -> str | None:
        return self.last.get("node_id")

    @property
    def gpus(self) -> str | None:
        """The GPUs its server was given on the node (its CUDA_VISIBLE_DEVICES there), as its actor reports them."""
        return self.last.get("gpus")

    def wait_ready(self, timeout_s: float, poll_s: float = 0.1) -> RunState:
        """Block until READY, FATAL, the end of following or the deadline; the state then."""
        with self.seen:
            self.seen.wait_for(lambda: self.state in (RunState.READY, RunState.FATAL) or not self.alive, timeout_s)
        return self.state

    def failure(self) -> str:
        return self.last.get("why") or self.state.value

    def stop(self, timeout_s: float = 200.0) -> RunState:
        """Stop the server on its node and the actor; the final state (the node's loss counts as stopped)."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("stop\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._reader.join(10)
        return self.state


def _follower(address: str, env: dict | None, log: str, *args: str) -> subprocess.Popen:
    """on_node.py in a session of its own (a Ctrl-C to the gateway's terminal is the gateway's to handle: it stops
    each model through this process, which must outlive the signal); what it says of itself goes to log."""
    with open(log, "a") as err:
        return subprocess.Popen([sys.executable, "-m", "launcher.launching.on_node", "--address", address, *args],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                env={**os.environ, **(env or {})}, start_new_session=True)

