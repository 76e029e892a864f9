"""`launcher plan`: where each model of a models file goes, per GPU, by what vLLM will take (docs/placement.md)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from . import common

if TYPE_CHECKING:
    from rich.console import Console


def plan(
    models: common.ModelsFile,
    gpu: common.GpuPreset = None,
    num_gpus: common.NumGpus = None,
    gpu_memory: common.GpuMemory = None,
    vllm_version: common.VllmVersion = None,
    inventory: common.Inventory = None,
    ray_address: common.RayAddress = None,
    ray_dashboard: common.RayDashboard = None,
    plot_file: Annotated[Optional[str], typer.Option("--plot", help="Also draw the plan into this PNG (GPUs as columns, models as blocks; needs matplotlib).")] = None,
    json_out: common.Json = False,
) -> None:
    """Plan a fleet: each model's GPU(s) and footprint per GPU from its estimate, which models are awake together at
    start, and which wait for which (or fit nowhere, and why). Nothing is loaded; described GPUs need no GPU here.
    Exit: 0 every model placed, 3 one fits on no GPU, 2 bad input."""
    from ..errors import ExitCode
    from ..fleet.plan import plan_fleet

    plot_file = common.plot_path("--plot", plot_file)
    p = plan_fleet(models, gpu, num_gpus, gpu_memory, vllm_version, inventory, ray_address, ray_dashboard)
    d = p.to_dict()
    if plot_file:
        from ..fleet.picture import draw

        draw(d, plot_file)
        common.said_plot(plot_file)
    common.output(d, json_out, lambda con: render(d, con))
    if any(not m["gpus"] for m in d["models"]):
        raise typer.Exit(ExitCode.DOES_NOT_FIT)


def render(d: dict, con: Console) -> None:
    from rich.table import Table

    from ..units import gib

    if d["gpus"] and all(g["name"] == "memory" for g in d["gpus"]):
        return _render_nodes(d, con)
    nodes = sorted({g["node"] for g in d["gpus"]})
    t = Table(title=f"{d['models_file']}: {len(d['models'])} models on {len(d['gpus'])} GPU(s) "
                    + (f"of {len(nodes)} nodes " if len(nodes) > 1 else "")
                    + 
                    f"({d['gpus'][0]['name'] if d['gpus'] else '-'}), vLLM {d['vllm_version']}")
    for c in ("model", "GPU(s)", "GiB per GPU", "at start", "why"):
        t.add_column(c, overflow="fold")
    for m in d["models"]:
        where = " + ".join(f"{st['node']}:{','.join(map(str, st['gpus']))}" for st in m.get("stages") or []) or (
            (f"{m['node']}:" if len(nodes) > 1 and m["gpus"] else "") + (",".join(map(str, m["gpus"])) or "-"))
        state = "[green]awake[/]" if m["awake"] else ("[yellow]waits[/]" if m["gpus"] else "[red]nowhere[/]")
        t.add_row(m["name"], where, gib(m["bytes_per_gpu"]) if m["bytes_per_gpu"] else "-", state, m["reason"])
    con.print(t)
    for g in d["gpus"]:
        con.print(f"{g['node'] + ' ' if len(nodes) > 1 else ''}GPU {g['index']}: {gib(g['awake_bytes'])} of {gib(g['total_bytes'])} GiB awake at start"
                  + (f" ({', '.join(g['awake'])})" if g["awake"] else ""))
    con.print(f"planned in {d['seconds']:.2f} s; each footprint is the model's share (its gpu_memory_budget, or the "
              "smallest at which its max_model_len fits), what vLLM takes beside it and its CUDA context")


def _render_nodes(d: dict, con: Console) -> None:
    """A plan on a Ray cluster's CPU nodes (`serve --ray-address` places by each node's memory)."""
    from rich.table import Table

    from ..units import gib

    t = Table(title=f"{d['models_file']}: {len(d['models'])} models on {len(d['gpus'])} node(s) by memory, "
                    f"vLLM {d['vllm_version']}")
    for c in ("model", "node", "GiB", "at start", "why"):
        t.add_column(c, overflow="fold")
    for m in d["models"]:
        state = "[green]awake[/]" if m["awake"] else ("[yellow]waits[/]" if m["node"] else "[red]nowhere[/]")
        t.add_row(m["name"], m["node"] or "-", gib(m["bytes_per_gpu"]) if m["bytes_per_gpu"] else "-", state,
                  m["reason"])
    con.print(t)
    for g in d["gpus"]:
        con.print(f"node {g['node']}: {gib(g['awake_bytes'])} of {gib(g['total_bytes'])} GiB awake at start"
                  + (f" ({', '.join(g['awake'])})" if g["awake"] else ""))
    con.print(f"planned in {d['seconds']:.2f} s; each footprint is the model's weights and KV cache on vLLM's CPU "
              "build, each node's memory as Ray reports it")

