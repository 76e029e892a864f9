"""The supervisor as an explicit state machine.

STARTING --/health 200--> READY --N failed probes / exit--> BACKOFF --delay, GPU free--> STARTING
any failure that is a configuration error, or the K-th quick failure ------------------> FATAL
stop() from any state ------------------------------------------------------------------> STOPPING -> STOPPED

`tick(now)` compares deadlines and never sleeps; the clock, spawning, probing,
log reading and the GPU check are injected, so tests drive it without sleeping.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .. import exit_status
from ..runs import RunState
from .policy import RestartPolicy

# One enum names a launch's states everywhere: the machine moves between STARTING, READY, BACKOFF, STOPPING,
# STOPPED and FATAL; the records add what only they can say (UNKNOWN, DEAD, UNSUPERVISED).
State = RunState


class Server(Protocol):
    """What the state machine needs of a running server (launcher/process.ProcessTree, or a fake in tests)."""

    def exit_code(self) -> int | None:
        """The server's exit code once it has exited, else None."""

    def stop(self, grace_s: float) -> list[int]:
        """SIGTERM, SIGKILL after grace_s; the PIDs that had to be killed."""

    def refresh(self) -> None:
        """Record the server's current descendants (so that a stop reaches the ones that left its group)."""


@dataclass
class Hooks:
    spawn: Callable[[], Server]
    probe: Callable[[], int | None]  # HTTP status of /health, None when no answer
    root_cause: Callable[[], tuple[str, str, bool] | None]  # from the server log
    gpu_released: Callable[[], bool] = lambda: True  # the dead instance's GPU memory is free again
    on_change: Callable[[State, State, str], None] = lambda old, new, why: None
    # a launch on a Ray cluster: why a node of its placement is gone (None while all is well) ...
    cluster_lost: Callable[..., str | None] = lambda fresh=False: None
    # ... and, in back-off, whether enough of the cluster is back to start again
    cluster_ready: Callable[[], tuple[bool, str]] = lambda: (True, "")


@dataclass
class Supervisor:
    hooks: Hooks
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    state: State = State.STOPPED
    server: Server | None = None
    restarts: int = 0
    streak: int = 0  # failures in a row, each before the stable period
    reason: str = ""
    started_at: float = 0.0
    ready_at: float | None = None
    _next_probe: float = 0.0
    _misses: int = 0
    _retry_at: float = 0.0
    _gpu_wait_until: float = 0.0
    _waiting: str = ""
    _failure: str = ""  # why the last restart was needed (not what a back-off then waited for)

    # -- transitions, all in one place ------------------------------------------------
    def _go(self, new: State, why: str = "") -> None:
        old = self.state
        if why:
            self.reason = why
        # record first (state file, supervisor.log), publish second: whoever sees the new
        # state in memory can rely on it being on disk already
        self.hooks.on_change(old, new, why)
        self.state = new

    def start(self, now: float) -> None:
        """Spawn the server (the first start, or a restart after a back-off): STARTING."""
        # a reason of its own, so the last back-off's ("waiting for ...") is not shown while starting
        self._begin(self.hooks.spawn(), now, f"restart {self.restarts} after: {self._failure}" if self.restarts else "starting")

    def adopt(self, server: Server, now: float) -> None:
        """Supervise a server that is already running (its supervisor died): no spawn, READY on the next 200."""
        self._begin(server, now, "adopted a running server")

    def _begin(self, server: Server, now: float, why: str) -> None:
        self.server = server
        self.started_at, self.ready_at = now, None
        self._next_probe, self._misses = now, 0
        self._go(State.STARTING, why)

    def stop(self) -> list[int]:
        """STOPPING, the server stopped (a short grace when it never served), then STOPPED; the PIDs killed."""
        if self.state in (State.STOPPED,):
            return []
        # a server that is not serving yet has no request to drain: it gets a short grace before SIGKILL
        grace = self.policy.stop_grace_s if self.state == State.READY else self.policy.stop_grace_unready_s
        self._go(State.STOPPING, "stop requested")
        killed = self.server.stop(grace) if self.server else []
        self._go(State.STOPPED, "stopped")
        return killed

    def _fail(self, now: float, why: str, retryable: bool) -> None:
        if self.server is not None:
            self.server.stop(self.policy.stop_grace_s)  # leave nothing half-alive
        quick = self.ready_at is None or (now - self.ready_at) < self.policy.stable_s
        self.streak = self.streak + 1 if quick else 1
        if not retryable:
            self._go(State.FATAL, f"{why} (configuration error: not retried)")
            return
        if self.streak >= self.policy.max_quick_failures:
            self._go(State.FATAL, f"{why} ({self.streak} failures in a row, giving up)")
            return
        if self.policy.max_restarts is not None and self.restarts >= self.policy.max_restarts:
            self._go(State.FATAL, f"{why} (restart limit {self.policy.max_restarts} reached)")
            return
        self._failure = why
        self._retry_at = now + self.policy.backoff_s(self.streak)
        self._gpu_wait_until = self._retry_at + self.policy.gpu_free_timeout_s
        self._go(State.BACKOFF, why)

    def _explain(self, default: str) -> tuple[str, bool]:
        rc = self.hooks.root_cause()
        if rc is None:
            return default, True
        kind, line, retryable = rc
        return f"{default}: {kind}: {line}", retryable

    # -- the clock tick ---------------------------------------------------------------
    def tick(self, now: float) -> State:
        """One step of the clock, pure but for the hooks: the server's exit, the start-up deadline, the health
        probe (READY on the first 200, BACKOFF after too many misses), the back-off's end (a restart) and the
        quick-failure count (FATAL); the state after it."""
        s = self.state
        if s in (State.STOPPED, State.FATAL, State.STOPPING):
            return s
        if self.server is not None:
            self.server.refresh()
        if s == State.BACKOFF:
            if now < self._retry_at:
                return s
            if not self.hooks.gpu_released() and now < self._gpu_wait_until:
                return s  # wait for the dead instance's GPU memory
            ok, why = self.hooks.cluster_ready()
            if not ok:  # no deadline: a cluster that lost nodes may take a while to get them back
                if why != self._waiting:
                    self._waiting = why
                    self._go(State.BACKOFF, why)
                return s
            self._waiting = ""
            self.restarts += 1
            self.start(now)
            return self.state
        code = self.server.exit_code() if self.server else None
        lost = self.hooks.cluster_lost(fresh=code is not None)  # on an exit: ask the cluster now, not a cached answer
        if code is not None:
            phase = "during start-up" if s == State.STARTING else "after ready"
            why, retryable = self._explain(f"server {exit_status.describe(code)} {phase}")
            if lost:  # the node loss is the cause; the server's exit only follows from it
                why, retryable = f"{lost}; {why}", True
            self._fail(now, why, retryable if s == State.STARTING else True)
            return self.state
        if lost:
            self._fail(now, f"{lost}: server stopped, its placement freed", True)
            return self.state
        if now < self._next_probe:
            return s
        self._next_probe = now + (self.policy.startup_probe_interval_s if s == State.STARTING else self.policy.probe_interval_s)
        status = self.hooks.probe()
        if s == State.STARTING:
            if status == 200:
                self.ready_at = now
                self._misses = 0
                self._go(State.READY, "healthy")
            elif now - self.started_at > self.policy.startup_timeout_s:
                why, _ = self._explain(f"not healthy within the start-up deadline of {self.policy.startup_timeout_s:.0f} s")
                self._fail(now, why, True)
            return self.state
        # READY
        if status == 200:
            self._misses = 0
            if self.ready_at is not None and now - self.ready_at >= self.policy.stable_s:
                self.streak = 0
            return s
        self._misses += 1
        if self._misses >= self.policy.liveness_failures:
            self._fail(now, f"liveness: {self._misses} failed health probes in a row (last: {status or 'no answer'})", True)
        return self.state
