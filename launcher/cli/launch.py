"""`launcher launch`: flags / launch file / engine args -> a supervised vLLM server."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from . import common
from ..runs import RunState

if TYPE_CHECKING:
    from rich.console import Console

    from ..launching import Prepared
    from ..spec import LaunchSpec

Env = common.Env  # kept for importers


def launch(
    ctx: typer.Context,
    model: common.Model = None,
    revision: common.Revision = None,
    download_dir: common.DownloadDir = None,
    model_path: common.ModelPath = None,
    model_name: common.ModelName = None,
    size_in_billions: common.Size = None,
    model_format: common.ModelFormat = None,
    quantization: common.Quantization = None,
    model_engine: common.Engine = None,
    name: common.LaunchName = None,
    host: common.Host = None,
    port: common.Port = None,
    env: common.Env = None,
    api_key_env: common.ApiKeyEnv = None,
    allow_unauthenticated: common.AllowUnauthenticated = False,
    config: common.Config = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run the supervisor in the background.")] = False,
    startup_timeout: Annotated[Optional[float], typer.Option("--startup-timeout", click_type=common.duration("--startup-timeout"), show_default="900", help="Seconds from start to /health 200.")] = None,
    no_preflight: common.NoPreflight = False,
    gpu_memory: common.GpuMemory = None,
    gpu: common.GpuPreset = None,
    num_gpus: common.NumGpus = None,
    gpus: common.Gpus = None,
    gpu_memory_budget: common.GpuMemoryBudget = None,
    ray_address: common.RayAddress = None,
    ray_dashboard: common.RayDashboard = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="Print the resolved launch and the exact command line; start nothing.")] = False,
    adopt: Annotated[bool, typer.Option("--adopt", help="With --name: supervise again the server of a launch whose supervisor died, without restarting it.")] = False,
    via: Annotated[Optional[str], typer.Option("--via", help="Add this launch to the running gateway at URL (`launcher serve`) and start it there; its key, if any, from LAUNCHER_GATEWAY_API_KEY.")] = None,
    json_out: common.Json = False,
) -> None:
    """Launch a vLLM server and supervise it. Any vLLM engine argument may follow, in either spelling
    (--max_model_len 18080, --max-model-len=18080); --max_model_len auto launches with the largest that fits.
    Exit: 0 stopped cleanly (foreground) or ready (--detach), 2 bad input, 3 does not fit, 4 never became ready."""
    from ..launching import prepare
    from .download import fetch_model

    if adopt:
        return adopt_running(name, json_out)
    spec = common.spec_from_cli(ctx)
    if via:
        return _via_gateway(via, spec, json_out)
    _warn_env(spec)
    prep = prepare(spec, check_port=not print_config, fetch=None if print_config else fetch_model(),
                   claim=not print_config, on_start_wait=_waiting)
    if print_config:
        return _print_config(prep, json_out)
    err = common.console(stderr=True)
    if prep.note:
        err.print(prep.note)
    if detach:
        return _detached(prep, err, json_out)
    _foreground(prep, err, json_out)


def _via_gateway(url: str, spec: LaunchSpec, json_out: bool) -> None:
    """--via URL: the launch as one entry of the gateway's models file, POSTed to it; the gateway starts it."""
    from ..gateway import client

    skip = ("host", "port", "api_key_env", "allow_unauthenticated")
    entry = {k: v for k, v in spec.to_dict().items() if k not in skip and v not in (None, {}, [])}
    entry["preload"] = True
    out = client.add(entry, url)
    common.output(out, json_out, lambda con: common.console(stderr=True).print(
        f"{out['added']} added to the gateway at {url} (names: {', '.join(out['names'])}); starting there"))


def _warn_env(spec: LaunchSpec) -> None:
    from ..engines import vllm as vllm_engine

    for w in vllm_engine.env_warnings(spec.env, vllm_engine.installed()):
        common.console(stderr=True).print(f"[yellow]warning:[/] {w}")


def _waiting(holder: dict) -> None:
    """Said once while another launch of ours holds the host's start lock (locks.StartLock)."""
    common.console(stderr=True).print(f"waiting for launch '{holder.get('launch', '?')}' to finish starting "
                                      f"(PID {holder.get('pid', '?')}): one start at a time reads the free memory")


def _print_config(prep: Prepared, json_out: bool) -> None:
    """--print-config: the resolved launch and the exact command line; nothing started."""
    out = {"launch": prep.spec.to_dict(), "command": prep.argv, "env": prep.launcher_env or {}, "port": prep.port,
           "note": prep.note, "estimate": prep.plan.estimate.to_dict() if prep.plan and prep.plan.estimate else None}
    import shlex

    def show(con: Console) -> None:
        con.print_json(data={k: v for k, v in out.items() if k != "estimate"})
        con.print("command: " + " ".join([f"{k}={shlex.quote(v)}" for k, v in (prep.launcher_env or {}).items()]
                                         + [shlex.join(prep.argv)]))
    common.output(out, json_out, show)


def _detached(prep: Prepared, err: Console, json_out: bool) -> None:
    """--detach: start the supervisor in the background and wait until the server is READY (exit 4 if it is not)."""
    from ..errors import EXIT_NOT_READY
    from ..launching import start_detached, wait_until

    pid = start_detached(prep)
    t0 = time.monotonic()
    view = LiveView(err, prep)
    with common.status(err, f"starting {prep.spec.name} (supervisor PID {pid})") as status:
        st = wait_until(prep.spec.name, (RunState.READY, RunState.FATAL, RunState.STOPPED), prep.spec.startup_timeout_s + 30,
                        on_poll=lambda s: status.update(view.poll_text(s, time.monotonic() - t0)))
    common.output(st, json_out, lambda con: view.summary(st))
    if st["state"] != RunState.READY:
        raise typer.Exit(EXIT_NOT_READY)


def _foreground(prep: Prepared, err: Console, json_out: bool) -> None:
    """Supervise in this process until stopped; exit 4 when it never became ready, 1 when it failed after."""
    from ..errors import EXIT_NOT_READY
    from ..launching import run_foreground
    from ..runs import read_state
    from ..supervisor.machine import State

    view = LiveView(err, prep)
    with common.status(err, f"starting {prep.spec.name}") as status:
        view.status = status
        sr, final = run_foreground(prep, on_event=view.event)
    st = read_state(prep.spec.name) or {}
    common.output(st, json_out, lambda con: None)  # people saw the live view
    if final == State.FATAL:
        err.print(f"[red]FATAL:[/] {st.get('reason', '')}")
        raise typer.Exit(EXIT_NOT_READY if not st.get("ready_at") else 1)


class LiveView:
    """Foreground progress: vLLM's phases while loading, then the summary beside the estimate."""

    def __init__(self, con: Console, prep: Prepared) -> None:
        self.con, self.prep, self.status = con, prep, None
        self.t0 = time.monotonic()
        self.phase = "starting"

    def poll_text(self, st: dict, elapsed: float) -> str:
        from ..runs import run_dir
        from ..supervisor.run import read_tail
        from ..engines import vllm as vllm_engine

        for line in reversed(read_tail(run_dir(self.prep.spec.name) / "server.log", 16384).splitlines()):
            ph = vllm_engine.phase_of(line)
            if ph:
                self.phase = ph
                break
        return f"{self.prep.spec.name}: {st.get('state', RunState.STARTING)} · {self.phase} · {elapsed:.0f}s"

    def event(self, kind: str, data: dict) -> None:
        el = time.monotonic() - self.t0
        if kind == "phase":
            self.phase = data["phase"]
            if self.status:
                self.status.update(f"{self.prep.spec.name}: {self.phase} · {el:.0f}s")
        elif kind == "state":
            self.con.print(f"[{el:6.1f}s] {data['old']} → {data['state']} {data.get('reason') or ''}".rstrip())
            if data["state"] == RunState.READY:
                from ..runs import read_state
                self.summary(read_state(self.prep.spec.name) or {})

    def summary(self, st: dict) -> None:
        from rich.table import Table

        f = st.get("facts") or {}
        e = self.prep.plan.estimate if self.prep.plan else None
        t = Table(title=f"{self.prep.spec.name}: {st.get('state')}", show_header=True)
        t.add_column("")
        t.add_column("vLLM reported")
        t.add_column("launcher estimate")
        t.add_row("endpoint", st.get("endpoint", "-"), "")
        cpu = self.prep.plan.cpu_kv if self.prep.plan else None
        est_tokens = f"{e.kv_cache_tokens:,}" if e else (f"{cpu['kv_cache_tokens']:,}" if cpu and cpu.get("kv_cache_tokens") else "-")
        t.add_row("KV cache tokens", f.get("kv_tokens", "-"), est_tokens)
        mc = f.get("max_concurrency")
        t.add_row("max concurrency", f"{mc[1]}x at {mc[0]}" if mc else "-",
                  f"{e.max_concurrency}x at {e.max_model_len:,}" if e else "-")
        t.add_row("KV cache GiB", f.get("kv_avail_gib", "-"), f"{e.kv_cache_bytes / 2**30:.2f}" if e else "-")
        t.add_row("weights GiB", f.get("weights_gib", "-"), f"{e.weights_bytes / 2**30:.2f}" if e else "-")
        t.add_row("restarts", str(st.get("restarts", 0)), "")
        if st.get("state") != RunState.READY:
            t.add_row("reason", st.get("reason", ""), "")
        self.con.print(t)


def supervise_detached(name: str, adopt: Annotated[bool, typer.Option("--adopt")] = False) -> None:
    """(internal) the detached supervisor's body."""
    from ..launching import supervise_from_record

    raise typer.Exit(supervise_from_record(name, adopt=adopt))


def adopt_running(name: str | None, json_out: bool) -> None:
    """`launch --name NAME --adopt`: a new supervisor over the server whose supervisor died, not restarted."""
    from ..errors import EXIT_NOT_READY, BadInput
    from ..launching import adopt, wait_until

    if not name:
        raise BadInput("--adopt needs --name NAME of the launch whose server is still running.", hint="See `launcher ps`.")
    pid = adopt(name)
    from ..runs import read_state

    deadline = time.monotonic() + 30  # until the new supervisor has recorded itself
    while ((read_state(name) or {}).get("supervisor") or {}).get("pid") != pid and time.monotonic() < deadline:
        time.sleep(0.1)
    st = wait_until(name, (RunState.READY, RunState.FATAL, RunState.STOPPED, RunState.BACKOFF), 120)
    common.output(st | {"supervisor_pid": pid}, json_out, lambda con: common.console(stderr=True).print(
        f"{name}: {st['state']} under a new supervisor (PID {pid}); "
        f"server PID {(st.get('server') or {}).get('pid')} kept running"))
    if st["state"] != RunState.READY:
        raise typer.Exit(EXIT_NOT_READY)
