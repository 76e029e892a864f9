"""`launcher serve`: one OpenAI-compatible endpoint in front of every model of a models file."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import common


def serve(
    models: common.ModelsFile,
    host: common.Host = None,
    port: Annotated[Optional[int], typer.Option("--port", show_default="8080", help="Port of the gateway.")] = None,
    api_key_env: common.ApiKeyEnv = None,
    allow_unauthenticated: common.AllowUnauthenticated = False,
    memory_budget: Annotated[Optional[str], typer.Option("--memory-budget", help="Memory the models share (20GiB): on GPUs what the devices have free at the start, on the CPU build the host's available memory, by default.")] = None,
    queue_size: Annotated[int, typer.Option("--queue-size", min=1, help="Requests that may wait for one model to start; more get 503.")] = 64,
    queue_timeout: Annotated[float, typer.Option("--queue-timeout", click_type=common.duration("--queue-timeout"), help="Seconds a request waits for its model to start before 503 with Retry-After.")] = 600.0,
    watch: Annotated[bool, typer.Option("--watch", help="Read the models file again whenever it changes (as SIGHUP and `launcher gateway reload` do); a bad file is refused with one line and the old one kept.")] = False,
    host_memory_budget: Annotated[Optional[str], typer.Option("--host-memory-budget", show_default="80% of the host's available memory at the start (GPUs)", help="Host memory sleeping models may keep (their weights): the least recently used sleeper is stopped rather than the host running out.")] = None,
    min_stay: Annotated[float, typer.Option("--min-stay", click_type=common.duration("--min-stay"), help="A model up for less than this is not let go for another (against thrashing between models that do not fit together).")] = 10.0,
    max_wait: Annotated[float, typer.Option("--max-wait", click_type=common.duration("--max-wait"), help="A model that waits this long for room held by busy models makes the one up longest yield: its new requests wait for its next turn, those in flight finish, then it is let go.")] = 30.0,
    early_first_sleep: Annotated[bool, typer.Option("--early-first-sleep/--no-early-first-sleep", help="GPUs: pay each model's first sleep (vLLM pins host memory for its weights: 13-18 s for 8B) once it has been idle 5 s after its start, where the host may keep its weights, rather than in the request that makes room.")] = True,
    ray_address: common.RayAddress = None,  # each model on a node by its memory (docs/placement.md)
    ray_dashboard: common.RayDashboard = None,
    retry_failed_after: Annotated[float, typer.Option("--retry-failed-after", click_type=common.duration("--retry-failed-after"), help="Seconds a model that failed (its start, or its supervisor gave up) answers 503 with the cause before the next request tries a fresh start.")] = 30.0,
) -> None:
    """Serve every model of --models behind one endpoint: a request names its model; a model not running is started
    (or woken), making room from the least recently used idle models by the estimate, never beyond the budget.
    SIGHUP (or --watch, or `launcher gateway reload`) reads the models file again without a restart.
    Exit: 0 stopped (Ctrl-C, SIGTERM: every model is stopped), 2 bad input."""
    from ..gateway.run import GatewaySettings, run_gateway

    run_gateway(GatewaySettings(models, host or "127.0.0.1", 8080 if port is None else port, api_key_env,
                                allow_unauthenticated, memory_budget, queue_size, queue_timeout, retry_failed_after,
                                watch, min_stay, max_wait, host_memory_budget, early_first_sleep, ray_address,
                                ray_dashboard),
                on_ready=lambda url, n: common.console(stderr=True).print(
                    f"gateway on {url}/v1 for {n} model(s); status page {url}/ ; Ctrl-C stops it and its models"))
