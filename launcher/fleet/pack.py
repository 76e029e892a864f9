"""Where each model of a models file goes: per-GPU bin packing from per-GPU footprints (a pure function: no
processes, no NVML, no estimator; tested by hand in tests/test_fleet.py).

The rules: a model spans `gpus` GPUs of one node (tensor x pipeline parallel) and holds `bytes_per_gpu` on each (its
share, what vLLM takes beside it, its CUDA context), never more than a GPU has left; a pipeline-parallel model that
no node holds whole goes stage by stage over several nodes (each stage's tensor-parallel GPUs within one node). Pinned models are placed first,
then preloaded ones, then the rest largest first (first-fit decreasing, each on the GPUs it fills best: the tightest
that hold it, so that large gaps stay free for large models). A model that finds no room awake is not started with
the others: it gets a home, the GPUs where it fits once models there that are not pinned are let go (asleep or
stopped, least recently used first), those where the least must be let go, and the plan names them. One that fits on no GPU even then is not placed, and
says why."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Gpu:
    node: str
    index: int
    name: str
    total_bytes: int


@dataclass(frozen=True)
class Need:
    """One model as it would run on GPUs of one kind (fleet/needs.py computes it from the estimate)."""

    name: str
    gpus: int = 1  # GPUs of one node it spans
    bytes_per_gpu: int = 0  # what it holds on each when awake
    share_bytes: int = 0  # of that, the share vLLM sizes itself to (its --gpu-memory-budget per GPU)
    pinned: bool = False
    preload: bool = False
    reason: str = ""  # set when it fits on no GPU of this kind at all (the estimate's reason and advice)
    order: int = 0  # its place in the models file (ties keep the file's order)
    stages: int = 1  # pipeline-parallel stages: each `gpus // stages` GPUs of one node, the stages on any nodes

    @property
    def fits_alone(self) -> bool:
        return not self.reason and self.bytes_per_gpu > 0


@dataclass
class Placement:
    name: str
    node: str | None = None
    gpus: list[int] = field(default_factory=list)
    bytes_per_gpu: int = 0
    share_bytes: int = 0  # its --gpu-memory-budget per GPU when started
    awake: bool = False
    reason: str = ""
    shares_with: list[str] = field(default_factory=list)  # awake models on its GPUs that waking it lets go
    # a pipeline-parallel model over several nodes: each stage's node and GPUs (`node` and `gpus` are the first's)
    stages: list[dict] = field(default_factory=list)

    def where(self) -> list[tuple[str, int]]:
        """Every (node, GPU index) it is placed on."""
        if self.stages:
            return [(s["node"], i) for s in self.stages for i in s["gpus"]]
        return [(self.node, i) for i in self.gpus]


def pack(needs: list[Need], gpus: list[Gpu]) -> list[Placement]:
    """A placement for every need, in the models file's order (the needs computed for GPUs of these sizes)."""
    free = {(g.node, g.index): g.total_bytes for g in gpus}
    total = dict(free)
    holders: dict[tuple[str, int], list[Need]] = {k: [] for k in free}
    pinned_on: dict[tuple[str, int], int] = {k: 0 for k in free}
    out: dict[str, Placement] = {}
    order = sorted(needs, key=lambda n: (not n.pinned, not n.preload, -(n.bytes_per_gpu * n.gpus), n.order))
    for n in order:
        if not n.fits_alone:
            out[n.name] = Placement(n.name, reason=n.reason)
            continue
        chosen = _tightest(free, n) or _across_nodes(free, n)
        if chosen is not None:
            for k in chosen:
                free[k] -= n.bytes_per_gpu
                holders[k].append(n)
                if n.pinned:
                    pinned_on[k] += n.bytes_per_gpu
            p = Placement(n.name, chosen[0][0], [k[1] for k in chosen if k[0] == chosen[0][0]], n.bytes_per_gpu,
                          n.share_bytes, True)
            if len({k[0] for k in chosen}) > 1:
                per = n.gpus // n.stages
                p.stages = [{"node": chosen[i][0], "gpus": [k[1] for k in chosen[i:i + per]]}
                            for i in range(0, len(chosen), per)]
            out[n.name] = p
            continue
        # no room awake: a home where it fits once the models there that are not pinned are let go
        room = {k: total[k] - pinned_on[k] for k in total}
        home = _home(free, room, n)
        if home is None:
            out[n.name] = Placement(n.name, bytes_per_gpu=n.bytes_per_gpu, share_bytes=n.share_bytes,
                                    reason=_nowhere(n, gpus, total, pinned_on))
            continue
        out[n.name] = Placement(n.name, home[0][0], [k[1] for k in home], n.bytes_per_gpu, n.share_bytes, False)
    for n in needs:  # what a waiting model shares its GPUs with, once every model is placed
        p = out[n.name]
        if p.awake or not p.gpus:
            continue
        p.shares_with = sorted({h.name for i in p.gpus for h in holders[(p.node, i)] if not h.pinned})
        what = "pinned" if n.pinned else "preloaded" if n.preload else "to start"
        p.reason = (f"no room awake beside the others ({what}): started at its first request on GPU "
                    f"{','.join(map(str, p.gpus))}, where {', '.join(p.shares_with) or 'nothing'} "
                    f"{'is' if len(p.shares_with) == 1 else 'are'} let go (asleep or stopped, least recently used "
                    f"first) until {_gib(n.bytes_per_gpu)} GiB is free")
    return [out[n.name] for n in sorted(needs, key=lambda n: n.order)]


def _tightest(free: dict[tuple[str, int], int], n: Need) -> list[tuple[str, int]] | None:
    """`n.gpus` GPUs of one node that each hold n, leaving the least free (best fit); None where no node has them."""
    best, best_left = None, None
    for node in sorted({k[0] for k in free}):
        fit = sorted((free[k], k) for k in free if k[0] == node and free[k] >= n.bytes_per_gpu)
        if len(fit) < n.gpus:
            continue
        pick = [k for _, k in fit[:n.gpus]]
        left = sum(free[k] - n.bytes_per_gpu for k in pick)
        if best_left is None or left < best_left:
            best, best_left = sorted(pick), left
    return best


def _across_nodes(free: dict[tuple[str, int], int], n: Need) -> list[tuple[str, int]] | None:
    """A pipeline-parallel model that no single node holds: its stages one by one, each on the `gpus // stages`
    GPUs of one node that it fills best (vLLM's Ray executor runs the stages on any nodes); None where they do not
    all find room, or the model has one stage."""
    if n.stages <= 1 or len({k[0] for k in free}) < 2:
        return None
    left, out = dict(free), []
    per = n.gpus // n.stages
    for _ in range(n.stages):
        stage = _tightest(left, Need(n.name, per, n.bytes_per_gpu))
        if stage is None:
            return None
        for k in stage:
            left[k] -= n.bytes_per_gpu + (1 << 62)  # taken: a GPU holds one rank of a model
        out += stage
    return out


def _home(free: dict[tuple[str, int], int], room: dict[tuple[str, int], int], n: Need) -> list[tuple[str, int]] | None:
    """Where a model with no room awake waits: `n.gpus` GPUs of one node that hold it beside their pinned models,
    those where the least must be let go to wake it (then the lowest indices)."""
    best, best_cost = None, None
    for node in sorted({k[0] for k in room}):
        fit = sorted((max(0, n.bytes_per_gpu - free[k]), k) for k in room if k[0] == node and room[k] >= n.bytes_per_gpu)
        if len(fit) < n.gpus:
            continue
        pick = fit[:n.gpus]
        cost = sum(c for c, _ in pick)
        if best_cost is None or cost < best_cost:
            best, best_cost = sorted(k for _, k in pick), cost
    return best


def _nowhere(n: Need, gpus: list[Gpu], total: dict, pinned_on: dict) -> str:
    """Why no node has n.gpus GPUs that hold n even with only the pinned models on them."""
    nodes = sorted({g.node for g in gpus})
    most = max((sum(1 for g in gpus if g.node == node) for node in nodes), default=0)
    if n.gpus > most:
        return f"needs {n.gpus} GPUs of one node; the largest node has {most}"
    room = {k: total[k] - pinned_on[k] for k in total}
    enough = max((sum(1 for k in room if k[0] == node and room[k] >= n.bytes_per_gpu) for node in nodes), default=0)
    biggest = max(room.values(), default=0)
    if enough:
        return (f"needs {_gib(n.bytes_per_gpu)} GiB on each of {n.gpus} GPUs of one node; beside the pinned models "
                f"only {enough} GPU{'s' if enough > 1 else ''} of a node offer{'' if enough > 1 else 's'} that much")
    return (f"needs {_gib(n.bytes_per_gpu)} GiB on each of {n.gpus} GPU(s); the most any GPU offers beside the pinned "
            f"models is {_gib(biggest)} GiB")


def _gib(b: int) -> str:
    return f"{b / (1 << 30):.1f}"
