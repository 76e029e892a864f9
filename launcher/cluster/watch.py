"""The cluster as part of a launch: is it healthy, which nodes hold the server's placement, did one die,
are enough resources back to restart. Everything through the dashboard's HTTP API."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..errors import ClusterError
from .api import Dashboard


@dataclass
class ClusterWatch:
    address: str
    dashboard: str
    bundles: int  # tensor x pipeline parallel: one {device: 1} bundle per worker
    device: str = "GPU"
    interval_s: float = 1.0
    unreachable_s: float = 10.0  # the dashboard silent this long counts as a lost head
    placement_timeout_s: float = 10.0  # before a restart: Ray must place the bundles within this (0: skip)
    nodes: set[str] = field(default_factory=set)  # node ids holding the server's placement
    _api: Dashboard | None = None
    _last_ok: float = 0.0
    _next: float = 0.0
    _lost: str | None = None
    _next_ready: float = 0.0
    _ready: tuple[bool, str] = (False, "")

    def __post_init__(self):
        self._api = Dashboard(self.dashboard, timeout_s=3)
        self._last_ok = time.monotonic()

    @property
    def api(self) -> Dashboard:
        return self._api

    def capacity(self) -> tuple[int, list[str]]:
        """Alive units of the device resource, and a per-node breakdown for messages."""
        have, parts = 0, []
        for n in self.api.nodes(with_gpus=False):
            if n.alive:
                k = int(n.resources.get(self.device, 0))
                have += k
                parts.append(f"{n.label}: {k}")
        return have, parts

    def preflight(self) -> str | None:
        """Before a start: None when the cluster is reachable and has enough alive resources, else why not."""
        try:
            have, parts = self.capacity()
        except ClusterError as e:
            return e.message
        if have < self.bundles:
            return (f"the Ray cluster has {have} {self.device} on its alive nodes ({', '.join(parts) or 'none'}); "
                    f"tensor x pipeline parallel needs {self.bundles}")
        return None

    def bind(self, driver_pids: set[int]) -> set[str]:
        """After ready: the nodes that hold the placement groups of the server's Ray job."""
        try:
            jobs = {j.get("job_id") for j in self.api.jobs()
                    if int((j.get("driver_info") or {}).get("pid") or -1) in driver_pids}
            nodes = set()
            for pg in self.api.placement_groups():
                if pg.get("creator_job_id") in jobs and pg.get("state") == "CREATED":
                    nodes |= {b.get("node_id") for b in pg.get("bundles") or [] if b.get("node_id")}
        except ClusterError:
            return self.nodes
        self.nodes = nodes
        return nodes

    def unbind(self) -> None:
        self.nodes, self._lost, self._next = set(), None, 0.0

    def lost(self, fresh: bool = False, now: float | None = None) -> str | None:
        """A node of the placement is dead or gone, or the cluster stopped answering: the reason; else None.
        Rate-limited to one query per interval_s unless fresh."""
        now = time.monotonic() if now is None else now
        if now < self._next and not fresh:
            return self._lost
        self._next = now + self.interval_s
        try:
            nodes = {n.node_id: n for n in self.api.nodes(with_gpus=False)}
        except ClusterError as e:
            self._lost = (f"Ray cluster unreachable for {now - self._last_ok:.0f} s: {e.message}"
                          if now - self._last_ok > self.unreachable_s else None)
            return self._lost
        self._last_ok = now
        gone = [nodes[i].label if i in nodes else i[:8] for i in sorted(self.nodes)
                if i not in nodes or not nodes[i].alive]
        self._lost = f"Ray node {', '.join(gone)} lost" if gone else None
        return self._lost

    def ready(self, now: float | None = None) -> tuple[bool, str]:
        """In back-off: enough resources alive again to restart? (At most one query per interval_s.)"""
        now = time.monotonic() if now is None else now
        if now < self._next_ready:
            return self._ready
        self._next_ready = now + self.interval_s
        why = self.preflight()
        if why is None and self.placement_timeout_s > 0:
            # the counts can be stale (Ray takes a while to declare a node dead): ask Ray to place it for real,
            # so no instance is started that would only wait for a placement that cannot be made
            from .placement import try_placement

            try:
                res = try_placement(self.address, self.bundles, self.device, self.placement_timeout_s)
                why = None if res.get("ok") else res.get("reason")
            except ClusterError as e:
                why = e.message
        self._ready = (why is None), (f"waiting for the Ray cluster: {why}" if why else "")
        return self._ready

    def snapshot(self) -> dict:
        try:
            nodes = [n.to_dict() | {"placement": n.node_id in self.nodes} for n in self.api.nodes()]
        except ClusterError as e:
            return {"address": self.address, "dashboard": self.dashboard, "error": e.message}
        return {"address": self.address, "dashboard": self.dashboard, "bundles": self.bundles, "device": self.device,
                "nodes": nodes}

    def leftovers(self, driver_pids: set[int], timeout_s: float = 15.0) -> dict:
        """After stop: wait until Ray has cleaned up the server's job; what is still there at the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                left = self.api.leftovers(driver_pids)
            except ClusterError as e:
                return {"error": e.message}
            if not (left["actors"] or left["placement_groups"] or left["workers"]) or time.monotonic() > deadline:
                return left
            time.sleep(0.5)
