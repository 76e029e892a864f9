"""Serve a prepared launch in-process for the duration of a block (smoke, bench, tune)."""
from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from .errors import NotReady

if TYPE_CHECKING:
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
        from .launching import policy_for, record_launch, server_run
        from .supervisor.machine import State

        prep = self.prep
        record_launch(prep)
        try:
            self.policy = replace(policy_for(prep.spec), startup_timeout_s=self.timeout_s, max_quick_failures=1)
            sr = self.run = server_run(prep, self.policy, on_event=self.on_event)
        except BaseException:
            prep.release_locks()
            raise
        self._thread = threading.Thread(target=sr.run, kwargs={"install_signals": False}, daemon=True)
        self._thread.start()
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < self.timeout_s and sr.sup.state not in (State.READY, State.FATAL) \
                    and self._thread.is_alive():
                time.sleep(0.2)
            if sr.sup.state != State.READY:
                cause = sr.log.root_cause()
                if sr.sup.state == State.FATAL or not self._thread.is_alive():
                    why = sr.sup.reason
                else:
                    why = f"not ready within the deadline of {self.timeout_s:.0f} s"
                raise NotReady(why + (f" [{cause[0]}: {cause[1]}]" if cause and cause[1] not in (why or "") else ""))
        except BaseException:
            self._stop()
            raise
        return sr

    def __exit__(self, *exc):
        self._stop()
        return False

    def _stop(self):
        try:
            self.run.request_stop()
            self._thread.join(timeout=self.policy.stop_grace_s + 30)
        finally:
            if self.prep.lock is not None:
                self.prep.lock.release()

    def leftover_pids(self) -> list[int]:
        """Processes of this launch still alive after the block (each is killed as well)."""
        tree = self.run.tree if self.run else None
        if tree is None:
            return []
        left = [r.pid for r in tree.members()]
        if left:
            tree.stop(1.0)
        return left
