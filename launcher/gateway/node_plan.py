"""What a Ray cluster's nodes offer the gateway (`launcher serve --ray-address`, docs/placement.md) and the plan of a
models file on them: each GPU of a node as its dashboard agent reports it (NVML's name, total and free memory), planned
as `launcher plan --ray-address` plans GPUs (fleet/pack.py: a model on GPUs of one node, its share of each); without
GPUs, each node's `memory` as Ray reports it (`cluster up --memory-per-node`, `ray start --memory`), one device each.
Devices are named as devices.py says. No ray import: Ray's dashboard over HTTP (cluster/api.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .devices import gpu_index, gpu_on_node, node_of
from .gpus import Homes

if TYPE_CHECKING:
    from ..gpu import GpuInfo
    from ..models_file import ModelEntry


@dataclass(frozen=True)
class Cluster:
    address: str  # Ray's GCS, HOST:PORT
    dashboard: str  # its dashboard's URL (the nodes and their memory, without importing ray)
    home: str  # the LAUNCHER_HOME the nodes' supervisors record into, and where the followers' jobs are kept


def node_memory(cluster: Cluster) -> dict[str, int]:
    """Each alive node's memory as Ray reports it (its `memory` resource, bytes), by node key ("LABEL|ID": ordered
    by label as `launcher plan` orders nodes, so that both break ties alike; a node started again has a new id)."""
    from ..cluster.api import Dashboard

    return {f"{v.label}|{v.node_id}": int(v.resources.get("memory", 0))
            for v in Dashboard(cluster.dashboard).nodes() if v.alive}


def node_gpus(cluster: Cluster, wait_s: float = 20.0) -> dict[str, GpuInfo]:
    """Every GPU of the alive nodes as its node's dashboard agent reports it (NVML: name, total, free), by device key
    ("LABEL|ID#INDEX"); {} where no node has GPUs. A node that just joined is waited for up to wait_s until its agent
    reports its GPUs' memory (cluster/plan.live_nodes)."""
    from ..cluster.api import Dashboard
    from ..cluster.plan import live_nodes

    return {gpu_on_node(f"{n.label}|{n.node_id}", g.index): g
            for n in live_nodes(Dashboard(cluster.dashboard), wait_s=wait_s) for g in n.gpus}


def has_gpus(cluster: Cluster) -> bool:
    """Whether any alive node of the cluster offers GPUs (Ray's GPU resource)."""
    from ..cluster.api import Dashboard

    return any(v.alive and v.num_gpus for v in Dashboard(cluster.dashboard).nodes(with_gpus=False))


def plan_nodes(needs: list[tuple[str, int, bool, bool]], capacity: dict[str, int]) -> Homes:
    """Each model's node (name, bytes it needs, pinned, preload) as `launcher plan` places models on GPUs (fleet/pack.py,
    each node one device of its memory): pinned first, then preloaded, then the largest, each on the node it fills
    best; a model with no room beside the others gets a home where the least must be let go (it waits there for
    room, made at its first request); one no node holds alone is placed nowhere, with the reason."""
    from ..fleet.pack import Need, pack

    h = Homes(dict(capacity), by_memory=True)
    found = pack([Need(name, 1, need, pinned=pinned, preload=preload, order=i)
                  for i, (name, need, pinned, preload) in enumerate(needs)], memory_devices(capacity))
    for (name, need, _, _), p in zip(needs, found):
        h.per_gpu[name] = need
        if p.node is not None:
            h.home[name] = (p.node,)
        else:  # larger than any node, or than what any node's pinned models leave (the plan's own reason)
            big = max(capacity.values(), default=0)
            h.why_not[name] = p.reason if need <= big and p.reason else (
                f"needs {need / 2**30:.2f} GiB and the largest node offers {big / 2**30:.2f} GiB "
                "(Ray's memory resource of each node: `ray start --memory`)")
    return h


def plan_node_gpus(entries: list[ModelEntry], gpus: dict[str, GpuInfo], vllm_version: str | None = None) -> Homes:
    """Each model's home on the GPUs of the cluster's nodes, as `launcher plan --ray-address` places them (each GPU
    offering its free memory now, footprints taken on the smallest GPU): the GPUs of one node, its share of each and
    what it holds there awake; a model placed on no GPU, or whose pipeline stages would span nodes (one server runs
    on one node here), gets the reason."""
    from ..fleet.needs import need_of
    from ..fleet.pack import Gpu, pack

    smallest = min(gpus.values(), key=lambda g: g.total_bytes)
    needs = [need_of(e, smallest.name, smallest.total_bytes, i, vllm_version) for i, e in enumerate(entries)]
    h = Homes({d: g.free_bytes for d, g in gpus.items()}, kind=(smallest.name, smallest.total_bytes), on_nodes=True)
    devices = [Gpu(node_of(d), gpu_index(d), g.name, g.free_bytes) for d, g in sorted(gpus.items())]
    for p in pack(needs, devices):
        if p.stages:
            h.why_not[p.name] = (f"its {len(p.stages)} pipeline stages would span nodes; the gateway runs a model's "
                                 "server on one node: launch it with `launcher launch --ray-address`")
        elif p.gpus:
            h.home[p.name] = tuple(gpu_on_node(p.node, i) for i in p.gpus)
            h.share[p.name], h.per_gpu[p.name] = p.share_bytes, p.bytes_per_gpu
        else:
            h.why_not[p.name] = p.reason
    return h


def memory_devices(capacity: dict[str, int]) -> list:
    """Each node as one device of its memory, for fleet/pack.py (node: its key, "LABEL|ID"; index 0)."""
    from ..fleet.pack import Gpu

    return [Gpu(node, 0, "memory", total) for node, total in sorted(capacity.items())]
