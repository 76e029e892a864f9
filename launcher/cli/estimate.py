"""`launcher estimate`: the dry run of the VRAM estimator."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import common


def estimate(
    ctx: typer.Context,
    model: common.Model = None,
    revision: common.Revision = None,
    model_path: common.ModelPath = None,
    model_name: common.ModelName = None,
    size_in_billions: common.Size = None,
    model_format: common.ModelFormat = "pytorch",
    quantization: common.Quantization = "none",
    model_engine: common.Engine = "vllm",
    gpu_memory: common.GpuMemory = None,
    gpu: common.GpuPreset = None,
    num_gpus: common.NumGpus = None,
    gpus: common.Gpus = None,
    vllm_version: common.VllmVersion = None,
    device: Annotated[str, typer.Option("--device", help="auto, cuda or cpu (the CPU build of vLLM).")] = "auto",
    ray_address: common.RayAddress = None,
    ray_dashboard: common.RayDashboard = None,
    inventory: Annotated[Optional[str], typer.Option("--inventory", help="Plan across the nodes of this cluster inventory (their gpu: presets); no cluster needed.")] = None,
    json_out: common.Json = False,
) -> None:
    """Predict what vLLM will reserve per GPU and whether max_model_len fits. Engine arguments
    (--max_model_len N|auto, --gpu-memory-utilization, --tensor-parallel-size, --kv-cache-dtype, ...)
    go after the options, in either spelling. Exit: 0 fits, 3 does not fit, 2 bad input."""
    from ..engines import check_engine
    from ..engines import vllm as vllm_engine
    from ..engine_args import parse_argv
    from ..errors import EXIT_BAD_INPUT, EXIT_DOES_NOT_FIT, BadInput
    from ..planning import plan, resolve_model
    from .render import estimate_dict, render_estimate

    check_engine(model_engine)
    spec = vllm_engine.arg_spec(allow_dump=False)
    engine_args = parse_argv(list(ctx.args), spec)
    if quantization not in ("none", "") and "quantization" not in engine_args and model_format == "pytorch":
        engine_args["quantization"] = quantization
    model_path, model_repo = common.split_model(model, model_path)
    ref = resolve_model(model_path, model_name, size_in_billions, model_format, quantization,
                        dtype=engine_args.get("dtype"), model_repo=model_repo, revision=revision)
    extra = {}
    if ray_address or inventory:
        from ..cluster import plan as cplan

        if inventory:
            from ..cluster.inventory import load

            extra = {"cluster_nodes": cplan.nodes_from_inventory(load(inventory)), "cluster_source": "inventory"}
        else:
            from ..cluster import control
            from ..cluster.api import Dashboard

            address, dash = control.resolve(ray_address, ray_dashboard)
            extra = {"cluster_nodes": cplan.live_nodes(Dashboard(dash), control.inventory_for(address)),
                     "cluster_source": "ray"}
    p = plan(ref, engine_args, gpu_memory=gpu_memory, gpu_preset=gpu, num_gpus=num_gpus, gpus_sel=gpus,
             vllm_version=vllm_version, device=device, **extra)
    if p.cluster is not None and p.estimate is None:
        if json_out:
            common.emit_json({"fits": False, "error": " ".join(p.notes), "cluster": p.cluster.to_dict()})
            raise typer.Exit(EXIT_DOES_NOT_FIT)
        from ..errors import DoesNotFit
        raise DoesNotFit("does not fit: " + " ".join(p.notes))
    if p.estimate is None and p.cpu_kv is None:
        msg = ("no GPU found (NVML sees none) and no --gpu-memory or --gpu given; "
               "nothing to estimate against. Give --gpu-memory 80GiB or --gpu H100-80GB, or --device cpu for the CPU build.")
        if json_out:
            common.emit_json({"fits": None, "error": msg, "gpus": [], "vllm_version": p.vllm_version})
            raise typer.Exit(EXIT_BAD_INPUT)
        raise BadInput(msg)
    d = estimate_dict(p)
    if json_out:
        common.emit_json(d)
    else:
        render_estimate(p, common.console())
    if not d["fits"]:
        raise typer.Exit(EXIT_DOES_NOT_FIT)
