"""Run a gateway: check the settings and the models file whole (one line, exit 2, before anything starts), size the
budget, then serve until SIGINT/SIGTERM, stopping every model on the way out; SIGHUP reads the models file again."""
from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import BadInput


@dataclass(frozen=True)
class GatewaySettings:
    models_file: str
    host: str = "127.0.0.1"
    port: int = 8080
    api_key_env: str | None = None
    allow_unauthenticated: bool = False
    memory_budget: str | None = None
    queue_size: int = 64
    queue_timeout_s: float = 600.0
    failed_retry_s: float = 30.0
    watch: bool = False  # read the models file again whenever it changes on disk (as SIGHUP does)
    min_stay_s: float = 10.0
    max_wait_s: float = 30.0
    host_memory_budget: str | None = None
    early_first_sleep: bool = True  # GPUs: a model's first sleep paid once it is idle after its start (first_sleep.py)
    ray_address: str | None = None  # serve across a Ray cluster's nodes (gateway/nodes.py)
    ray_dashboard: str | None = None


FIRST_SLEEP_AFTER_S = 5.0  # idle this long after its start, a model's first sleep is paid (gateway/first_sleep.py)


def build(settings: GatewaySettings):
    """The Gateway object for these settings (nothing started, no port bound)."""
    from ..engines import vllm as vllm_engine
    from ..spec import is_loopback
    from .app import Gateway
    from .options import Options
    from ..models_file import load_checked

    if not 0 <= settings.port <= 65535:
        raise BadInput(f"--port must be in 0..65535, got {settings.port}.")
    key = None
    if settings.api_key_env:
        key = os.environ.get(settings.api_key_env)
        if not key:
            raise BadInput(f"--api-key-env {settings.api_key_env}: that variable is not set.")
    if not is_loopback(settings.host) and not key and not settings.allow_unauthenticated:
        raise BadInput(f"--host {settings.host} exposes every model beyond this machine without an API key.",
                       hint="Set --api-key-env VAR, or pass --allow-unauthenticated.")
    inst = vllm_engine.installed()
    spec = vllm_engine.arg_spec(inst)
    gpu = not (inst is not None and inst.cpu_build)
    cluster = None
    if settings.ray_address is not None:  # the nodes' GPUs, or without any their memory (gateway/nodes.py)
        from .node_plan import has_gpus
        from .nodes import cluster_for

        cluster = cluster_for(settings.ray_address, settings.ray_dashboard)
        gpu = has_gpus(cluster)
    gpus = visible_gpus() if gpu and not settings.memory_budget and cluster is None else []  # read once
    opts = Options(capacity_bytes=capacity(settings.memory_budget, gpus), gpu=gpu, queue_max=settings.queue_size,
                   queue_timeout_s=settings.queue_timeout_s, failed_retry_s=settings.failed_retry_s,
                   min_stay_s=settings.min_stay_s, max_wait_s=settings.max_wait_s,
                   first_sleep_after_s=FIRST_SLEEP_AFTER_S if settings.early_first_sleep else None,
                   # on a cluster the nodes' host memory is theirs: sleepers' weights limited only where asked
                   host_budget_bytes=host_budget(settings.host_memory_budget, gpu and cluster is None))
    starter = None
    if cluster is not None:
        from .node_plan import node_gpus, node_memory
        from .nodes import RayStarter

        starter = RayStarter(opts, cluster)
        if gpu:
            starter.gpus = node_gpus(cluster)
            if not starter.gpus:
                raise BadInput("the Ray cluster's nodes have GPUs, but their dashboard agents report none of their "
                               "memory.", hint="Retry in a few seconds; see `launcher cluster status`.")
            opts.capacity_bytes = sum(g.free_bytes for g in starter.gpus.values())
        else:
            opts.capacity_bytes = max(node_memory(cluster).values(), default=0)
    as_started = (lambda e: starter.spec_for(e, None)) if starter is not None and starter.gpus else None
    entries = load_checked(settings.models_file, spec, opts.capacity_bytes, as_started)  # whole, before anything starts
    if gpus:  # each model's home on them (gateway/gpus.py: planned one by one as `launcher plan` plans them)
        from .gpus import plan_homes

        opts.homes = plan_homes(entries, gpus)
    if starter is not None:
        from .nodes import plan_cluster

        opts.homes = plan_cluster(entries, opts, starter)
    return Gateway(entries, opts, spec, api_key=key, models_file=settings.models_file, watch=settings.watch,
                   starter=starter)


def visible_gpus() -> list:
    """The GPUs NVML sees now (none without NVML)."""
    from ..gpu import NvmlSource

    return NvmlSource().list()


def capacity(budget: str | None, gpus: list) -> int:
    """--memory-budget in bytes; else what these GPUs have free now, or without any the host's available memory
    (the CPU build)."""
    from ..units import parse_bytes

    if budget:
        try:
            n = parse_bytes(budget)
        except (ValueError, BadInput):
            raise BadInput(f"--memory-budget expects a size such as 20GiB, got '{budget}'.") from None
        if n <= 0:
            raise BadInput(f"--memory-budget must be more than 0, got '{budget}'.")
        return n
    if gpus:
        return sum(g.free_bytes for g in gpus)
    import psutil

    return psutil.virtual_memory().available


def host_budget(budget: str | None, gpu: bool) -> int | None:
    """--host-memory-budget in bytes; else, on GPUs, 80% of the host's available memory now (what sleeping models'
    weights may take there, the servers' own processes and the rest of the host beside them); the CPU build has no
    sleep: None."""
    from ..units import parse_bytes

    if budget:
        try:
            return parse_bytes(budget, what="--host-memory-budget")
        except BadInput:
            raise BadInput(f"--host-memory-budget expects a size such as 64GiB, got '{budget}'.") from None
    if not gpu:
        return None
    import psutil

    return int(psutil.virtual_memory().available * 0.8)


def run_gateway(settings: GatewaySettings, on_ready: Callable[[str, int], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM."""
    gw = build(settings)

    async def main() -> None:
        from .app import serve

        ready = asyncio.Event()
        task = asyncio.get_running_loop().create_task(serve(gw, settings.host, settings.port, ready))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        # SIGHUP: the models file read again (a bad one refused with one line, the old one kept)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(gw.control.reload_quietly("SIGHUP")))
        waiter = asyncio.get_running_loop().create_task(ready.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if ready.is_set() and on_ready is not None:
            on_ready(gw.url, len(gw.backends.by_name))
        try:
            await task
        except asyncio.CancelledError:
            pass

    try:
        asyncio.run(main())
    except OSError as e:  # the port is taken
        raise BadInput(f"the gateway cannot listen on {settings.host}:{settings.port}: {e.strerror or e}.",
                       hint="Pick another --port.") from None
