"""`launcher smoke`: launch, real requests, verdict, clean stop, report."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from . import common

if TYPE_CHECKING:
    from rich.console import Console

    from ..launching import Prepared
    from ..spec import LaunchSpec
    from ..smoke import SmokeReport


def smoke(
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
    config: common.Config = None,
    timeout: Annotated[float, typer.Option("--timeout", click_type=common.duration("--timeout"), help="Deadline in seconds for the whole smoke.")] = 600.0,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="max_tokens of each request.")] = 8,
    stream: Annotated[bool, typer.Option("--stream", help="Also check a streaming chat completion.")] = False,
    expect: Annotated[Optional[str], typer.Option("--expect", help="Regex that some output must match.")] = None,
    report_json: Annotated[Optional[Path], typer.Option("--report-json", help="Write the report as JSON here.")] = None,
    junit_xml: Annotated[Optional[Path], typer.Option("--junit-xml", help="Write a JUnit XML report here.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the command line and the estimate; start nothing.")] = False,
    no_preflight: common.NoPreflight = False,
    gpu_memory: common.GpuMemory = None,
    gpu: common.GpuPreset = None,
    num_gpus: common.NumGpus = None,
    ray_address: common.RayAddress = None,
    ray_dashboard: common.RayDashboard = None,
    json_out: common.Json = False,
) -> None:
    """Launch, wait for ready, send real requests (models, completion, chat, optional stream), stop, report.
    Exit: 0 passed, 1 a check failed, 2 bad input, 3 does not fit (pre-flight), 4 never became ready."""
    from ..launching import prepare
    from .download import fetch_model

    _check_request_options(expect, max_tokens)
    common.output_path("--report-json", report_json)
    common.output_path("--junit-xml", junit_xml)
    spec = common.spec_from_cli(ctx)
    if not name:
        from dataclasses import replace
        spec = replace(spec, name=f"smoke-{spec.name}"[:64])
    if dry_run:
        return _dry_run_of(spec, json_out)
    prep = prepare(spec, check_port=True, fetch=fetch_model(), claim=True)
    rep = _run(prep, timeout=timeout, max_tokens=max_tokens, stream=stream, expect=expect, api_key_env=api_key_env)
    if report_json:
        report_json.write_text(__import__("json").dumps(rep.to_dict(), indent=2))
    if junit_xml:
        junit_xml.write_text(rep.junit_xml())
    common.output(rep.to_dict(), json_out, lambda con: render_report(rep, con))
    raise typer.Exit(rep.exit_code)


def _check_request_options(expect: str | None, max_tokens: int) -> None:
    import re

    from ..errors import BadInput

    if expect:
        try:
            re.compile(expect)
        except re.error as e:
            raise BadInput(f"--expect is not a valid regex: {e}.") from None
    if max_tokens < 1:
        raise BadInput("--max-tokens must be at least 1.")


def _dry_run_of(spec: LaunchSpec, json_out: bool) -> None:
    """--dry-run: the command line and the estimate, nothing started. A launch the pre-flight refuses still shows
    the command line it would run, with the refusal as the verdict (exit 3)."""
    from dataclasses import replace

    from ..errors import DoesNotFit, ExitCode
    from ..launching import prepare

    try:
        prep = prepare(spec, check_port=False, fetch=None, claim=False)
    except DoesNotFit as e:
        prep = prepare(replace(spec, preflight=False), check_port=False, fetch=None, claim=False)
        _dry_run(prep, json_out, refused=e)
        raise typer.Exit(ExitCode.DOES_NOT_FIT) from None
    _dry_run(prep, json_out)


def _dry_run(prep: Prepared, json_out: bool, refused: Exception | None = None) -> None:
    import shlex

    out = {"command": prep.argv, "port": prep.port, "note": prep.note, "fits": refused is None,
           "estimate": prep.plan.estimate.to_dict() if prep.plan and prep.plan.estimate else None,
           "cpu_kv": prep.plan.cpu_kv if prep.plan else None}
    if refused is not None:
        out |= {"reason": getattr(refused, "message", str(refused)), "hint": getattr(refused, "hint", None)}

    def show(con: Console) -> None:
        con.print("command: " + shlex.join(prep.argv))
        if prep.plan and (prep.plan.estimate or prep.plan.cpu_kv):
            from .render import render_estimate

            render_estimate(prep.plan, con)
        if refused is not None:
            con.print(f"verdict: refused, nothing would start: {out['reason']}" + (f" {out['hint']}" if out["hint"] else ""))
    common.output(out, json_out, show)


def _run(prep: Prepared, *, timeout: float, max_tokens: int, stream: bool, expect: str | None,
         api_key_env: str | None) -> SmokeReport:
    """The smoke itself (launching.smoke), with its phases shown; a CI runner's SIGTERM stops it like Ctrl-C."""
    import os
    import signal

    from ..smoke import smoke as run_smoke

    api_key = os.environ.get(api_key_env) if api_key_env else os.environ.get("VLLM_API_KEY")

    def _terminate(*_: object) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _terminate)
    con = common.console(stderr=True)
    with common.status(con, f"smoke {prep.spec.name}: starting") as status:
        def ev(kind: str, data: dict) -> None:
            if kind == "phase":
                status.update(f"smoke {prep.spec.name}: {data['phase']}")
        return run_smoke(prep, timeout_s=timeout, max_tokens=max_tokens, stream=stream, expect=expect,
                         api_key=api_key, on_event=ev)


def render_report(rep: SmokeReport, con: Console) -> None:
    from rich.table import Table

    t = Table(title=f"smoke {rep.name}: {'PASSED' if rep.passed else 'FAILED'}")
    t.add_column("check")
    t.add_column("result")
    t.add_column("seconds", justify="right")
    t.add_column("detail", overflow="fold")
    for c in rep.checks:
        t.add_row(c.name, "[green]pass[/]" if c.passed else "[red]FAIL[/]", f"{c.seconds:.2f}", c.detail)
    con.print(t)
    con.print(f"endpoint {rep.endpoint} · time to ready {rep.time_to_ready_s} s · KV cache tokens: vLLM {rep.kv_cache_tokens_vllm}, "
              f"estimate {rep.kv_cache_tokens_estimate} · processes left: {len(rep.leftover_pids)}")
    if rep.reason and not rep.passed:
        con.print(f"[red]reason:[/] {rep.reason}")
