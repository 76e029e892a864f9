"""Ray's dashboard HTTP API (the state API under /api/v0 and the per-node summary): nodes, GPUs, actors,
placement groups, workers and jobs. Plain HTTP with timeouts; no ray import."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from ..errors import ClusterError

LIMIT = 10000
NODE_RESOURCE = "launcher_node_"  # every node started by `cluster up` carries {launcher_node_<name>: 1}
GPU_INDEX_RESOURCE = "launcher_gpu_"  # ... and {launcher_gpu_<index>: 1} for each GPU it was given


@dataclass(frozen=True)
class NodeGpu:
    index: int
    name: str
    total_bytes: int
    used_bytes: int

    @property
    def free_bytes(self) -> int:
        return max(0, self.total_bytes - self.used_bytes)


@dataclass
class NodeView:
    node_id: str
    ip: str
    name: str
    head: bool
    alive: bool
    resources: dict = field(default_factory=dict)
    gpus: list[NodeGpu] = field(default_factory=list)  # from the node's NVML, through Ray's dashboard agent
    labels: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        for k in self.resources:
            if k.startswith(NODE_RESOURCE):
                return k[len(NODE_RESOURCE):]
        return f"{self.ip}/{self.node_id[:8]}"

    @property
    def num_gpus(self) -> int:
        return int(self.resources.get("GPU", 0))

    def to_dict(self) -> dict:
        return {"node_id": self.node_id, "label": self.label, "ip": self.ip, "head": self.head, "alive": self.alive,
                "resources": self.resources, "gpus": [g.__dict__ for g in self.gpus]}


def dashboard_url(address: str) -> str:
    """http://host:port from 'host:port' or a full URL."""
    a = address.strip().rstrip("/")
    return a if a.startswith(("http://", "https://")) else f"http://{a}"


class Dashboard:
    def __init__(self, url: str, timeout_s: float = 5.0):
        self.url = dashboard_url(url)
        self.timeout_s = timeout_s

    def _get(self, path: str) -> dict:
        try:
            with urllib.request.urlopen(self.url + path, timeout=self.timeout_s) as r:
                data = json.loads(r.read())
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise ClusterError(f"Ray dashboard at {self.url} did not answer ({e}).",
                               hint="Is the cluster up? See `launcher cluster status`; pass --ray-dashboard URL "
                                    "if it is not on the head's port 8265.") from None
        if not data.get("result", True):
            raise ClusterError(f"Ray dashboard at {self.url}{path} answered with an error: {data.get('msg')}")
        return data.get("data", {})

    def _list(self, what: str, detail: bool = True) -> list[dict]:
        d = self._get(f"/api/v0/{what}?limit={LIMIT}&detail={'true' if detail else 'false'}&timeout=10")
        return d.get("result", {}).get("result", [])

    def alive(self) -> bool:
        """Whether the dashboard answers."""
        try:
            self._get("/api/version")
            return True
        except ClusterError:
            return False

    def nodes(self, with_gpus: bool = True) -> list[NodeView]:
        """The cluster's nodes (head first), each with its GPUs as its dashboard agent reports them (with_gpus)."""
        out = []
        for n in self._list("nodes"):
            out.append(NodeView(node_id=n["node_id"], ip=n.get("node_ip", ""), name=n.get("node_name", ""),
                                head=bool(n.get("is_head_node")), alive=n.get("state") == "ALIVE",
                                resources=dict(n.get("resources_total") or {}), labels=dict(n.get("labels") or {})))
        if with_gpus and any(v.num_gpus for v in out):
            gpus = self.node_gpus()
            for v in out:
                # the agent reports every GPU of its host: keep this node's (by index when known)
                mine = {int(k[len(GPU_INDEX_RESOURCE):]) for k in v.resources if k.startswith(GPU_INDEX_RESOURCE)}
                host = gpus.get(v.node_id, [])
                if mine:
                    host = [g for g in host if g.index in mine]
                v.gpus = host[: v.num_gpus] if v.num_gpus else []
        out.sort(key=lambda v: (not v.head, v.ip, v.node_id))
        return out

    def node_gpus(self) -> dict[str, list[NodeGpu]]:
        """NVML numbers per node, as Ray's dashboard agent collects them (memory in MiB)."""
        out: dict[str, list[NodeGpu]] = {}
        for s in self._get("/nodes?view=summary").get("summary", []):
            nid = (s.get("raylet") or {}).get("nodeId")
            if not nid:
                continue
            out[nid] = [NodeGpu(int(g.get("index", i)), str(g.get("name", "GPU")),
                                int(g.get("memoryTotal", g.get("memory_total", 0)) or 0) << 20,
                                int(g.get("memoryUsed", g.get("memory_used", 0)) or 0) << 20)
                        for i, g in enumerate(s.get("gpus") or [])]
        return out

    def actors(self) -> list[dict]:
        return self._list("actors")

    def placement_groups(self) -> list[dict]:
        return self._list("placement_groups")

    def workers(self) -> list[dict]:
        return self._list("workers")

    def jobs(self) -> list[dict]:
        d = self._get(f"/api/v0/jobs?limit={LIMIT}")
        res = d.get("result", {})
        return res.get("result", []) if isinstance(res, dict) else res

    def leftovers(self, driver_pids: set[int]) -> dict[str, list]:
        """What is still alive of the Ray jobs whose driver was one of these PIDs: actors, placement groups, workers."""
        jobs = set()
        for j in self.jobs():
            di = j.get("driver_info") or {}
            try:
                pid = int(di.get("pid") or -1)
            except (TypeError, ValueError):
                continue
            if pid in driver_pids:
                jobs.add(j.get("job_id") or di.get("id"))
        jobs.discard(None)
        if not jobs:
            return {"jobs": [], "actors": [], "placement_groups": [], "workers": []}
        return {
            "jobs": sorted(jobs),
            "actors": [a["actor_id"] for a in self.actors() if a.get("job_id") in jobs and a.get("state") != "DEAD"],
            "placement_groups": [p["placement_group_id"] for p in self.placement_groups()
                                 if p.get("creator_job_id") in jobs and p.get("state") != "REMOVED"],
            "workers": [w.get("pid") for w in self.workers()
                        if w.get("job_id") in jobs and w.get("is_alive") and w.get("worker_type") != "DRIVER"],
        }
