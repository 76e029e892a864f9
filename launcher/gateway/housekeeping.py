"""The gateway's own jobs, every second: follow each model's supervisor, let go of models idle past their ttl, write
gateway.json, and with --watch read the models file again when it changed. A failure of one job for one model is
counted (launcher_gateway_housekeeping_errors_total) and logged, and the others go on: none of them is ever fatal
to the gateway, and none waits on a start under way."""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from .lifecycle import Phase

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .backends import Backends
    from .model import Backend


async def run(pool: Backends, write_record: Callable[[], None], watch_tick: Callable[[], Awaitable] | None = None,
              every_s: float = 1.0) -> None:
    """Until cancelled (the gateway stops). watch_tick: --watch's look at the models file."""
    while True:
        for b in list(pool.by_name.values()):
            try:
                b.sync()
            except Exception as e:  # noqa: BLE001
                pool.housekeeping_error(b, "follow", e)
        await expire_idle(pool, time.monotonic())
        try:
            write_record()
        except Exception as e:  # noqa: BLE001
            pool.housekeeping_error(None, "record", e)
        if watch_tick is not None:
            await watch_tick()
        await asyncio.sleep(every_s)


async def expire_idle(pool: Backends, now: float) -> list[str]:
    """Models idle past their own ttl put to sleep (GPU) or stopped; the names let go. One model's failure is counted
    and logged and never stops the others' expiry. Waits on the pool's `placing` only while room is decided (never
    held across a start)."""
    done = []
    for b in list(pool.by_name.values()):
        if asleep_past_ttl(b, now):
            try:
                async with pool.placing:
                    if asleep_past_ttl(b, now):
                        await b.stop(f"asleep for {b.entry.sleep_ttl_s:.0f} s (sleep_ttl)")
                        pool.metrics.evicted(b.name, "sleep_ttl")
                        done.append(b.name)
            except Exception as e:  # noqa: BLE001
                pool.housekeeping_error(b, "sleep_ttl", e)
            continue
        if not idle_past_ttl(b, now):
            continue
        try:
            async with pool.placing:
                if not idle_past_ttl(b, now):
                    continue
                await pool.let_go(b, f"idle for {b.entry.ttl_s:.0f} s (ttl)")
            pool.metrics.evicted(b.name, "ttl")
            done.append(b.name)
        except Exception as e:  # noqa: BLE001 - the gateway keeps serving; the error is counted and said
            pool.housekeeping_error(b, "ttl", e)
    return done


def idle_past_ttl(b: Backend, now: float) -> bool:
    """A model's own ttl: running, not pinned, nothing in flight or waiting, idle longer than its ttl."""
    ttl = b.entry.ttl_s
    return bool(ttl and b.life.phase == Phase.RUNNING and not b.entry.pinned
                and b.in_flight + b.waiting == 0 and now - b.last_used > ttl)


def asleep_past_ttl(b: Backend, now: float) -> bool:
    """Asleep longer than its sleep_ttl: stopped, so that what it keeps on the device and in host memory is freed."""
    ttl = b.entry.sleep_ttl_s
    return bool(ttl and b.life.phase == Phase.SLEEPING and b.waiting == 0 and now - b.life.since > ttl)
