"""The gateway across a Ray cluster (`launcher serve --ray-address`, docs/placement.md): each model's server placed on
a node by what the model needs (its estimate) and what each node offers (the `memory` Ray reports for it: `cluster up
--memory-per-node`, or `ray start --memory`), started and supervised there (launching/on_node.py: a detached actor
pinned to the node runs the supervisor beside the server), and proxied to at the node's address. The nodes take the
place of GPUs in gpus.Homes: room is made per node (placement.make_room_on), a model moves to another node only
where its own has no room. A node lost: its models fail (503 with Retry-After for the requests it had) and start on a
node with room at their next request (no retry window: the cause is the node, not the model); a node that joins is used from the next start; a gateway started again adopts what runs on
every node (the actors outlive it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..launching.on_node import NODE_LOST
from ..runs import RunState
from .gpus import Homes
from .starting import Starter

if TYPE_CHECKING:
    from ..launching import Prepared
    from ..launching.node_launch import NodeLaunch
    from ..models_file import ModelEntry
    from .options import Options


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


def node_id(key: str) -> str:
    return key.rpartition("|")[2]


def node_label(key: str) -> str:
    """The node's label ("" for a bare id: a node adopted before the dashboard listed it)."""
    return key.rpartition("|")[0]


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


def memory_devices(capacity: dict[str, int]) -> list:
    """Each node as one device of its memory, for fleet/pack.py (node: its key, "LABEL|ID"; index 0)."""
    from ..fleet.pack import Gpu

    return [Gpu(node, 0, "memory", total) for node, total in sorted(capacity.items())]


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

    def need(self, entry: ModelEntry, key: str) -> tuple[int, int | None, int | None]:
        """As Starter.need, planned once per entry (the plan at the gateway's start asked already; an entry read
        again from the models file is planned again)."""
        found = self._needs.get(entry.name)
        if found is None or found[0] is not entry:
            found = self._needs[entry.name] = (entry, super().need(entry, key))
        return found[1]

    def prepare(self, entry: ModelEntry, key: str, claim: bool, placed: tuple | None = None) -> Prepared:
        prep = super().prepare(entry, key, claim, None)  # nothing pinned on this host: the node is placed
        if placed:
            self.node_of[entry.name] = placed[0][0]
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
        offered to the next start."""
        if homes is None:
            return
        for name, launch in self.started.items():  # Ray's dashboard says a node is dead some seconds after it is
            if launch.state == RunState.FATAL and NODE_LOST in launch.failure():
                self.lost.add(launch.device)
        now = {n: b for n, b in node_memory(self.cluster).items() if n not in self.lost}
        homes.capacity.clear()
        homes.capacity.update(now)
        for name, need in homes.per_gpu.items():
            if not set(homes.home.get(name, ())) <= set(now) or name in homes.why_not:
                homes.home.pop(name, None)
                homes.home_alone(name, need)


def cluster_for(address: str | None, dashboard: str | None) -> Cluster:
    """The Ray cluster of `serve --ray-address` (resolved as `launcher launch --ray-address` resolves it)."""
    from ..cluster import control
    from ..state import home

    gcs, dash = control.resolve(address, dashboard)
    return Cluster(gcs, dash, str(home() / "ray-nodes"))


def plan_cluster(entries: list[ModelEntry], opts: Options, starter: RayStarter) -> Homes:
    """The models file planned on the cluster's nodes as they are now."""
    from .model import backend_key

    capacity = node_memory(starter.cluster)
    needs = [(e.name, starter.need(e, backend_key(e.name))[0] or 0, e.pinned, e.preload) for e in entries]
    return plan_nodes(needs, capacity)
