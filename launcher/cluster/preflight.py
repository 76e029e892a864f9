"""Pre-flight of a launch on a Ray cluster: vLLM's Ray executor, a healthy cluster, a placement Ray can
really make, and the memory estimate on every node it lands on. Nothing is started when one fails."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import BadInput, ClusterError
from .watch import ClusterWatch

if TYPE_CHECKING:
    from ..spec import LaunchSpec

CPU_NO_RAY = "the CPU build of vLLM has no Ray executor (vLLM: 'current platform cpu does not support ray')."


def prepare_cluster(spec: LaunchSpec, engine_args: dict, cpu_build: bool) -> tuple[dict, ClusterWatch]:
    """Check the flags and the cluster; returns the launch's cluster record and a watch for the supervisor.
    Sets --distributed-executor-backend ray in engine_args."""
    from . import control

    if cpu_build:
        raise BadInput(CPU_NO_RAY, hint="Launch on a Ray cluster from a host with the GPU build of vLLM.")
    backend = engine_args.get("distributed-executor-backend")
    if backend not in (None, "ray"):
        raise BadInput(f"--ray-address needs --distributed-executor-backend ray, not '{backend}'.")
    engine_args["distributed-executor-backend"] = "ray"
    tp = int(engine_args.get("tensor-parallel-size") or 1)
    pp = int(engine_args.get("pipeline-parallel-size") or 1)
    address, dashboard = control.resolve(spec.ray_address, spec.ray_dashboard)
    watch = ClusterWatch(address, dashboard, bundles=tp * pp, device="GPU")
    why = watch.preflight()
    if why:
        raise ClusterError(f"pre-flight: {why}.", hint="Add nodes (`launcher cluster up`), or lower "
                                                       "--tensor-parallel-size / --pipeline-parallel-size.")
    return {"address": address, "dashboard": dashboard, "bundles": tp * pp, "device": "GPU"}, watch


def placement_and_nodes(watch: ClusterWatch, timeout_s: float = 30.0):
    """Where Ray would put vLLM's workers now (node id per rank) and every alive node's GPUs."""
    from .placement import try_placement
    from .plan import live_nodes

    from .control import inventory_for

    res = try_placement(watch.address, watch.bundles, watch.device, timeout_s)
    if not res.get("ok"):
        raise ClusterError(f"pre-flight: {res.get('reason')}.",
                           hint="See `launcher cluster status`: GPUs may be held by another job.")
    return [b["node_id"] for b in res["bundles"]], live_nodes(watch.api, inventory_for(watch.address))


def watch_from_record(rec: dict | None) -> ClusterWatch | None:
    if not rec:
        return None
    return ClusterWatch(rec["address"], rec["dashboard"], bundles=rec["bundles"], device=rec.get("device", "GPU"))
