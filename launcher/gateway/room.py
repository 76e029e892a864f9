"""Making room in the pool, as functions of the pool and its models: each model as placement sees it, the models
let go for another (sleep where its weights fit in host memory, else stop), fair switching (a minimum stay, and a
model that waited long enough makes the one up longest yield), and the host memory sleepers keep."""
from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING, Protocol

from .gpus import plan_one, room_on_gpus
from .lifecycle import HOLDING, Phase
from .model import GatewayError
from .placement import POOL, Resident, make_room

if TYPE_CHECKING:
    from .metrics import GatewayMetrics
    from .model import Backend
    from .options import Options


class Backends(Protocol):
    """What these functions use of the pool (backends.Backends)."""

    opts: Options
    metrics: GatewayMetrics
    by_name: dict[str, Backend]
    closing: bool

    def housekeeping_error(self, b: Backend | None, job: str, e: BaseException) -> None: ...


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
                    min(need, kept), devices=b.gpus if opts.homes is not None and b.gpus else (POOL,))


def kept_asleep(b: Backend, opts: Options) -> int:
    """What b keeps on the device asleep (on each of its GPUs where they are planned one by one): as planned, else
    the measured default."""
    if b.asleep_bytes is None:
        return opts.sleeping_bytes
    return b.asleep_bytes // len(b.gpus) if opts.homes is not None and b.gpus else b.asleep_bytes


async def make_room_for(pool: Backends, b: Backend) -> bool:
    """Let go of what placement says; False when only models serving requests hold the room (wait for them)."""
    residents = [r for o in pool.by_name.values() if o is not b and (r := resident_of(o, pool.opts)) is not None]
    own = kept_asleep(b, pool.opts) if b.life.phase == Phase.SLEEPING else 0  # asleep it holds some of it already
    homes = pool.opts.homes
    if homes is None:
        room = make_room(max(0, b.need_bytes - own), pool.opts.capacity_bytes - own, residents, starting=b.name)
    elif b.name not in homes.home and not b.gpus and (b.name in homes.why_not or plan_one(homes, b.entry, b.need_bytes)
                                                       or b.name not in homes.home):
        raise GatewayError(503, f"no room for `{b.name}`: the plan placed it on no GPU: {homes.why_not.get(b.name)}",
                           retry_after_s=30, code="no_room")
    else:
        b.need_bytes = homes.per_gpu.get(b.name, b.need_bytes)  # per GPU, as planned
        room, b.gpus = room_on_gpus(homes, b, b.need_bytes, own, residents)
        b.share_bytes = homes.share.get(b.name)
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
    budget = pool.opts.host_budget_bytes
    weights = 0 if b.slept else b.host_bytes or 0  # once slept, its pinned memory is held (and counted) already
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
    """The pinned host memory the models' servers hold now (their weights, as planned): asleep, and awake after a
    sleep (Backend.slept: vLLM's cumem allocator backs the weights up in pinned memory, torch keeps it cached after the
    wake until the process ends; read from vLLM 0.26 device_allocator/cumem.py, benchmarks/gpu/first_sleep.py
    measures it)."""
    return sum(o.host_bytes or 0 for o in pool.by_name.values()
               if o.life.phase == Phase.SLEEPING or o.slept and o.life.phase in HOLDING)


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
    """The busy models, up longest first, that make room for b once drained (none pinned; with GPUs planned one by
    one, those on b's GPUs): asked to yield."""
    now, homes = time.monotonic(), pool.opts.homes
    where = (b.gpus or homes.home.get(b.name) or ()) if homes is not None else (POOL,)
    cap = homes.capacity if homes is not None else {POOL: pool.opts.capacity_bytes}
    held = [(o, r) for o in pool.by_name.values() if o is not b and (r := resident_of(o, pool.opts, now)) is not None]
    free = {d: cap[d] - sum(r.held_bytes for _, r in held if d in r.devices) for d in where}
    asked = []
    running = [(o, r.devices) for o, r in held if o.life.phase == Phase.RUNNING and not o.entry.pinned
               and not o.yielding and any(d in where for d in r.devices)]
    for o, devices in sorted(running, key=lambda x: x[0].life.since):
        if all(f >= (b.need_bytes or 0) for f in free.values()):
            break
        o.yielding = True
        asked.append(o)
        for d in devices:
            if d in free:
                free[d] += o.need_bytes or 0
        print(f"gateway: {o.name} yields to {b.name} (waited {waited_s:.0f} s for room)", file=sys.stderr, flush=True)
        pool.metrics.evicted(o.name, "yield")
    return asked


def end_yield(b: Backend) -> None:
    """b's yield is over (it was let go, or the model it yielded for gave up): its held requests go on."""
    if b.yielding:
        b.yielding = False
        b.turn.set()
        b.turn = asyncio.Event()
