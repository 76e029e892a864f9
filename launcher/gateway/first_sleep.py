"""A model's first sleep paid while it is idle after its start, not by the request that makes room.

vLLM's first sleep of a server is slow (13-18 s for an 8B model on an H100, vLLM 0.26.0, docs/gateway.md): its cumem
allocator backs each weight up in freshly allocated pinned host memory (device_allocator/cumem.py sleep:
torch.empty(pin_memory=True), each rounded up to a power of two), and page-locking 19 GB takes that long. The wake frees that memory into torch's
pinned-memory cache, which keeps it, so later sleeps take it from there. Paying the first sleep (a sleep and a wake)
once the model has been idle for `after_s` moves that cost off the request path. Only where a switch may come (the
models do not all fit awake together), where the host may keep its weights (--host-memory-budget, counting what
other servers keep pinned), and never under a request: one that comes meanwhile waits for the wake (Backend.paying),
and the model counts as busy (nothing lets it go, no ttl)."""
from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING

from .lifecycle import Phase
from .room import host_asleep_bytes

if TYPE_CHECKING:
    from .model import Backend
    from .room import Backends


def may_pay(pool: Backends, b: Backend) -> bool:
    """Idle, running, never slept, its weights fit beside the pinned memory the other servers hold, and it may have
    to sleep at all: not where every model of the pool fits awake together."""
    budget = pool.opts.host_budget_bytes
    return (b.life.phase == Phase.RUNNING and not b.slept and b.in_flight == 0 and b.waiting == 0 and not b.yielding
            and not b.draining and bool(b.host_bytes) and budget is not None
            and host_asleep_bytes(pool) + (b.host_bytes or 0) <= budget and may_switch(pool))


def may_switch(pool: Backends) -> bool:
    """Whether some model may have to make room for another: more than one model, and not all of them sized and
    fitting the budget together (per GPU where GPUs are planned one by one: the plan's footprints on each)."""
    models = list(pool.by_name.values())
    if len(models) < 2:
        return False
    homes = pool.opts.homes
    if homes is not None:
        held: dict = {}
        for m in models:
            for g in homes.home.get(m.name, ()):
                held[g] = held.get(g, 0) + homes.per_gpu.get(m.name, 0)
        return any(m.name not in homes.home for m in models) or any(held[g] > homes.capacity[g] for g in held)
    return any(m.need_bytes is None for m in models) or sum(m.need_bytes for m in models) > pool.opts.capacity_bytes


async def pay_when_idle(pool: Backends, b: Backend, after_s: float) -> float | None:
    """Sleep and wake b once it has been idle for after_s (checked until it sleeps, stops or pays); the seconds the
    sleep took, or None where it was not paid."""
    while b.life.phase == Phase.RUNNING and not b.slept and not pool.closing:
        await asyncio.sleep(max(0.05, after_s - (time.monotonic() - b.last_used)))
        if b.in_flight or b.waiting or time.monotonic() - b.last_used < after_s or b.life.phase != Phase.RUNNING:
            continue
        if not may_pay(pool, b):
            return None  # idle, but the host may not keep its weights beside the others' now
        b.paying, b.in_flight = asyncio.Event(), b.in_flight + 1
        try:
            t0 = time.monotonic()
            await b.call("/sleep?level=1")
            took = time.monotonic() - t0
            await b.call("/wake_up")
            b.slept = True
            print(f"gateway: {b.name}: first sleep paid while idle ({took:.1f} s, woken in "
                  f"{time.monotonic() - t0 - took:.1f} s)", file=sys.stderr, flush=True)
            pool.metrics.first_sleep(b.name, took)
            return took
        except Exception as e:  # noqa: BLE001 - a failed prepayment is counted; the model goes on as it was
            pool.housekeeping_error(b, "first sleep", e)
            return None
        finally:
            b.in_flight -= 1
            b.paying.set()
            b.paying = None
    return None
