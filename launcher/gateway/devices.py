"""How the gateway names the devices it places models on: a GPU of this host (its NVML index), a node of a Ray
cluster offering memory ("LABEL|NODE_ID", the CPU build), or a GPU of such a node ("LABEL|NODE_ID#INDEX", its NVML
index on that node)."""
from __future__ import annotations


def gpu_on_node(node: str, index: int) -> str:
    """The key of GPU `index` of a Ray node ("LABEL|NODE_ID")."""
    return f"{node}#{index}"


def node_of(device: object) -> str:
    """The Ray node ("LABEL|NODE_ID") a device key names (a node's key is its own node; "" for a GPU of this host)."""
    return "" if isinstance(device, int) else str(device).partition("#")[0]


def gpu_index(device: object) -> int | None:
    """The GPU index a device key names: a GPU of this host (int) or of a Ray node ("...#INDEX"); None for a node."""
    if isinstance(device, int):
        return device
    _, sep, index = str(device).partition("#")
    return int(index) if sep and index.isdigit() else None


def node_id(key: str) -> str:
    """The Ray node id of a node's or a node GPU's key."""
    return node_of(key).rpartition("|")[2]


def node_label(key: str) -> str:
    """The node's label ("" for a bare id: a node adopted before the dashboard listed it)."""
    return node_of(key).rpartition("|")[0]
