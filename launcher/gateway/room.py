"""Making room in the pool, as functions of the pool and its models: each model as placement sees it, the models
let go for another (sleep where its weights fit in host memory, else stop), fair switching (a minimum stay, and a
model that waited long enough makes the one up longest yield), and the host memory sleepers keep."""
from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING, Protocol

from .lifecycle import HOLDING, Phase
from .model import GatewayError
from .placement import Resident, make_room

if TYPE_CHECKING:
    from .metrics import GatewayMetrics
    from .model import Backend
    from .options import Options


class Backends(Protocol):
    """What these functions use of the pool (backends.Backends)."""

    opts: Options
    metrics: GatewayMetrics
    by_name: dict[str, Backend]


def resident_of(b: Backend, opts: Options, now: float | None = None) -> Resident | None:
    """b as placement sees it (None when it holds nothing). Starting, restarting or stopping, it holds its room and
    is not to be let go (counted busy); running for less than min_stay_s too, unless it was asked to yield."""
    if b.life.phase not in HOLDING:
        return None
    now = time.monotonic() if now is None else now
    need = b.need_bytes or 0
    asleep = b.life.phase == Phase.SLEEPING
    settled = b.life.phase in (Phase.RUNNING, Phase.SLEEPING)
    staying = b.life.phase == Phase.RUNNING and not b.yielding and now - b.life.since < opts.min_stay_s
    kept = kept_asleep(b, opts)
    busy = b.in_flight + b.waiting + (0 if settled else 1) + int(staying)
    return Resident(b.name, kept if asleep else need, busy, b.entry.pinned, b.last_used, asleep, opts.gpu,
                    min(need, kept))


def kept_asleep(b: Backend, opts: Options) -> int:
    """What b keeps on the device asleep: as planned, else the measured default."""
    return b.asleep_bytes if b.asleep_bytes is not None else opts.sleeping_bytes


async def make_room_for(pool: Backends, b: Backend) -> bool:
    """Let go of what placement says; False when only models serving requests hold the room (wait for them)."""
    residents = [r for o in pool.by_name.values() if o is not b and (r := resident_of(o, pool.opts)) is not None]
    own = kept_asleep(b, pool.opts) if b.life.phase == Phase.SLEEPING else 0  # asleep it holds some of it already
    room = make_room(max(0, b.need_bytes - own), pool.opts.capacity_bytes - own, residents, starting=b.name)
    if not room.fits and room.wait:
        return False
    if not room.fits:
        raise GatewayError(503, f"no room for `{b.name}`: {room.reason}", retry_after_s=30, code="no_room")
    for step in room.steps:
        other = pool.by_name[step.name]
        pool.metrics.evicted(other.name, step.action)
        if step.action == "sleep":
            await sleep_or_stop(pool, other, f"room for {b.name}")
        else:
            await other.stop(f"room for {b.name}")
        end_yield(other)
    return True


async def sleep_or_stop(pool: Backends, b: Backend, why: str) -> str:
    """Put b to sleep where its weights fit in the host memory sleepers may keep (--host-memory-budget), after
    stopping the least recently used sleepers if they must; stop it where they do not fit even then."""
    budget, weights = pool.opts.host_budget_bytes, b.host_bytes or 0
    if budget is not None and weights:
        sleepers = sorted((o for o in pool.by_name.values() if o is not b and o.life.phase == Phase.SLEEPING
                           and not o.entry.pinned and o.waiting == 0), key=lambda o: o.last_used)
        while sleepers and host_asleep_bytes(pool) + weights > budget:
            o = sleepers.pop(0)
            await o.stop(f"host memory for {b.name} asleep")
            pool.metrics.evicted(o.name, "host")
        if host_asleep_bytes(pool) + weights > budget:
            await b.stop(f"{why}; asleep its weights ({weights / 2**30:.1f} GiB) would not fit in host memory")
            return "stop"
    await b.sleep(why)
    pool.metrics.slept(b.name)
    return "sleep"


def host_asleep_bytes(pool: Backends) -> int:
    """What the sleeping models keep in the host's memory now (their weights, as planned)."""
    return sum(o.host_bytes or 0 for o in pool.by_name.values() if o.life.phase == Phase.SLEEPING)


# fair switching
async def hold(pool: Backends, b: Backend) -> None:
    """A request for b while b yields: it waits for b's next turn (not refused), up to the queue timeout."""
    b.held += 1
    try:
        await asyncio.wait_for(b.turn.wait(), pool.opts.queue_timeout_s)
    except asyncio.TimeoutError:
        raise GatewayError(503, f"`{b.name}` is making room for another model.", retry_after_s=30,
                           code="model_yielding") from None
    finally:
        b.held -= 1


def ask_to_yield(pool: Backends, b: Backend, waited_s: float) -> list[Backend]:
    """The busy models, up longest first, that make room for b once drained (none pinned): asked to yield."""
    now = time.monotonic()
    held = sum(r.held_bytes for o in pool.by_name.values() if o is not b
               and (r := resident_of(o, pool.opts, now)) is not None)
    free = pool.opts.capacity_bytes - held
    asked = []
    running = [o for o in pool.by_name.values() if o is not b and o.life.phase == Phase.RUNNING
               and not o.entry.pinned and not o.yielding]
    for o in sorted(running, key=lambda o: o.life.since):
        if free >= (b.need_bytes or 0):
            break
        o.yielding = True
        asked.append(o)
        free += o.need_bytes or 0
        print(f"gateway: {o.name} yields to {b.name} (waited {waited_s:.0f} s for room)", file=sys.stderr, flush=True)
        pool.metrics.evicted(o.name, "yield")
    return asked


def end_yield(b: Backend) -> None:
    """b's yield is over (it was let go, or the model it yielded for gave up): its held requests go on."""
    if b.yielding:
        b.yielding = False
        b.turn.set()
        b.turn = asyncio.Event()
