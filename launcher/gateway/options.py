"""How the gateway waits, retries and makes room: one Options per gateway, from `launcher serve`'s flags."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .gpus import Homes


@dataclass
class Options:
    """How the gateway waits and makes room."""

    capacity_bytes: int  # the memory budget the models share (GPU: the devices'; CPU: host memory)
    gpu: bool = False  # models run on GPUs (sleep mode available) or on the CPU build (stopped to make room)
    queue_max: int = 64  # requests waiting for one model to start; more get 503 at once
    queue_timeout_s: float = 600.0  # how long a request waits for its model to start before 503 + Retry-After
    start_timeout_s: float = 900.0  # a start's own deadline (the supervisor's)
    failed_retry_s: float = 30.0  # after a failed start or FATAL, requests get its cause this long, then a new try
    # what a model asleep keeps on the device where its plan does not say (asleep_of): its CUDA context, graph pool
    # and non-torch memory stay; measured 1.81-1.91 GiB per 8B model (H100 80GB, vLLM 0.26.0, 2026-12-06;
    # docs/gateway.md)
    sleeping_bytes: int = 2 << 30
    # fair switching between models that do not fit together (docs/gateway.md): a model up for less than min_stay_s
    # is not let go for another (against thrashing); a model that has waited max_wait_s for room held by busy models
    # makes the one up longest yield: no new request admitted to it (they wait for its next turn), those in flight
    # finish, then it is let go
    # what sleeping models may keep in the host's memory (their weights): the least recently used sleeper is stopped
    # rather than the host running out; None: not limited (the CPU build, which has no sleep)
    host_budget_bytes: int | None = None
    min_stay_s: float = 10.0
    max_wait_s: float = 30.0
    # GPUs planned one by one (gateway/gpus.py): each model's home and share, room made per GPU; None: one pooled
    # budget (capacity_bytes: the CPU build, --memory-budget)
    homes: Homes | None = None
    # a model's first sleep paid once it has been idle this long after its start (first_sleep.py); None: not paid early
    first_sleep_after_s: float | None = 5.0
