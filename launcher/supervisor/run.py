"""Drive the state machine with real processes, HTTP probes, the server log and NVML."""
from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..engines import vllm as vllm_engine
from ..gpu import NvmlSource
from ..runs import read_json, update_record, update_state
from .. import process
from .. import health
from .machine import Hooks, State, Supervisor
from .policy import RestartPolicy

if TYPE_CHECKING:
    from types import FrameType

    from ..cluster.watch import ClusterWatch
    from ..gpu import GpuSource
    from ..locks import StartLock

LOG_TAIL_BYTES = 256 * 1024


def read_tail(path: Path, n: int = LOG_TAIL_BYTES) -> str:
    """The last n bytes of a file as text ('' when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - n))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


class GpuReleaseCheck:
    """After a crash: ready to restart once no recorded PID holds GPU memory and usage is back near the baseline."""

    def __init__(self, source: GpuSource | None = None, slack_bytes: int = 1 << 30) -> None:
        self.source = source or NvmlSource()
        self.baseline = {g.index: g.used_bytes for g in self.source.list()}
        self.slack = slack_bytes
        self.pids: set[int] = set()

    def __call__(self) -> bool:
        gpus = self.source.list()
        if not gpus:
            return True
        for g in gpus:
            if self.pids & set(g.pids):
                return False
            if g.used_bytes > self.baseline.get(g.index, 0) + self.slack:
                return False
        return True


class StateMirror:
    """state.json through this supervisor's own copy of it (a damaged file is rewritten whole), and the
    supervisor's own log of what it did."""

    def __init__(self, name: str, run_dir: Path):
        self.name, self.dir = name, run_dir
        self.copy: dict = {"name": name}  # what this supervisor last wrote to state.json
        self._next_check = 0.0

    def update(self, **kw: object) -> None:
        """Merge kw into state.json (and into the copy kept for its repair)."""
        self.copy = update_state(self.name, base=self.copy, **kw)

    def note(self, line: str) -> None:
        """One timestamped line in supervisor.log."""
        with open(self.dir / "supervisor.log", "a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def repair(self, now: float, state: str) -> None:
        """Every few seconds: state.json rewritten from the copy when it cannot be read."""
        if now < self._next_check:
            return
        self._next_check = now + 2.0
        if read_json(self.dir / "state.json") is None:
            self.update(state=state, repaired_at=time.time())
            self.note("state.json was unreadable: rewritten")


class ServerLog:
    """The server's log: a marker where each start (or adoption) begins, its new lines read as phases, and what
    this instance's part of it says."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def mark(self, what: str) -> None:
        """A marker line where a start (or adoption) begins; phases are read from there on."""
        with open(self.path, "ab") as fh:
            fh.write(f"\n===== launcher: {what} {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n".encode())
        self.offset = self.path.stat().st_size

    def root_cause(self) -> tuple[str, str, bool] | None:
        """(kind, line, retryable) of why vLLM failed, from this instance's part of the log, if it says."""
        text = read_tail(self.path)
        marker = text.rfind("===== launcher: start")  # only this instance's part of the log
        return vllm_engine.root_cause(text[marker:] if marker >= 0 else text)

    def facts(self) -> dict:
        """What vLLM's log says of its memory and KV cache (engines.vllm.parse_log_facts)."""
        return vllm_engine.parse_log_facts(read_tail(self.path)[-LOG_TAIL_BYTES:])

    def new_phases(self) -> list[tuple[str, str]]:
        """(phase, line) for each complete line written since the last call that names a start-up phase."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except OSError:
            return []
        cut = chunk.rfind(b"\n") + 1
        self.offset += cut
        lines = chunk[:cut].decode("utf-8", "replace").splitlines()
        return [(ph, line) for line in lines if (ph := vllm_engine.phase_of(line))]


def health_url(host: str, port: int) -> str:
    """The /health address of a server bound to `host` (a wildcard address probed on the loopback)."""
    ph = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    return f"http://{'[' + ph + ']' if ':' in ph else ph}:{port}/health"


def stop_on_signals(handler: Callable[[int, FrameType | None], object]) -> None:
    """SIGTERM, SIGINT and SIGHUP (the terminal of a foreground launch closed: an SSH connection dropped)."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, handler)


class PortGuard:
    """/health's status counted only once this launch's server is the one listening on its port: until it binds
    it, another process there (a second launch that chose the same port, anything started since) may answer, and
    its 200 must not make this launch READY. Checked until the server's own listener is seen, each start."""

    def __init__(self, port: int, note: Callable[[str], None]) -> None:
        self.port, self.note = port, note
        self.reset()

    def reset(self) -> None:
        self.own_seen = self.foreign_noted = False

    def check(self, status: int | None, tree: process.ProcessTree | None) -> int | None:
        """The status, or None (no answer) while another process answers on the port."""
        if status is None or self.own_seen or tree is None:
            return status
        listeners = health.listener_pids(self.port)
        if listeners is None:  # cannot tell: trusted
            return status
        tree.refresh()
        if listeners & {m.pid for m in tree.members()}:
            self.own_seen = True
            return status
        if not self.foreign_noted:
            self.foreign_noted = True
            self.note(f"port {self.port} answers, but from PID {', '.join(map(str, sorted(listeners)))}, not this "
                      "launch's server: not ready until its own server listens there")
        return None


class ServerRun:
    """One supervised launch: spawn, probe, restart, stop; mirrors everything into state.json."""

    def __init__(self, name: str, argv: list[str], env: dict, host: str, port: int, run_dir: Path,
                 policy: RestartPolicy, on_event: Callable[[str, dict], None] | None = None,
                 gpu_check: GpuReleaseCheck | None = None, probe_host: str | None = None,
                 cluster: ClusterWatch | None = None, run_id: str | None = None, start_lock: StartLock | None = None,
                 ) -> None:
        self.name, self.argv, self.env, self.host, self.port, self.policy = name, argv, env, host, port, policy
        self.dir, self.log, self.records = run_dir, ServerLog(run_dir / "server.log"), StateMirror(name, run_dir)
        self.on_event = on_event or (lambda kind, data: None)
        self.gpu_check = gpu_check or GpuReleaseCheck()
        self.run_id = run_id or uuid.uuid4().hex
        self.tree: process.ProcessTree | None = None
        self.port_guard = PortGuard(port, self.records.note)
        self._stop, self._known = threading.Event(), set()
        self.health_url = health_url(probe_host or host, port)
        self.cluster = cluster  # a ClusterWatch when the server runs on a Ray cluster
        self.start_lock = start_lock  # the host's start lock (locks.StartLock): released at READY or the end
        extra = {"cluster_lost": cluster.lost, "cluster_ready": cluster.ready} if cluster else {}
        self.sup = Supervisor(Hooks(spawn=self._spawn, probe=self._probe, root_cause=self.log.root_cause,
                                    gpu_released=self.gpu_check, on_change=self._changed, **extra), policy)

    def _publish(self, kind: str, data: dict) -> None:
        """An event for the live view; a view that cannot print (its terminal closed) never stops supervision."""
        try:
            self.on_event(kind, data)
        except (OSError, ValueError, SystemExit):  # rich turns a broken pipe into SystemExit(1)
            self.on_event = lambda kind, data: None

    # hooks
    def _spawn(self):
        self.log.mark("start")
        if self.cluster is not None:
            self.cluster.unbind()  # a new instance gets a new placement, bound again once ready
        self.tree = process.spawn(self.argv, self.env, str(self.log.path), self.run_id)
        self.port_guard.reset()  # each start binds (or fails to bind) the port anew
        self._known = set()
        self.gpu_check.pids = set()
        self._record_pids()
        return self.tree

    def _probe(self) -> int | None:
        return self.port_guard.check(health.probe(self.health_url, self.policy.probe_timeout_s), self.tree)

    def _changed(self, old: State, new: State, why: str):
        data = {"state": new.value, "reason": self.sup.reason, "restarts": self.sup.restarts}
        if new == State.READY:
            data["ready_at"] = time.time()
            data["facts"] = self.log.facts()
        if new == State.STARTING:
            data["started_at"] = time.time()
        if self.cluster is not None and new in (State.READY, State.BACKOFF):
            if new == State.READY:
                self.cluster.bind(self._driver_pids())
            data["cluster"] = self.cluster.snapshot()
        self.records.update(**data)
        self.records.note(f"{old.value} -> {new.value} {why}")
        if new in (State.READY, State.FATAL, State.STOPPED):
            self._release_start()
        self._publish("state", {"old": old.value, **data})

    def _release_start(self) -> None:
        """Past the start (its load, profile and graph capture): the next launch may read the free memory."""
        if self.start_lock is not None and self.start_lock.fd >= 0:
            self.start_lock.release()
            self.records.note("start lock released")

    def _driver_pids(self) -> set[int]:
        t = self.tree
        return set() if t is None else {t.leader.pid, *t.seen}

    def _record_pids(self):
        t = self.tree
        if t is None:
            return
        t.refresh()
        pids = {t.leader.pid, *t.seen}
        if pids != self._known:
            self._known = pids
            self.gpu_check.pids |= pids
            server = {"pid": t.leader.pid, "create_time": t.leader.create_time, "pgid": t.pgid}
            if self.records.copy.get("server") != server:  # a new server: its identity in launch.json too
                update_record(self.name, server=server, run_id=self.run_id, restarts=self.sup.restarts)
            self.records.update(server=server, descendants=[[r.pid, r.create_time] for r in t.seen.values()],
                         run_id=self.run_id)

    def _pump_log(self):
        """New log lines -> phase events for the live view."""
        for ph, line in self.log.new_phases():
            self._publish("phase", {"phase": ph, "line": line})

    # driver
    def request_stop(self, *_: object) -> None:
        """Ask the run loop to stop the server and end (a signal handler: safe from any thread)."""
        self._stop.set()

    def _adopt_recorded(self) -> process.ProcessTree:
        """The process tree of the server recorded in state.json (its supervisor is gone)."""
        from ..runs import read_state

        st = read_state(self.name) or {}
        self.records.copy.update({k: v for k, v in st.items() if k != "damaged"})
        srv = st.get("server") or {}
        leader = process.ProcRef(srv["pid"], srv["create_time"])
        self.run_id = st.get("run_id", self.run_id)
        tree = process.ProcessTree(leader=leader, pgid=srv.get("pgid", leader.pid), run_id=self.run_id,
                                   seen={p: process.ProcRef(p, c) for p, c in st.get("descendants", [])})
        self.sup.restarts = int(st.get("restarts", 0))
        self.log.mark("adopted the running server")
        return tree

    def run(self, install_signals: bool = True, tick_s: float = 0.2, adopt: bool = False) -> State:
        """Supervise until stopped or FATAL: start (or adopt the recorded server), tick every tick_s, mirror
        each state into state.json and supervisor.log; the final state."""
        if install_signals:
            stop_on_signals(self.request_stop)
        tree = self._adopt_recorded() if adopt else None
        me = {"pid": os.getpid(), "create_time": process.ProcRef.of(os.getpid()).create_time}
        update_record(self.name, supervisor=me, run_id=self.run_id)
        self.records.update(supervisor=me, host=self.host, port=self.port, endpoint=f"http://{self.host}:{self.port}/v1",
                     restarts=self.sup.restarts, run_id=self.run_id)
        if tree is not None:
            self.tree = tree
            self._record_pids()
            self.sup.adopt(tree, time.monotonic())
        else:
            self.sup.start(time.monotonic())
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                st = self.sup.tick(now)
                self._record_pids()
                self._pump_log()
                self.records.repair(now, self.sup.state.value)
                if st in (State.FATAL, State.STOPPED):
                    break
                self._stop.wait(tick_s)
        finally:
            try:
                if self.sup.state not in (State.FATAL, State.STOPPED):
                    self.sup.stop()
            finally:
                if self.tree is not None and self.tree.members():  # FATAL, or a stop that failed half-way
                    self.tree.stop(self.policy.stop_grace_unready_s)
            self._pump_log()
            extra = {}
            if self.cluster is not None:
                # Ray frees a job's actors and placement groups when its driver dies: check that it did
                extra["ray_leftovers"] = self.cluster.leftovers(self._driver_pids())
            self.records.update(stopped_at=time.time(), state=self.sup.state.value, **extra)
            self._release_start()
        return self.sup.state
