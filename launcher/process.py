"""Process trees: spawn in an own process group, remember every descendant, stop with no orphans.

Every PID is remembered with its start time and checked again before any signal,
so a recycled PID is never signalled. Each launch tags its server's environment
with LAUNCHER_RUN_ID, which lets the final sweep find descendants that left the
process group and were re-parented away (double fork, setsid).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

import psutil

RUN_ID_ENV = "LAUNCHER_RUN_ID"


@dataclass(frozen=True)
class ProcRef:
    """A PID pinned to its start time."""

    pid: int
    create_time: float

    @classmethod
    def of(cls, pid: int) -> ProcRef | None:
        try:
            return cls(pid, psutil.Process(pid).create_time())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None

    def process(self) -> psutil.Process | None:
        """The live process, only if it is still the same one (PID reuse check)."""
        if self.pid <= 0:  # no process recorded (a launch stopped before its server was spawned)
            return None
        try:
            p = psutil.Process(self.pid)
            if abs(p.create_time() - self.create_time) > 0.01:
                return None
            if p.status() == psutil.STATUS_ZOMBIE:
                return None
            return p
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None

    def alive(self) -> bool:
        return self.process() is not None

    def signal(self, sig: int) -> bool:
        p = self.process()
        if p is None:
            return False
        try:
            p.send_signal(sig)
            return True
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False


@dataclass
class ProcessTree:
    """One spawned server: its leader, process group and every descendant ever seen."""

    leader: ProcRef
    pgid: int
    run_id: str
    popen: subprocess.Popen | None = None
    seen: dict[int, ProcRef] = field(default_factory=dict)

    def refresh(self) -> None:
        """Remember the current descendants (call often: a descendant that escapes later is still known)."""
        p = self.leader.process()
        if p is None:
            return
        try:
            for c in p.children(recursive=True):
                if c.pid not in self.seen:
                    ref = ProcRef.of(c.pid)
                    if ref:
                        self.seen[c.pid] = ref
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass

    def exit_code(self) -> int | None:
        if self.popen is not None:
            return self.popen.poll()
        return None if self.leader.alive() else -1

    def members(self) -> list[ProcRef]:
        """Every live process of this launch: leader, recorded descendants, the group, the tagged ones."""
        out: dict[int, ProcRef] = {}
        for ref in [self.leader, *self.seen.values()]:
            if ref.alive():
                out[ref.pid] = ref
        for proc in psutil.process_iter(["pid", "create_time"]):
            pid = proc.info["pid"]
            if pid in out or pid == os.getpid():
                continue
            try:
                if os.getpgid(pid) == self.pgid or _has_env(proc, RUN_ID_ENV, self.run_id):
                    out[pid] = ProcRef(pid, proc.info["create_time"])
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        return list(out.values())

    def stop(self, grace_s: float = 10.0, kill_wait_s: float = 5.0) -> list[int]:
        """SIGTERM the leader's group, wait, SIGKILL the group, then sweep every remaining member.
        Returns the PIDs that had to be SIGKILLed."""
        self.refresh()
        _killpg(self.pgid, signal.SIGTERM, self.leader)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            self._reap()
            if not self.members():
                return []
            time.sleep(0.1)
        killed = []
        _killpg(self.pgid, signal.SIGKILL, None)
        for ref in self.members():
            if ref.signal(signal.SIGKILL):
                killed.append(ref.pid)
        deadline = time.monotonic() + kill_wait_s
        while time.monotonic() < deadline and self.members():
            self._reap()
            time.sleep(0.05)
        self._reap()
        return killed

    def _reap(self) -> None:
        if self.popen is not None:
            self.popen.poll()


def _has_env(proc: psutil.Process, var: str, value: str) -> bool:
    """Whether the process's environment has var=value (False when it cannot be read)."""
    try:
        return proc.environ().get(var) == value
    except (psutil.Error, OSError):
        return False


def _killpg(pgid: int, sig: int, leader: ProcRef | None) -> None:
    # only signal the group while its leader is still ours (or when forcing a known group)
    if leader is not None and not leader.alive():
        return
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def spawn(argv: list[str], env: dict, log_path: str, run_id: str, cwd: str | None = None) -> ProcessTree:
    """Start argv (no shell) in its own process group with output appended to log_path."""
    env = dict(env)
    env[RUN_ID_ENV] = run_id
    log = open(log_path, "ab", buffering=0)
    try:
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                 cwd=cwd, start_new_session=True, close_fds=True)
    finally:
        log.close()
    ref = ProcRef.of(popen.pid) or ProcRef(popen.pid, time.time())
    return ProcessTree(leader=ref, pgid=popen.pid, run_id=run_id, popen=popen)


def tagged(var: str, value: str) -> list[ProcRef]:
    """Every live process whose environment has var=value (this process excluded)."""
    return [ProcRef(proc.info["pid"], proc.info["create_time"]) for proc in psutil.process_iter(["pid", "create_time"])
            if proc.info["pid"] != os.getpid() and _has_env(proc, var, value)]


def sweep_run(run_id: str, pgid: int | None, refs: list[ProcRef]) -> list[int]:
    """Kill what is left of a launch whose supervisor is gone (used by `launcher stop`)."""
    tree = ProcessTree(leader=refs[0] if refs else ProcRef(-1, 0), pgid=pgid or -1, run_id=run_id,
                       seen={r.pid: r for r in refs})
    killed = []
    for ref in tree.members():
        if ref.signal(signal.SIGKILL):
            killed.append(ref.pid)
    return killed
