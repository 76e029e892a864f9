"""Serve a prepared launch in-process for the duration of a block (smoke, bench, tune)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import NotReady

if TYPE_CHECKING:
    import threading

    from .launching import Prepared
    from .launching.start import OnEvent


class served:
    """`with served(prep, timeout_s=...) as sr:` starts the server, waits until READY (or raises
    NotReady with vLLM's root cause), and always stops it on the way out. `self.run` stays
    available afterwards, so callers can check what is left of the process tree."""

    def __init__(self, prep: Prepared, *, timeout_s: float, on_event: OnEvent | None = None) -> None:
        self.prep, self.timeout_s, self.on_event = prep, timeout_s, on_event
        self.run = None
        self._thread: threading.Thread | None = None

    def __enter__(self):
        from .launching.inprocess import Launch, short_policy
        from .supervisor.machine import State

        prep = self.prep
        try:
            self.policy = short_policy(prep.spec, self.timeout_s, max_quick_failures=1)
        except BaseException:
            prep.release_locks()
            raise
        self.launch = Launch.start(prep, self.policy, on_event=self.on_event)
        sr = self.run = self.launch.run
        try:
            if self.launch.wait_ready(self.timeout_s, poll_s=0.2) != State.READY:
                if sr.sup.state == State.FATAL or not self.launch.alive:
                    raise NotReady(self.launch.failure())
                cause = sr.log.root_cause()
                why = f"not ready within the deadline of {self.timeout_s:.0f} s"
                raise NotReady(why + (f" [{cause[0]}: {cause[1]}]" if cause else ""))
        except BaseException:
            self._stop()
            raise
        return sr

    def __exit__(self, *exc):
        self._stop()
        return False

    def _stop(self):
        self.launch.stop(self.policy.stop_grace_s + 30)

    def leftover_pids(self) -> list[int]:
        """Processes of this launch still alive after the block (each is killed as well)."""
        tree = self.run.tree if self.run else None
        if tree is None:
            return []
        left = [r.pid for r in tree.members()]
        if left:
            tree.stop(1.0)
        return left
