"""Restart policy: capped exponential backoff, reset after a stable period, FATAL after K quick failures."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    startup_timeout_s: float = 900.0  # from spawn to /health 200
    probe_interval_s: float = 2.0  # liveness probes once ready
    startup_probe_interval_s: float = 0.5  # while starting: notice readiness quickly
    probe_timeout_s: float = 5.0
    liveness_failures: int = 3  # consecutive failed probes after ready -> restart
    backoff_initial_s: float = 2.0
    backoff_factor: float = 2.0
    backoff_max_s: float = 60.0
    stable_s: float = 300.0  # ready this long -> the failure streak is forgotten
    max_quick_failures: int = 3  # this many failures in a row, each before stable_s -> FATAL
    stop_grace_s: float = 15.0  # SIGTERM to SIGKILL for a READY server (in-flight requests drain)
    stop_grace_unready_s: float = 1.5  # ... for one still starting or backing off: nothing to drain
    gpu_free_timeout_s: float = 120.0  # wait this long for the dead instance's GPU memory
    max_restarts: int | None = None  # None: no cap beyond the quick-failure rule

    def backoff_s(self, streak: int) -> float:
        """Delay before restart number `streak` (1-based) of the current failure streak."""
        return min(self.backoff_max_s, self.backoff_initial_s * self.backoff_factor ** max(0, streak - 1))
