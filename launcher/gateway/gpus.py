"""The gateway on GPUs planned one by one (docs/placement.md): each model's home from the plan of the models file on
the GPUs NVML sees when the gateway starts (fleet/pack.py: the GPUs it goes on, its share of each and what it holds
there awake), room made on those GPUs only (placement.make_room_on), and a model moved to other GPUs only when its
own have no room even after letting go of what may be let go there, and others have."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING

from .devices import node_of
from .placement import Room, make_room_on

if TYPE_CHECKING:
    from ..gpu import GpuInfo
    from ..models_file import ModelEntry
    from .placement import Resident


@dataclass
class Homes:
    """The plan the gateway follows: per GPU index what its models may hold (its free memory when the gateway
    started), per model its planned GPUs, its share of each (--gpu-memory-budget) and what it holds on each awake."""

    capacity: dict[int, int]
    home: dict[str, tuple[int, ...]] = field(default_factory=dict)
    share: dict[str, int] = field(default_factory=dict)
    per_gpu: dict[str, int] = field(default_factory=dict)
    why_not: dict[str, str] = field(default_factory=dict)  # a model placed on no GPU: the plan's reason
    kind: tuple[str, int] = ("", 0)  # the smallest GPU's name and total: what a model added later is planned for
    by_memory: bool = False  # the devices are a Ray cluster's nodes, each holding models by memory (nodes.py)
    on_nodes: bool = False  # the devices are GPUs of a Ray cluster's nodes (devices.gpu_on_node; nodes.py)

    def home_alone(self, name: str, need: int) -> bool:
        """Its home on the largest device that holds it alone (it waits there for room); False where none does."""
        alone = [d for d in self.capacity if self.capacity[d] >= need]
        if not alone:
            return False
        self.home[name] = (max(alone, key=lambda d: (self.capacity[d], d)),)
        self.why_not.pop(name, None)
        return True

    def others(self, home: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Every other set of as many GPUs, lowest indices first; on a Ray cluster's nodes, GPUs of one node (a
        server runs on one node)."""
        return [c for c in combinations(sorted(self.capacity), len(home))
                if c != tuple(home) and len({node_of(d) for d in c}) == 1]

    def first_gpus(self, n: int, need: int = 0) -> tuple | None:
        """The lowest n GPUs of one host or node that each offer `need`: where a model added later, or one whose node
        was lost, is homed (room_on_gpus moves it to others with room); None where no node has n such."""
        by_node: dict[str, list] = {}
        for d in sorted(self.capacity):
            if self.capacity[d] >= need:
                by_node.setdefault(node_of(d), []).append(d)
        return next((tuple(ds[:n]) for ds in by_node.values() if len(ds) >= n), None)


def plan_homes(entries: list[ModelEntry], gpus: list[GpuInfo], vllm_version: str | None = None) -> Homes:
    """Each model's home as `launcher plan` places it on these GPUs (their free memory now as what they offer)."""
    from ..fleet.needs import need_of
    from ..fleet.pack import Gpu, pack

    smallest = min(gpus, key=lambda g: g.total_bytes)
    needs = [need_of(e, smallest.name, smallest.total_bytes, i, vllm_version) for i, e in enumerate(entries)]
    h = Homes({g.index: g.free_bytes for g in gpus}, kind=(smallest.name, smallest.total_bytes))
    for p in pack(needs, [Gpu("local", g.index, g.name, g.free_bytes) for g in gpus]):
        if p.gpus:
            h.home[p.name], h.share[p.name], h.per_gpu[p.name] = tuple(p.gpus), p.share_bytes, p.bytes_per_gpu
        else:
            h.why_not[p.name] = p.reason
    return h


def plan_one(homes: Homes, entry: ModelEntry, need: int | None = None) -> None:
    """A model added while the gateway runs (the models file read again, `launcher gateway add`): its footprint
    planned as the others were; its home the lowest GPUs, which room_on_gpus leaves for others with room. On a Ray
    cluster's nodes (by_memory): what it needs (need), on the largest node that holds it."""
    from ..fleet.needs import need_of

    if homes.by_memory:
        homes.per_gpu[entry.name] = need or 0
        if not homes.home_alone(entry.name, need or 0):
            homes.why_not[entry.name] = f"needs {(need or 0) / 2**30:.2f} GiB: more than any node offers"
        return

    n = need_of(entry, homes.kind[0], homes.kind[1], 0)
    if not n.fits_alone:
        homes.why_not[entry.name] = n.reason
        return
    first = homes.first_gpus(n.gpus, n.bytes_per_gpu)
    if first is None:
        homes.why_not[entry.name] = (f"needs {n.gpus} GPU(s) of one node offering {n.bytes_per_gpu / 2**30:.2f} GiB "
                                     "each; no node has as many")
        return
    homes.home[entry.name] = first
    homes.share[entry.name], homes.per_gpu[entry.name] = n.share_bytes, n.bytes_per_gpu


def room_on_gpus(homes: Homes, b, need: int, own: int, residents: list[Resident]) -> tuple[Room, tuple]:
    """Room for b (a model.Backend) on its GPUs (where it runs or sleeps, else its home), else, for a model not
    asleep there, on the other GPUs that need the fewest models let go; the room and the GPUs it is for."""
    where = b.gpus if b.gpus and set(b.gpus) <= set(homes.capacity) else homes.home[b.name]

    def on(gpus: tuple[int, ...], held: int) -> Room:
        return make_room_on({g: max(0, need - held) for g in gpus}, {g: homes.capacity[g] - held for g in gpus},
                            residents, starting=b.name)

    room = on(where, own)
    if room.fits or room.wait or own:
        return room, where
    moves = [(len(r.steps), g, r) for g in homes.others(where) if (r := on(g, 0)).fits]
    if not moves:
        return room, where
    _, gpus, best = min(moves, key=lambda m: m[0])
    print(f"gateway: {b.name}: no room on GPU {','.join(map(str, where))} ({room.reason}); "
          f"started on GPU {','.join(map(str, gpus))} instead", file=sys.stderr, flush=True)
    return best, gpus
