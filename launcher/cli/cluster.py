"""`launcher cluster up / status / down`: a Ray cluster from an inventory file, or on this host for testing."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from . import common

if TYPE_CHECKING:
    from rich.console import Console

    from ..cluster.api import NodeView

app = typer.Typer(help="Start, inspect and stop a Ray cluster for launches that span nodes.", no_args_is_help=True,
                  add_completion=False, rich_markup_mode=None)

InventoryOpt = common.Inventory
NameOpt = Annotated[Optional[str], typer.Option("--name", show_default="the inventory's, or 'local'", help="Cluster name.")]


@app.command("up")
def up(inventory: InventoryOpt = None,
       local_nodes: Annotated[int, typer.Option("--local-nodes", help="Without --inventory: this many nodes on this host (a head and workers).")] = 2,
       gpus_per_node: Annotated[Optional[int], typer.Option("--gpus-per-node", help="Local nodes: GPUs each (split by CUDA_VISIBLE_DEVICES).")] = None,
       cpus_per_node: Annotated[Optional[int], typer.Option("--cpus-per-node", help="Local nodes: CPUs each Ray may schedule on.")] = None,
       memory_per_node: Annotated[Optional[str], typer.Option("--memory-per-node", help="Local nodes: memory each offers (6GiB; Ray's memory resource: what `serve --ray-address` places models by).")] = None,
       gpu: common.GpuPreset = None,  # local nodes: planned with it where NVML gives no numbers
       gpu_memory: common.GpuMemory = None,
       port: Annotated[int, typer.Option("--port", help="Local head: GCS port.")] = 6379,
       dashboard_port: Annotated[int, typer.Option("--dashboard-port", help="Local head: dashboard port.")] = 8265,
       name: NameOpt = None,
       timeout: Annotated[float, typer.Option("--timeout", click_type=common.duration("--timeout"), help="Seconds for each node to join.")] = 120.0,
       json_out: common.Json = False) -> None:
    """Start the Ray head and workers (nodes already running are kept: `up` also repairs a cluster)."""
    from ..cluster import control, inventory as invmod

    if inventory:
        inv = invmod.load(inventory)
        if name:
            inv.name = name
    else:
        inv = invmod.local(local_nodes, name=name or "local", gpus_per_node=gpus_per_node, port=port,
                           dashboard_port=dashboard_port, cpus_per_node=cpus_per_node, gpu=gpu, gpu_memory=gpu_memory,
                           memory_per_node=memory_per_node)
    con = common.console(stderr=True)
    rec = control.up(inv, timeout_s=timeout, on_node=lambda e: con.print(f"node {e['name']} ({e['host']}) joined"))
    _show(rec["name"], rec["address"], rec["dashboard"], json_out)


@app.command("status")
def status(name: Annotated[Optional[str], typer.Option("--name", show_default="the one recorded here, or RAY_ADDRESS", help="Cluster name, as `launcher cluster up` recorded it.")] = None,
           ray_address: common.RayAddress = None,
           ray_dashboard: common.RayDashboard = None,
           json_out: common.Json = False) -> None:
    """Nodes, their state, CPUs and GPUs with memory (exit 5 when the cluster cannot be reached)."""
    from ..cluster import control

    address, dash = control.resolve(ray_address, ray_dashboard, name)
    _show(name or "", address, dash, json_out)


@app.command("down")
def down(name: NameOpt = None, json_out: common.Json = False) -> None:
    """Stop every node of a cluster started by `launcher cluster up`; fails (exit 1) if a Ray process is left."""
    from ..cluster import control
    from ..errors import LaunchFailed

    from ..errors import BadInput

    recs = [r["name"] for r in control.records()]
    if not recs:
        # nothing recorded (a second `down`, say): nothing to stop is no failure
        out = {"name": name, "stopped": [], "left": [], "running": False}
        common.output(out, json_out, lambda con: con.print(f"no cluster{' ' + name if name else ''} is running: nothing to stop"))
        return
    if name is None:
        if len(recs) != 1:
            raise BadInput("say which cluster: --name " + " | ".join(recs))
        name = recs[0]
    if name not in recs:
        raise BadInput(f"no cluster named '{name}'.", hint="Clusters started here: " + ", ".join(recs) + ".")
    out = control.down(name)
    common.output(out, json_out, lambda con: con.print(
        f"cluster {name}: stopped {', '.join(out['stopped']) or 'nothing'}"
        + (f"; still alive: {out['left']}" if out["left"] else "; no Ray process left")))
    if out["left"]:
        raise LaunchFailed(f"processes of cluster '{name}' survived: {out['left']}")


def _show(name: str, address: str, dash_url: str, json_out: bool) -> None:
    from ..cluster.api import Dashboard

    nodes = Dashboard(dash_url).nodes()
    common.output({"name": name, "address": address, "dashboard": dash_url, "nodes": [n.to_dict() for n in nodes]},
                  json_out, lambda con: _render_nodes(name, address, dash_url, nodes, con))


def _render_nodes(name: str, address: str, dash_url: str, nodes: list[NodeView], con: Console) -> None:
    from rich.table import Table

    from ..units import gib

    t = Table(title=f"Ray cluster {name} at {address} (dashboard {dash_url})".replace("  ", " "))
    for c in ("node", "ip", "role", "state", "CPUs", "GPUs", "GPU memory used/total"):
        t.add_column(c)
    for n in nodes:
        mem = ", ".join(f"{g.name} {gib(g.used_bytes)}/{gib(g.total_bytes)}" for g in n.gpus) or "-"
        t.add_row(n.label, n.ip, "head" if n.head else "worker", "ALIVE" if n.alive else "DEAD",
                  f"{n.resources.get('CPU', 0):g}", f"{n.num_gpus}", mem)
    con.print(t)
