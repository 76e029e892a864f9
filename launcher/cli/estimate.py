"""`launcher estimate`: the dry run of the VRAM estimator."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from . import common

if TYPE_CHECKING:
    from rich.console import Console

    from ..matrix import Cell
    from ..planning import ModelRef, Plan


def estimate(
    ctx: typer.Context,
    model: common.Model = None,
    revision: common.Revision = None,
    model_path: common.ModelPath = None,
    model_name: common.ModelName = None,
    size_in_billions: common.Size = None,
    model_format: common.ModelFormat = None,
    quantization: common.Quantization = None,
    model_engine: common.Engine = None,
    gpu_memory: common.GpuMemory = None,
    gpu: common.GpuPreset = None,
    num_gpus: common.NumGpus = None,
    gpus: common.Gpus = None,
    gpu_memory_budget: common.GpuMemoryBudget = None,
    vllm_version: common.VllmVersion = None,
    device: Annotated[str, typer.Option("--device", help="auto, cuda or cpu (the CPU build of vLLM).")] = "auto",
    ray_address: common.RayAddress = None,
    ray_dashboard: common.RayDashboard = None,
    inventory: common.Inventory = None,  # plan across its nodes (their gpu: presets); no cluster needed
    plot_file: Annotated[Optional[str], typer.Option("--plot", help="With --gpu all (or a list): also draw the matrix into this PNG file (needs matplotlib).")] = None,
    json_out: common.Json = False,
) -> None:
    """Predict what vLLM will reserve per GPU and whether max_model_len fits. Engine arguments
    (--max_model_len N|auto, --gpu-memory-utilization, --tensor-parallel-size, --kv-cache-dtype, ...)
    go after the options, in either spelling. --gpu all (or a list of kinds) answers for each GPU kind and
    1, 2, 4 and 8 GPUs. Exit: 0 fits, 3 does not fit, 2 bad input."""
    from .. import matrix
    from ..errors import BadInput

    ref, engine_args = _model_and_args(ctx, model, revision, model_path, model_name, size_in_billions, model_format,
                                       quantization, model_engine, vllm_version, device)
    if matrix.is_matrix(gpu):
        if gpu_memory or num_gpus or gpus or ray_address or inventory or gpu_memory_budget:
            raise BadInput("--gpu all (or a list) plans every count itself: drop --gpu-memory, --num-gpus, --gpus, "
                           "--gpu-memory-budget and cluster options.")
        _matrix(ref, engine_args, gpu, vllm_version, common.plot_path("--plot", plot_file), json_out)
        return
    if plot_file:
        raise BadInput("--plot draws the matrix of --gpu all (or a list of GPU kinds).")
    from ..planning import plan

    p = plan(ref, engine_args, gpu_memory=gpu_memory, gpu_preset=gpu, num_gpus=num_gpus, gpus_sel=gpus,
             gpu_memory_budget=gpu_memory_budget, vllm_version=vllm_version, device=device,
             **_cluster_nodes(ray_address, ray_dashboard, inventory))
    _show(p, json_out)


def _model_and_args(ctx: typer.Context, model: str | None, revision: str | None, model_path: str | None,
                    model_name: str | None, size_in_billions: str | None, model_format: str | None,
                    quantization: str | None, model_engine: str | None, vllm_version: str | None,
                    device: str) -> tuple[ModelRef, dict]:
    """The model (its architecture) and the engine arguments, checked against the release planned for (its
    shipped argument list), else the installed one."""
    from ..engine_args import parse_argv
    from ..engines import check_engine
    from ..engines import vllm as vllm_engine
    from ..planning import ModelOptions, resolve_model

    check_engine(model_engine or "vllm")
    spec = (vllm_engine.arg_spec_for_version(vllm_version, cpu=device == "cpu") if vllm_version
            else vllm_engine.arg_spec(allow_dump=False))
    engine_args = ModelOptions.of(model_format, quantization).engine_args(parse_argv(list(ctx.args), spec))
    model_path, model_repo = common.split_model(model, model_path)
    ref = resolve_model(model_path, model_name, size_in_billions, model_format, quantization,
                        dtype=engine_args.get("dtype"), model_repo=model_repo, revision=revision)
    return ref, engine_args


def _cluster_nodes(ray_address: str | None, ray_dashboard: str | None, inventory: str | None) -> dict:
    """plan()'s cluster arguments: the nodes of an inventory (no cluster needed) or of a live Ray cluster."""
    if not (ray_address or inventory):
        return {}
    from ..cluster import plan as cplan

    if inventory:
        from ..cluster.inventory import load

        return {"cluster_nodes": cplan.nodes_from_inventory(load(inventory)), "cluster_source": "inventory"}
    from ..cluster import control
    from ..cluster.api import Dashboard

    address, dash = control.resolve(ray_address, ray_dashboard)
    return {"cluster_nodes": cplan.live_nodes(Dashboard(dash), control.inventory_for(address)), "cluster_source": "ray"}


def _show(p: Plan, json_out: bool) -> None:
    """The plan as a table or JSON; exit 3 when it does not fit, 2 when there was nothing to plan against."""
    from ..errors import EXIT_DOES_NOT_FIT, BadInput, DoesNotFit
    from .render import estimate_dict, render_estimate

    if p.cluster is not None and p.estimate is None:
        common.refuse(DoesNotFit("does not fit: " + " ".join(p.notes)), json_out,
                      {"fits": False, "error": " ".join(p.notes), "cluster": p.cluster.to_dict()})
    if p.estimate is None and p.cpu_kv is None:
        msg = ("no GPU found (NVML sees none) and no --gpu-memory or --gpu given; "
               "nothing to estimate against. Give --gpu-memory 80GiB or --gpu H100-80GB, or --device cpu for the CPU build.")
        common.refuse(BadInput(msg), json_out, {"fits": None, "error": msg, "gpus": [], "vllm_version": p.vllm_version})
    d = estimate_dict(p)
    d["copies"] = _copies(p)

    def show(con: Console) -> None:
        render_estimate(p, con)
        _render_copies(d["copies"], p, con)
    common.output(d, json_out, show)
    if not d["fits"]:
        raise typer.Exit(EXIT_DOES_NOT_FIT)


def _render_copies(c: dict | None, p: Plan, con: Console) -> None:
    if c and c["copies"]:
        con.print(
            f"copies: {c['copies']} launch{'es' * (c['copies'] > 1)} like this fit on one GPU at max_model_len "
            f"{c['max_model_len']:,}, started one after another, each with --gpu-memory-budget "
            f"{c['utilization'] * p.estimate.total_bytes / 2**30:.1f}GiB (utilization {c['utilization']:.2f}; "
            f"{c['footprint_bytes'] / 2**30:.2f} GiB with what vLLM takes beside its share).")


def _matrix(ref: ModelRef, engine_args: dict, selector: str, vllm_version: str | None, plot_file: str | None,
            json_out: bool) -> None:
    """The matrix of GPU kinds x counts (launcher.matrix), as one table or JSON; exit 0 when any cell fits."""
    from .. import matrix
    from ..errors import ExitCode

    rows = matrix.cells(ref, engine_args, selector, vllm_version=vllm_version)
    want = next((c.max_model_len for c in rows if c.fits is not None), 0)
    if plot_file:
        matrix.plot(rows, plot_file, f"{ref.label}: largest max_model_len that fits")
        common.said_plot(plot_file)
    common.output({"model": ref.label, "max_model_len": want, "counts": list(matrix.COUNTS),
                   "cells": [c.to_dict() for c in rows], "plot": plot_file}, json_out,
                  lambda con: _render_matrix(ref, rows, want, con))
    if not any(c.fits for c in rows):
        raise typer.Exit(ExitCode.DOES_NOT_FIT)


def _render_matrix(ref: ModelRef, rows: list[Cell], want: int, con: Console) -> None:
    from rich.table import Table

    from .. import matrix

    t = Table(title=f"{ref.label} at max_model_len {want:,}: fits? largest length that fits, concurrency")
    t.add_column("GPU")
    for n in matrix.COUNTS:
        t.add_column(f"x{n}", justify="right")
    for kind in dict.fromkeys(c.gpu for c in rows):
        cells = [c for c in rows if c.gpu == kind]
        t.add_row(kind, *(_cell_text(c) for c in cells))
    con.print(t)
    con.print("x N: tensor parallel over N GPUs where N divides the attention heads, else pipeline parallel "
              "(marked pp). Each cell is `launcher estimate --gpu KIND --num-gpus N` with that layout.")
    con.print("✓ LEN Cx: fits; the largest max_model_len that fits, and how many requests of the asked length fit at "
              "once. ✗ LEN: fits only up to that length. ✗ util U: vLLM's default share of the GPU leaves too little "
              "beside it; it starts with --gpu-memory-utilization U (✗ util U, len L: and up to length L). "
              "✗ weights: the weights alone do not fit.")


def _cell_text(c: Cell) -> str:
    if c.fits is None:
        return "[dim]-[/]"
    pp = " pp" if c.pipeline_parallel_size > 1 else ""
    if c.fits:
        return f"[green]✓ {c.max_model_len_fit:,}{pp}[/] {c.max_concurrency:.1f}x"
    if c.fix.startswith("--"):  # not the length: the cell says what makes it fit (a lower utilization, say)
        short = c.fix.replace("--gpu-memory-utilization ", "util ").replace(" with --max-model-len ", ", len ")
        return f"[yellow]✗ {short}{pp}[/]"
    if c.max_model_len_fit > 0:
        return f"[yellow]✗ {c.max_model_len_fit:,}{pp}[/]"
    words = {"free_memory": "beyond the GPU", "weights": "weights", "no_kv": "no KV cache"}
    return f"[red]✗ {words.get(c.cause, c.cause)}{pp}[/]"


def _copies(p: Plan) -> dict | None:
    """How many launches like this one fit on one GPU at its length (estimator.sharing), single-GPU estimates."""
    e = p.estimate
    if e is None or len(e.gpus) != 1 or p.cluster is not None:
        return None
    from ..engines import vllm as vllm_engine
    from ..estimator import GpuBudget
    from ..estimator.sharing import copies

    g = e.gpus[0]
    gpu = GpuBudget(g["name"], g["total_bytes"], g["free_bytes"] if p.source == "nvml" else None)
    return copies(p.model.arch, p.settings, gpu, vllm_engine.parse_version(p.vllm_version), e.max_model_len)
