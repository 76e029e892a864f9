"""Room for one more model: which idle models to put to sleep or stop so that the next one fits, decided from the
estimates alone (a pure function, no processes, no clock).

The rules (llama-swap and Ollama let go of the least recently used model too; neither knows whether the next one
fits): a model with a request in flight, a pinned model, or the model being started is never touched; the least
recently used idle model goes first; a model that can sleep is put to sleep (vLLM's sleep mode level 1: its KV cache
freed, its weights moved to host memory; it keeps `sleeping_bytes` on the device), one that cannot is stopped; a
model already asleep may still be stopped for what it keeps. When even letting go of every idle model would not make
room, nothing is touched and the refusal says why. With GPUs planned one by one (gateway/gpus.py), room is made on
each GPU the model needs (make_room_on): only models on those GPUs are let go, each freeing what it holds on each of
its GPUs; pooled (the CPU build, --memory-budget), the whole budget is one device."""
from __future__ import annotations

from dataclasses import dataclass

GiB = 1 << 30
POOL = "pool"  # the device of a pooled budget


@dataclass(frozen=True)
class Resident:
    """A model the gateway holds now (running or asleep)."""

    name: str
    held_bytes: int  # what it holds of the budget now (asleep: what sleep leaves on the device)
    in_flight: int = 0
    pinned: bool = False
    last_used: float = 0.0  # a monotonic time; smaller is longer ago
    sleeping: bool = False
    can_sleep: bool = False
    sleeping_bytes: int = 0  # what it would still hold asleep
    devices: tuple = (POOL,)  # where it holds held_bytes (on each): GPU indices, or the one pooled budget

    @property
    def idle(self) -> bool:
        return self.in_flight == 0


@dataclass(frozen=True)
class Step:
    """One model let go: `action` is 'sleep' or 'stop'; `frees_bytes` what that gives back."""

    name: str
    action: str
    frees_bytes: int


@dataclass(frozen=True)
class Room:
    """The decision: fits (after `steps`, in order), or a refusal whose reason says what holds the memory."""

    fits: bool
    steps: tuple[Step, ...] = ()
    reason: str = ""
    wait: bool = False  # no room now, but there would be once the models serving requests drain: try again then


def _step(r: Resident) -> Step | None:
    if r.sleeping:
        return Step(r.name, "stop", r.held_bytes) if r.held_bytes > 0 else None
    if r.can_sleep:
        return Step(r.name, "sleep", max(0, r.held_bytes - r.sleeping_bytes))
    return Step(r.name, "stop", r.held_bytes)


def make_room(need_bytes: int, capacity_bytes: int, residents: list[Resident], starting: str | None = None) -> Room:
    """Steps that make `need_bytes` fit in `capacity_bytes` beside the residents, least recently used first."""
    return make_room_on({POOL: need_bytes}, {POOL: capacity_bytes}, residents, starting)


def make_room_on(need: dict, capacity: dict, residents: list[Resident], starting: str | None = None) -> Room:
    """Steps that make need[d] fit in capacity[d] on every device d the model needs, least recently used first;
    only residents on those devices are let go, and only where a device they hold is still short."""
    here = [r for r in residents if any(d in need for d in r.devices)]
    held = {d: sum(r.held_bytes for r in here if d in r.devices) for d in need}
    free = {d: capacity[d] - held[d] for d in need}

    def short() -> list:
        return [d for d in need if need[d] > free[d]]

    if not short():
        return Room(True)
    alone = [d for d in need if need[d] > capacity[d]]
    if alone:
        d = alone[0]
        return Room(False, reason=f"{_on(d)}it needs {need[d] / GiB:.2f} GiB and the whole budget is "
                                  f"{capacity[d] / GiB:.2f} GiB: it cannot fit even alone")

    def done(steps: list[Step]) -> Room:
        return Room(True, tuple(_cheapest(steps)))

    steps: list[Step] = []
    for r in sorted(here, key=lambda r: (r.sleeping is False, r.last_used)):  # asleep ones before awake ones
        if r.name == starting or r.pinned or not r.idle or not any(d in short() for d in r.devices):
            continue
        s = _step(r)
        if s is None or s.frees_bytes <= 0:
            continue
        for step in (s, Step(r.name, "stop", r.sleeping_bytes) if s.action == "sleep" else None):
            if step is None or step.frees_bytes <= 0:  # asleep it could still be stopped for what it keeps
                continue
            steps.append(step)
            for d in r.devices:
                if d in free:
                    free[d] += step.frees_bytes
            if not short():
                return done(steps)
    d = short()[0]
    busy = [r.name for r in here if not r.idle]
    pinned = [r.name for r in here if r.pinned and r.idle]

    def drainable(x) -> int:  # what the models serving requests on x would free once drained
        return sum(s.frees_bytes for r in here if not r.idle and not r.pinned and r.name != starting
                   and x in r.devices for s in [_step(r)] if s is not None)

    why = [f"{_on(d)}it needs {need[d] / GiB:.2f} GiB; {max(0, capacity[d] - held[d]) / GiB:.2f} GiB of the "
           f"{capacity[d] / GiB:.2f} GiB budget is free and letting go of every idle model frees only "
           f"{max(0, free[d] - (capacity[d] - held[d])) / GiB:.2f} GiB more"]
    if busy:
        why.append("serving a request: " + ", ".join(busy))
    if pinned:
        why.append("pinned: " + ", ".join(pinned))
    return Room(False, reason="; ".join(why), wait=bool(busy) and all(need[x] <= free[x] + drainable(x) for x in need))


def _on(device) -> str:
    return "" if device == POOL else f"on GPU {device}: "


def _cheapest(steps: list[Step]) -> list[Step]:
    """The steps in order, less any later one that turned out unnecessary: a model slept then stopped keeps only
    the stop; a sleep made redundant by a stop after it stays (least recently used first is the rule)."""
    out: list[Step] = []
    for s in steps:
        if s.action == "stop" and out and out[-1].name == s.name:
            out[-1] = Step(s.name, "stop", out[-1].frees_bytes + s.frees_bytes)
        else:
            out.append(s)
    return out
