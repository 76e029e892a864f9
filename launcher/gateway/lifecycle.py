"""One model's life in the gateway: a phase with a table of the moves allowed from it (supervisord's labelled
transitions, llama-swap's checked state moves), fed by the gateway's own actions (start, sleep, wake, stop) and by
the supervisor of the model's launch (READY, BACKOFF, FATAL, its end), so that it never disagrees with `launcher ps`:

    stopped --start--> starting --READY--> running --BACKOFF--> restarting --READY--> running
    running --sleep--> sleeping --wake--> running          any live phase --stop--> stopping --> stopped
    starting/running/restarting/sleeping --FATAL or a failed start--> failed --retry window over, a request--> starting

Pure: no process, no clock of its own (`now` is handed in), no I/O; tested move by move in tests/test_gateway_lifecycle.py."""
from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from ..runs import RunState


class Phase(str, enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"  # its supervisor restarts a server that died (BACKOFF, then STARTING again)
    SLEEPING = "sleeping"
    STOPPING = "stopping"
    FAILED = "failed"  # its start failed or its supervisor gave up (FATAL): `cause` says why


MOVES: dict[Phase, frozenset[Phase]] = {
    # RUNNING: a server adopted from an earlier gateway; FAILED: a start refused before it began (no room)
    Phase.STOPPED: frozenset({Phase.STARTING, Phase.RUNNING, Phase.FAILED}),
    Phase.STARTING: frozenset({Phase.RUNNING, Phase.FAILED, Phase.STOPPING}),
    Phase.RUNNING: frozenset({Phase.SLEEPING, Phase.RESTARTING, Phase.FAILED, Phase.STOPPING}),
    Phase.RESTARTING: frozenset({Phase.RUNNING, Phase.FAILED, Phase.STOPPING}),
    Phase.SLEEPING: frozenset({Phase.RUNNING, Phase.FAILED, Phase.STOPPING}),
    Phase.STOPPING: frozenset({Phase.STOPPED}),
    Phase.FAILED: frozenset({Phase.STARTING, Phase.STOPPING, Phase.STOPPED}),
}
# phases that hold memory on the device (planned as resident by placement)
HOLDING = frozenset({Phase.STARTING, Phase.RUNNING, Phase.RESTARTING, Phase.SLEEPING, Phase.STOPPING})


class IllegalMove(RuntimeError):
    """A move the table does not allow: a bug in the gateway, never a user's doing."""


@dataclass
class Lifecycle:
    name: str
    phase: Phase = Phase.STOPPED
    cause: str | None = None  # why it failed (FATAL's reason, a start's root cause)
    failed_at: float = 0.0
    since: float = 0.0  # when it entered its phase (a monotonic time): how long it has been running, say
    history: list[tuple[float, str, str, str]] = field(default_factory=list)  # (now, old, new, why), the last 20
    on_move: Callable[[Phase, Phase, str], None] = lambda old, new, why: None

    def move(self, to: Phase, why: str, now: float) -> None:
        """Go to `to` if the table allows it (IllegalMove otherwise); a move to the same phase is nothing."""
        if to == self.phase:
            return
        if to not in MOVES[self.phase]:
            raise IllegalMove(f"{self.name}: {self.phase.value} -> {to.value} is not a move ({why})")
        old, self.phase, self.since = self.phase, to, now
        if to == Phase.FAILED:
            self.cause, self.failed_at = why, now
        elif to in (Phase.RUNNING, Phase.STARTING):
            self.cause = None
        self.history = [*self.history, (now, old.value, to.value, why)][-20:]
        self.on_move(old, to, why)

    def fail(self, why: str, now: float) -> None:
        """Failed with this cause (a failed model failing again gets the new cause and a new retry window)."""
        if self.phase == Phase.FAILED:
            self.cause, self.failed_at = why, now
            self.history = [*self.history, (now, "failed", "failed", why)][-20:]
            return
        self.move(Phase.FAILED, why, now)

    def follow(self, supervisor: str, reason: str, alive: bool, now: float) -> None:
        """The supervisor's state (its RunState value) after the gateway's last look: READY brings a start or a
        restart to running, BACKOFF (or STARTING again) a running model to restarting, FATAL or a supervision that
        ended without the gateway asking to failed with its reason."""
        p = self.phase
        if p in (Phase.STOPPED, Phase.STOPPING, Phase.FAILED):
            return  # the gateway's own doing, or nothing to follow
        if supervisor == RunState.FATAL or (not alive and supervisor != RunState.READY):
            self.move(Phase.FAILED, reason or f"its supervisor ended ({supervisor})", now)
        elif supervisor == RunState.READY and p in (Phase.RESTARTING,):
            self.move(Phase.RUNNING, "its server is ready again", now)
        elif supervisor in (RunState.BACKOFF, RunState.STARTING) and p in (Phase.RUNNING, Phase.SLEEPING):
            self.move(Phase.RESTARTING, reason or "its server is restarting", now)

    def retry_due(self, now: float, retry_s: float) -> bool:
        """A failed model's retry window is over: the next request may try a fresh start."""
        return self.phase == Phase.FAILED and now - self.failed_at >= retry_s
