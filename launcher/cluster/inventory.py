"""The inventory: which hosts form a Ray cluster and how to reach them (YAML or JSON, validated, unknown keys rejected).

    name: lab                     # the cluster's name under $LAUNCHER_HOME/clusters (default: default)
    head: {host: 10.0.0.1, port: 6379, dashboard_port: 8265, num_gpus: 8, gpu: H100-80GB}
    workers:
      - {host: 10.0.0.2, num_gpus: 8, gpu: H100-80GB}
    ssh: [ssh, -o, BatchMode=yes]  # how remote hosts are reached (argv prefix)
    ray: ray                      # the ray executable on remote hosts
    env: {NCCL_SOCKET_IFNAME: eth0}

Hosts named localhost/127.0.0.1/local run on this machine without ssh: several such nodes make a
single-host cluster for testing, each node with its own ports.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import BadInput
from ..runs import NAME_RE

LOCAL_HOSTS = {"localhost", "127.0.0.1", "local", "::1"}


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "localhost"
    name: Optional[str] = None
    num_gpus: Optional[int] = Field(default=None, ge=0)
    num_cpus: Optional[int] = Field(default=None, ge=0)
    memory: Optional[str] = None  # what Ray may hand out on this node (6GiB): `ray start --memory`, what serve places by
    gpu: Optional[str] = None  # a preset (H100-80GB) for planning without asking NVML
    gpu_memory: Optional[str] = None  # or a size per GPU (80GiB)
    cuda_visible_devices: Optional[str] = None
    resources: dict[str, float] = {}
    env: dict[str, str] = {}

    @property
    def local(self) -> bool:
        return self.host in LOCAL_HOSTS


class HeadSpec(NodeSpec):
    port: int = Field(default=6379, ge=1, le=65535)
    dashboard_port: int = Field(default=8265, ge=1, le=65535)


class Inventory(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "default"
    head: HeadSpec = HeadSpec()
    workers: list[NodeSpec] = []
    ssh: list[str] = ["ssh", "-o", "BatchMode=yes"]
    ray: str = "ray"
    env: dict[str, str] = {}

    def nodes(self) -> list[tuple[str, NodeSpec]]:
        """(node name, spec), head first; names are unique."""
        out = [(self.head.name or "head", self.head)]
        for i, w in enumerate(self.workers, 1):
            out.append((w.name or f"worker{i}", w))
        names = [n for n, _ in out]
        if len(set(names)) != len(names):
            raise BadInput(f"node names must be unique, got {names}.")
        return out

    @property
    def address(self) -> str:
        host = "127.0.0.1" if self.head.local else self.head.host
        return f"{host}:{self.head.port}"

    @property
    def dashboard(self) -> str:
        host = "127.0.0.1" if self.head.local else self.head.host
        return f"http://{host}:{self.head.dashboard_port}"


def local(nodes: int = 2, name: str = "local", gpus_per_node: int | None = None, port: int = 6379,
          dashboard_port: int = 8265, cpus_per_node: int | None = None, gpu: str | None = None,
          gpu_memory: str | None = None, memory_per_node: str | None = None) -> Inventory:
    """A single-host cluster: a head and nodes-1 worker processes on this machine."""
    if nodes < 1:
        raise BadInput("--nodes must be at least 1.")
    kw = {"num_gpus": gpus_per_node, "num_cpus": cpus_per_node, "gpu": gpu, "gpu_memory": gpu_memory,
          "memory": memory_per_node}
    head = HeadSpec(host="localhost", port=port, dashboard_port=dashboard_port, **kw)
    if gpus_per_node:
        # one node per GPU slice, as on a multi-GPU host split into nodes
        head.cuda_visible_devices = ",".join(str(i) for i in range(gpus_per_node))
    workers = []
    for i in range(1, nodes):
        w = NodeSpec(host="localhost", **kw)
        if gpus_per_node:
            w.cuda_visible_devices = ",".join(str(i * gpus_per_node + j) for j in range(gpus_per_node))
        workers.append(w)
    return Inventory(name=name, head=head, workers=workers)


def load(path: str) -> Inventory:
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"inventory file '{path}' not found.")
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data: Any = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        raise BadInput(f"inventory file '{path}' is not valid {p.suffix.lstrip('.') or 'JSON'}: {e}") from None
    try:
        inv = Inventory.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise BadInput(f"inventory file '{path}': {where}: {first['msg']}.") from None
    if not NAME_RE.match(inv.name):
        raise BadInput(f"inventory name '{inv.name}' is not a valid name.", hint="Letters, digits, '.', '_', '-'.")
    return inv
