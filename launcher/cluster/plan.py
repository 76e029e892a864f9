"""The estimator across nodes: which GPU of which node each of vLLM's tensor x pipeline ranks lands on,
the per-GPU estimate on every node used, and the node that limits the KV cache (vLLM takes the
smallest number of KV blocks over all workers)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from ..estimator import EngineSettings, Estimate, estimate
from ..gpu import GpuInfo, planned_gpus
from ..units import gib

if TYPE_CHECKING:
    from ..models.config import ModelArch
    from .api import Dashboard, NodeView
    from .inventory import Inventory


@dataclass(frozen=True)
class ClusterNode:
    label: str
    node_id: str
    gpus: tuple[GpuInfo, ...]  # empty: this node's GPU memory is not known


def nodes_from_dashboard(views: list[NodeView], inv: Inventory | None = None) -> list[ClusterNode]:
    """Alive nodes with their GPUs from NVML (through Ray's dashboard agent); where a node has GPU resources
    but no NVML numbers, its inventory entry's gpu:/gpu_memory: when the cluster was started by `cluster up`."""
    specs = dict(inv.nodes()) if inv is not None else {}
    out = []
    for v in views:
        if not v.alive:
            continue
        gpus = tuple(GpuInfo(g.index, g.name, g.total_bytes, g.free_bytes, g.used_bytes) for g in v.gpus)
        spec = specs.get(v.label)
        if not gpus and v.num_gpus and spec is not None and (spec.gpu or spec.gpu_memory):
            gpus = tuple(planned_gpus(spec.gpu_memory, spec.gpu, v.num_gpus))
        out.append(ClusterNode(v.label, v.node_id, gpus))
    return out


def live_nodes(api: Dashboard, inv: Inventory | None = None, wait_s: float = 20.0) -> list[ClusterNode]:
    """nodes_from_dashboard on the dashboard's nodes now; a node that just joined shows its GPU resources
    before its dashboard agent reports their memory (seen on a 2-GPU host a second after `cluster up`), so
    the nodes are read again for up to wait_s until every alive node with GPUs has its memory."""
    import time

    t0 = time.monotonic()
    while True:
        views = api.nodes()
        nodes = nodes_from_dashboard(views, inv)
        known = {n.node_id for n in nodes if n.gpus}
        pending = [v for v in views if v.alive and v.num_gpus and v.node_id not in known]
        if not pending or time.monotonic() - t0 >= wait_s:
            return nodes
        time.sleep(0.5)


def nodes_from_inventory(inv: Inventory) -> list[ClusterNode]:
    out = []
    for name, spec in inv.nodes():
        gpus: tuple = ()
        if spec.gpu or spec.gpu_memory:
            gpus = tuple(planned_gpus(spec.gpu_memory, spec.gpu, spec.num_gpus or 1))
        out.append(ClusterNode(name, name, gpus))
    return out


@dataclass
class ClusterPlan:
    world_size: int
    ranks: list[str]  # node label of each rank
    per_node: list[dict] = field(default_factory=list)
    limiting_node: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"world_size": self.world_size, "ranks": self.ranks, "per_node": self.per_node,
                "limiting_node": self.limiting_node, "notes": self.notes}


def assign_ranks(nodes: list[ClusterNode], world: int, placement: list[str] | None = None) -> list[ClusterNode]:
    """Rank -> node. With a placement (node id per bundle, from Ray) that order; else fill nodes in order."""
    by_id = {n.node_id: n for n in nodes}
    if placement:
        return [by_id[nid] for nid in placement[:world] if nid in by_id]
    out: list[ClusterNode] = []
    for n in nodes:
        out += [n] * len(n.gpus)
    return out[:world]


def plan_across(arch: ModelArch, s: EngineSettings, nodes: list[ClusterNode], *, vllm_version: tuple[int, ...],
                placement: list[str] | None = None) -> tuple[Estimate | None, ClusterPlan]:
    """(estimate of the limiting node, the plan). The estimate's verdict names the node that is short."""
    tp, pp = s.tensor_parallel_size, s.pipeline_parallel_size
    world = tp * pp
    ranks = assign_ranks(nodes, world, placement)
    cp = ClusterPlan(world, [n.label for n in ranks])
    have = sum(len(n.gpus) for n in nodes)
    unknown = [n.label for n in nodes if not n.gpus]
    blind = sorted({n.label for n in ranks if not n.gpus})
    if blind:  # Ray placed workers on a node whose GPU memory nobody has reported
        cp.notes.append(f"no GPU memory known for node(s) {', '.join(blind)}, where Ray places workers: its "
                        "dashboard agent has not reported its GPUs. Retry in a few seconds, or give gpu: or "
                        "gpu_memory: for it in the inventory.")
        return None, cp
    if len(ranks) < world:
        parts = ", ".join(f"{n.label}: {len(n.gpus)}" for n in nodes)
        cp.notes.append(f"tensor x pipeline parallel needs {world} GPUs; the cluster has {have} with known memory "
                        f"({parts})" + (f"; no GPU memory known for {', '.join(unknown)}" if unknown else "") + ".")
        return None, cp
    for r in range(0, world, tp):
        group = {ranks[i].label for i in range(r, r + tp)}
        if len(group) > 1:
            cp.notes.append(f"pipeline stage {r // tp} has its tensor-parallel group across nodes {sorted(group)}: "
                            "all-reduce over the network is slow. Prefer tensor parallel = GPUs per node and "
                            "pipeline parallel = nodes.")
    worst: tuple[Estimate, str] | None = None
    failing: tuple[Estimate, str] | None = None
    all_used: list[dict] = []
    for n in dict.fromkeys(ranks):  # nodes in rank order, once each
        k = sum(1 for x in ranks if x is n)
        used = sorted(n.gpus, key=lambda g: -g.free_bytes)[:k]
        g = min(used, key=lambda g: (g.free_bytes, g.total_bytes))
        e = estimate(arch, s, g.budget(), vllm_version=vllm_version, num_gpus_available=have, suggest=False)
        e = replace(e, gpus=[x.__dict__ | {"pids": list(x.pids), "node": n.label} for x in used])
        all_used += e.gpus
        cp.per_node.append({"node": n.label, "node_id": n.node_id, "ranks": k, "gpu": g.name,
                            "total_gib": gib(g.total_bytes), "free_gib": gib(g.free_bytes), "fits": e.fits,
                            "kv_cache_tokens": e.kv_cache_tokens, "max_model_len_fit": e.max_model_len_fit,
                            "reason": e.reason})
        if not e.fits and (failing is None or (e.max_model_len_fit, e.kv_cache_tokens) <
                           (failing[0].max_model_len_fit, failing[0].kv_cache_tokens)):
            failing = (e, n.label)
        if worst is None or e.kv_cache_tokens < worst[0].kv_cache_tokens:
            worst = (e, n.label)
    e, label = failing or worst
    cp.limiting_node = label
    e = replace(e, gpus=sorted(all_used, key=lambda g: g["node"] != label),  # the limiting node's GPU first
                reason=f"node {label}: {e.reason}" if not e.fits else e.reason,
                max_model_len_fit=min(r["max_model_len_fit"] for r in cp.per_node))
    return e, cp
