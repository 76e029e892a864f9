"""`launcher plan`: a models file against GPUs (NVML's, or described: --gpu KIND --num-gpus N), each model's footprint
from its estimate (needs.py), placed per GPU (pack.py). Nothing is loaded and no GPU is needed for described ones."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from .pack import Gpu, Placement, pack


@dataclass
class FleetPlan:
    models_file: str
    gpus: list[Gpu]
    placements: list[Placement]
    vllm_version: str
    seconds: float

    def to_dict(self) -> dict:
        used = {(g.node, g.index): 0 for g in self.gpus}
        on = {(g.node, g.index): [] for g in self.gpus}
        for p in self.placements:
            if p.awake:
                for node, i in p.where():
                    used[(node, i)] += p.bytes_per_gpu
                    on[(node, i)].append(p.name)
        return {"models_file": self.models_file, "vllm_version": self.vllm_version, "seconds": round(self.seconds, 3),
                "models": [asdict(p) for p in self.placements],
                "gpus": [{"node": g.node, "index": g.index, "name": g.name, "total_bytes": g.total_bytes,
                          "awake_bytes": used[(g.node, g.index)], "awake": on[(g.node, g.index)]} for g in self.gpus]}


def plan_fleet(models_file: str, gpu: str | None = None, num_gpus: int | None = None, gpu_memory: str | None = None,
               vllm_version: str | None = None, inventory: str | None = None, ray_address: str | None = None,
               ray_dashboard: str | None = None) -> FleetPlan:
    """The plan of every model of the models file on these GPUs: described, NVML's, a cluster inventory's nodes (no
    cluster needed) or a live Ray cluster's (each node's GPUs as its dashboard agent reports them). GPUs of different
    sizes: each model's footprint is taken on the smallest, which holds it on any."""
    from ..engines import vllm as vllm_engine
    from ..errors import BadInput
    from ..models_file import load_models
    from ..gpu import NvmlSource, planned_gpus
    from ..planning import planned_version
    from .needs import need_of

    t0 = time.perf_counter()
    inst = vllm_engine.installed()
    entries = load_models(models_file, vllm_engine.arg_spec(inst))
    nodes = cluster_gpus(inventory, ray_address, ray_dashboard) if inventory or ray_address else []
    if ray_address and inst is not None and inst.cpu_build and \
            not (cluster_gpus(None, ray_address, ray_dashboard) if inventory else nodes):
        # CPU nodes: each node one device of the memory Ray reports for it, as `serve --ray-address` places them
        from .needs import memory_need_of

        by_memory = memory_nodes(ray_address, ray_dashboard)
        if not by_memory:
            raise BadInput("no node to plan for: the cluster reports none alive.")
        placed = pack([memory_need_of(e, i) for i, e in enumerate(entries)], by_memory)
        for p in placed:  # each node is one device: its GPU index says nothing
            p.reason = p.reason.replace("on GPU 0,", f"on node {p.node},").replace("on GPU 0", "on a node")
        return FleetPlan(models_file, by_memory, placed, inst.version, time.perf_counter() - t0)
    if inventory or ray_address:
        gpus = [Gpu(label, g.index, g.name, g.total_bytes) for label, g in nodes]
        infos = [g for _, g in nodes]
    else:
        infos = planned_gpus(gpu_memory, gpu, num_gpus) if (gpu or gpu_memory) else NvmlSource().list()
        gpus = [Gpu("local", g.index, g.name, g.total_bytes) for g in infos]
    if not infos:
        raise BadInput("no GPU to plan for: NVML sees none here." if not (inventory or ray_address) else
                       "no GPU to plan for: the cluster's nodes report none.",
                       hint="Describe them: --gpu H100-80GB --num-gpus 8 (or --gpu-memory 80GiB), or give each node "
                            "of the inventory its `gpu:`.")
    smallest = min(infos, key=lambda g: g.total_bytes)
    needs = [need_of(e, smallest.name, smallest.total_bytes, i, vllm_version) for i, e in enumerate(entries)]
    version = planned_version(vllm_version, gpu_target=True)
    return FleetPlan(models_file, gpus, pack(needs, gpus), version, time.perf_counter() - t0)



def cluster_gpus(inventory: str | None, ray_address: str | None, ray_dashboard: str | None) -> list:
    """(node label, GpuInfo) of every GPU of the cluster: an inventory's (no cluster needed), or a live Ray cluster's."""
    from ..cluster import plan as cplan

    if inventory:
        from ..cluster.inventory import load

        nodes = cplan.nodes_from_inventory(load(inventory))
    else:
        from ..cluster import control
        from ..cluster.api import Dashboard

        address, dash = control.resolve(ray_address, ray_dashboard)
        nodes = cplan.live_nodes(Dashboard(dash), control.inventory_for(address))
    return [(n.label, g) for n in nodes for g in n.gpus]


def memory_nodes(ray_address: str, ray_dashboard: str | None) -> list[Gpu]:
    """A live Ray cluster's alive nodes as one device each: the memory Ray reports for it (`ray start --memory`)."""
    from ..cluster import control
    from ..cluster.api import Dashboard

    _, dash = control.resolve(ray_address, ray_dashboard)
    return [Gpu(v.label, 0, "memory", int(v.resources.get("memory", 0))) for v in Dashboard(dash).nodes() if v.alive]

