"""The gateway across a Ray cluster (`launcher serve --ray-address`, docs/placement.md): each model's server placed on
a node by what the model needs (its estimate) and what each node offers, started and supervised there
(launching/on_node.py: a detached actor pinned to the node runs the supervisor beside the server), and proxied to at
the node's address. Nodes with GPUs offer each GPU as its dashboard agent reports it (NVML's name, total and free
memory), planned one by one as `launcher plan` plans GPUs (fleet/pack.py: a model on GPUs of one node, with its share
of each; CUDA_VISIBLE_DEVICES set for its server on the node); nodes without GPUs (vLLM's CPU build) offer the
`memory` Ray reports for them (`cluster up --memory-per-node`, or `ray start --memory`). The nodes or their GPUs take
the place of this host's GPUs in gpus.Homes: room is made on them (placement.make_room_on), a model moves elsewhere
only where its own have no room. A node lost: its models fail (503 with Retry-After for the requests it had) and start
on a node with room at their next request (no retry window: the cause is the node, not the model); a node that joins
is used from the next start; a gateway started again adopts what runs on every node (the actors outlive it)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..launching.on_node import NODE_LOST
from ..runs import RunState
from .devices import gpu_index, gpu_on_node, node_id, node_of
from .gpus import Homes
from .node_plan import Cluster, node_gpus, node_memory, plan_node_gpus, plan_nodes
from .starting import Starter, launch_spec, with_share

if TYPE_CHECKING:
    from ..gpu import GpuInfo
    from ..launching import Prepared
    from ..spec import LaunchSpec
    from ..launching.node_launch import NodeLaunch
    from ..models_file import ModelEntry
    from .options import Options


class RayStarter(Starter):
    """Starter whose launches run on the nodes of a Ray cluster (launching/node_launch.NodeLaunch)."""

    def __init__(self, opts: Options, cluster: Cluster) -> None:
        super().__init__(opts)
        self.cluster = cluster
        self.node_of: dict[str, str] = {}
        self.started: dict[str, NodeLaunch] = {}
        self.lost: set[str] = set()  # nodes a launch was lost with: a node that comes back does so under a new id
        self._actors: set[str] | None = None
        self._needs: dict[str, tuple] = {}  # name -> (the entry, what it needs): the plan's, reused at its first start
        self.gpus: dict[str, GpuInfo] = {}  # GPU nodes: every GPU seen (device key -> as its node reported it)
        self.homes: Homes | None = None  # the plan the gateway follows (plan_cluster)

    def need(self, entry: ModelEntry, key: str) -> tuple[int, int | None, int | None]:
        """As Starter.need, planned once per entry (the plan at the gateway's start asked already; an entry read
        again from the models file is planned again); on GPU nodes, on the GPUs of its home."""
        found = self._needs.get(entry.name)
        if found is None or found[0] is not entry:
            h = self.homes
            placed = (h.home[entry.name], h.share.get(entry.name)) if self.gpus and h and entry.name in h.home else None
            found = self._needs[entry.name] = (entry, super().need(entry, key, placed))
        return found[1]

    def spec_for(self, entry: ModelEntry, placed: tuple | None) -> LaunchSpec:
        """On GPU nodes: planned for the GPUs of its node as that node reported them (this host's NVML is not
        asked), with the plan's share of each; on memory nodes: as the entry gives it (nothing pinned here)."""
        from dataclasses import replace

        spec = launch_spec(entry, self.opts, None)
        if not self.gpus:
            return spec
        devices = tuple(placed[0]) if placed and placed[0] else ()
        infos = [self.gpus[d] for d in devices if d in self.gpus]
        total = min(g.total_bytes for g in infos or self.gpus.values())  # placed nowhere yet: the smallest GPU
        n = len(infos) or gpus_wanted(spec.engine_args)
        spec = replace(spec, gpus=None, gpu=None, gpu_memory=f"{total >> 20}MiB", num_gpus=n)
        return with_share(spec, placed[1] if placed else None)

    def prepare(self, entry: ModelEntry, key: str, claim: bool, placed: tuple | None = None) -> Prepared:
        prep = super().prepare(entry, key, claim, placed)
        if placed and placed[0]:
            devices = tuple(placed[0])
            self.node_of[entry.name] = node_of(devices[0])
            if self.gpus:  # its GPUs on that node, by NVML index as the node's agent reported them
                prep.env["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu_index(d)) for d in devices)
                prep.env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        return prep

    def launch(self, prep: Prepared) -> NodeLaunch:
        from ..launching.node_launch import NodeLaunch

        key = self.node_of[prep.spec.name]
        launch = NodeLaunch.start(prep, self.cluster.address, node_id(key), self.cluster.home)
        launch.device = key
        self.started[prep.spec.name] = launch
        return launch

    def adopt(self, name: str, key: str) -> tuple[NodeLaunch, int | None, tuple[None, None, None]] | None:
        """The server an earlier gateway started on a node (its actor runs on): followed from here."""
        from ..launching.node_launch import NodeLaunch

        if name not in self.alive_actors():  # none runs: nothing to follow (no Ray driver started for it)
            return None
        launch = NodeLaunch.adopt(name, self.cluster.address, self.cluster.home)
        if launch is None:
            return None
        launch.device = next((k for k in node_memory(self.cluster) if node_id(k) == launch.node_id), launch.node_id)
        if self.gpus and launch.gpus:  # the GPUs its server was given there
            launch.devices = tuple(gpu_on_node(launch.device, int(i)) for i in launch.gpus.split(",") if i.isdigit())
        self.started[name] = launch
        return launch, launch.port, (None, None, None)

    def alive_actors(self) -> set[str]:
        """The models whose actor runs on a node now (named ACTOR_PREFIX + name), from Ray's dashboard; read once
        for a gateway's start, however many models it adopts."""
        if self._actors is None:
            from ..cluster.api import Dashboard
            from ..launching.on_node import ACTOR_PREFIX

            self._actors = {a["name"][len(ACTOR_PREFIX):] for a in Dashboard(self.cluster.dashboard).actors()
                            if (a.get("name") or "").startswith(ACTOR_PREFIX) and a.get("state") == "ALIVE"}
        return self._actors

    def refresh(self, homes: Homes | None) -> None:
        """The nodes as Ray reports them now: a lost one's models get a new home among those left, a joined one is
        offered to the next start. A GPU keeps what it offered when first seen (what runs there since is ours)."""
        if homes is None:
            return
        for name, launch in self.started.items():  # Ray's dashboard says a node is dead some seconds after it is
            if launch.state == RunState.FATAL and NODE_LOST in launch.failure():
                self.lost.add(launch.device)
        if self.gpus:
            seen = node_gpus(self.cluster, wait_s=2.0)
            for d, g in seen.items():
                self.gpus.setdefault(d, g)
            now = {d: homes.capacity.get(d, g.free_bytes) for d, g in seen.items() if node_of(d) not in self.lost}
        else:
            now = {n: b for n, b in node_memory(self.cluster).items() if n not in self.lost}
        homes.capacity.clear()
        homes.capacity.update(now)
        for name, need in homes.per_gpu.items():
            if not set(homes.home.get(name, ())) <= set(now) or name in homes.why_not:
                width = len(homes.home.pop(name, ())) or self._gpus_wanted(name)
                if not self.gpus:
                    homes.home_alone(name, need)
                elif (first := homes.first_gpus(width, need)) is not None:  # GPUs of one node that hold it alone
                    homes.home[name] = first
                    homes.why_not.pop(name, None)

    def _gpus_wanted(self, name: str) -> int:
        found = self._needs.get(name)
        return gpus_wanted(found[0].spec.engine_args if found else {})


def gpus_wanted(engine_args: dict) -> int:
    """The GPUs a launch spans: tensor x pipeline parallel."""
    return int(engine_args.get("tensor-parallel-size") or 1) * int(engine_args.get("pipeline-parallel-size") or 1)


def cluster_for(address: str | None, dashboard: str | None) -> Cluster:
    """The Ray cluster of `serve --ray-address` (resolved as `launcher launch --ray-address` resolves it)."""
    from ..cluster import control
    from ..state import home

    gcs, dash = control.resolve(address, dashboard)
    return Cluster(gcs, dash, str(home() / "ray-nodes"))


def plan_cluster(entries: list[ModelEntry], opts: Options, starter: RayStarter) -> Homes:
    """The models file planned on the cluster's nodes as they are now: per GPU where nodes have GPUs, else per node
    by memory."""
    from .model import backend_key

    if starter.gpus:
        starter.homes = plan_node_gpus(entries, starter.gpus)
        return starter.homes
    capacity = node_memory(starter.cluster)
    needs = [(e.name, starter.need(e, backend_key(e.name))[0] or 0, e.pinned, e.preload) for e in entries]
    starter.homes = plan_nodes(needs, capacity)
    return starter.homes
