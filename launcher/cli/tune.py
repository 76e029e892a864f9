"""`launcher tune`: engine settings chosen for named workloads, measured against vLLM's defaults."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from . import common
from ..errors import ExitCode

if TYPE_CHECKING:
    from rich.console import Console

    from ..spec import LaunchSpec
    from ..tune import Candidate, TuneResult
    from ..workloads import Named


def _ints(s: str, what: str) -> list[int]:
    from ..errors import BadInput
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise BadInput(f"{what}: expected a comma-separated list of integers, got '{s}'.") from None


def tune(
    ctx: typer.Context,
    model: common.Model = None,
    revision: common.Revision = None,
    download_dir: common.DownloadDir = None,
    model_path: common.ModelPath = None,
    model_name: common.ModelName = None,
    size_in_billions: common.Size = None,
    model_format: common.ModelFormat = None,
    config: common.Config = None,
    env: common.Env = None,
    gpu_memory: common.GpuMemory = None,
    gpu: common.GpuPreset = None,
    num_gpus: common.NumGpus = None,
    workload: Annotated[str, typer.Option("--workload", "-w", help="chat, rag, batch, agent, or several (comma-separated) measured on the same engine starts.")] = "chat",
    slo_ttft_p99: Annotated[Optional[float], typer.Option("--slo-ttft-p99", click_type=common.positive("--slo-ttft-p99"), help="Latency target, seconds: p99 time to first token (chat 0.5, rag 2, agent 1 by default; batch has none).")] = None,
    budget: Annotated[Optional[str], typer.Option("--budget", help="Time for the whole tune, e.g. 15m: candidates that would not finish in it are not started.")] = None,
    levels: Annotated[Optional[str], typer.Option("--concurrency-levels", show_default="the workload's", help="Load levels swept on each start.")] = None,
    num_requests: Annotated[Optional[int], typer.Option("--num-requests", "-n", min=1, show_default="the workload's", help="Requests per load level.")] = None,
    prompt_len: Annotated[Optional[str], typer.Option("--prompt-len", help="Override the workloads' prompt tokens (after any shared prefix): N or LO:HI.")] = None,
    output_len: Annotated[Optional[str], typer.Option("--output-len", help="Override the workloads' answer tokens: N or LO:HI.")] = None,
    prefix_len: Annotated[Optional[str], typer.Option("--prefix-len", help="Override the shared prefix tokens (rag documents, agent system prompt): N or LO:HI.")] = None,
    max_num_seqs: Annotated[str, typer.Option("--max-num-seqs-grid", help="Try exactly these max_num_seqs values (with the other grids) instead of the proposals.")] = "",
    max_num_batched_tokens: Annotated[str, typer.Option("--max-num-batched-tokens-grid", help="Try exactly these max_num_batched_tokens values.")] = "",
    utilizations: Annotated[str, typer.Option("--gpu-memory-utilization-grid", help="Try exactly these gpu_memory_utilization values.")] = "",
    kv_dtypes: Annotated[str, typer.Option("--kv-cache-dtype-grid", help="Try these kv_cache_dtype values, e.g. auto,fp8 (fp8 changes the numerics).")] = "",
    allow_fp8_kv: Annotated[bool, typer.Option("--allow-fp8-kv-cache", help="Also propose an fp8 KV cache where decode reads much KV or the workload needs more KV than vLLM sized. It changes the numerics slightly: check accuracy before serving the winner.")] = False,
    refine: Annotated[int, typer.Option("--refine", min=0, help="Bisections, on the same start, between the last load level that met the target and the first that missed it.")] = 2,
    min_gain: Annotated[float, typer.Option("--min-gain", click_type=common.Number("--min-gain", at_least=0), help="A candidate must beat vLLM's defaults by more than this fraction to be chosen; the defaults are then started once more and must be beaten in both starts.")] = 0.05,
    timeout: Annotated[float, typer.Option("--timeout", click_type=common.duration("--timeout"), help="Start-up deadline per candidate and per-request timeout, seconds.")] = 900.0,
    out_dir: Annotated[Optional[Path], typer.Option("--out-dir", show_default="./tune-NAME", help="Where results.json, one launch file per workload and the plot go.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Reuse the candidates already measured in OUT_DIR/results.json for the same model, launch and workloads.")] = False,
    plot_file: Annotated[Optional[str], typer.Option("--plot", help="Also draw p99 TTFT against output throughput, per candidate and load level, into this PNG (as --plot of estimate, bench and plan).")] = None,
    json_out: common.Json = False,
) -> None:
    """Find engine settings that beat vLLM's defaults for a named workload, measured for real.

    vLLM's defaults start first; each workload is swept over its load levels on that one start. Candidates
    come from the estimator and from what vLLM resolved (prefill step, KV cache): each is checked by the
    pre-flight (what cannot fit is pruned before it starts), started once and swept the same way, within
    --budget. Per workload the winner (highest output throughput at a load level meeting the latency
    target) is compared with the defaults and written as a launch file: launcher launch --config FILE.
    Exit: 0 every workload has a setting that meets its target, 1 some workload has none, 2 bad input,
    3 the defaults do not fit, 4 the defaults never became ready."""
    import os
    from dataclasses import replace

    from ..planning import resolve_model
    from ..tune import Tuner
    from .download import fetch_model

    spec = common.spec_from_cli(ctx)
    spec = replace(spec, name=f"tune-{spec.name}"[:60])
    if out_dir is not None:
        _make_out_dir(out_dir)
    plot_file = common.plot_path("--plot", plot_file)  # after --out-dir is made: the picture may go there
    wls = _workloads(spec, workload, num_requests, levels, prompt_len, output_len, prefix_len, slo_ttft_p99)
    grid = _grid(max_num_seqs, max_num_batched_tokens, utilizations, kv_dtypes)
    ref = resolve_model(spec.model_path, spec.model_name, spec.size_in_billions, spec.model_format, spec.quantization,
                        model_repo=spec.model, revision=spec.revision)
    from ..units import parse_duration

    out = out_dir or Path(f"tune-{spec.name.removeprefix('tune-')}")
    con = common.console(stderr=True)
    tuner = Tuner(spec, wls, vocab_size=ref.arch.vocab_size, timeout_s=timeout,
                  budget_s=parse_duration(budget, what="--budget") if budget else None,
                  results_path=out / "results.json", resume=resume, grid=grid, on_progress=con.print,
                  api_key=os.environ.get("VLLM_API_KEY"), min_gain=min_gain, refine=refine, fetch=fetch_model(),
                  allow_fp8_kv=allow_fp8_kv)
    res = tuner.run()
    d, files = _write_results(res, spec, wls, out, plot_file)
    common.output(d, json_out, lambda con: render(res, files, con))
    _exit(res, wls)


def _make_out_dir(path: Path) -> None:
    """--out-dir made (or found) before anything starts: BadInput where it cannot be."""
    from ..errors import BadInput

    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInput(f"--out-dir {path}: cannot be made ({e.strerror or e}).", hint="Give a folder you can write.") from None


def _workloads(spec: LaunchSpec, workload: str, num_requests: int | None, levels: str | None, prompt_len: str | None,
               output_len: str | None, prefix_len: str | None, slo_ttft_p99: float | None) -> list[Named]:
    """The named workloads with the flags' overrides; each must fit the launch's --max-model-len."""
    from ..bench import parse_range
    from ..errors import BadInput
    from ..workloads import named

    wls = named(workload, num_requests=num_requests, levels=_ints(levels, "--concurrency-levels") if levels else None,
                prompt_len=parse_range(prompt_len, "--prompt-len") if prompt_len else None,
                output_len=parse_range(output_len, "--output-len") if output_len else None,
                prefix_len=parse_range(prefix_len, "--prefix-len") if prefix_len else None, slo_ttft_p99_s=slo_ttft_p99)
    mml = spec.engine_args.get("max-model-len")
    for wl in wls:
        need = wl.workload.max_seq_len()
        if isinstance(mml, int) and need > mml:
            raise BadInput(f"the {wl.name} workload reaches {need} tokens per request, more than --max-model-len {mml}.",
                           hint=f"Give --max-model-len {need} or more, or shorten it with --prompt-len/--prefix-len/--output-len.")
    for wl in wls:
        common.console(stderr=True).print(f"[bold]{wl.name}[/]: {wl.describe()}")
    return wls


def _grid(max_num_seqs: str, max_num_batched_tokens: str, utilizations: str, kv_dtypes: str) -> list[Candidate] | None:
    """The explicit grid the --*-grid flags give, or None (the tuner proposes its own)."""
    from ..errors import BadInput
    from ..tune import explicit_grid

    if not any(g.strip() for g in (max_num_seqs, max_num_batched_tokens, utilizations, kv_dtypes)):
        return None
    try:
        utils = [float(x) for x in utilizations.split(",") if x.strip()]
    except ValueError:
        raise BadInput(f"--gpu-memory-utilization-grid: expected numbers, got '{utilizations}'.") from None
    return explicit_grid(_ints(max_num_seqs, "--max-num-seqs-grid"),
                         _ints(max_num_batched_tokens, "--max-num-batched-tokens-grid"), utils,
                         [x.strip() for x in kv_dtypes.split(",") if x.strip()])


def _write_results(res: TuneResult, spec: LaunchSpec, wls: list[Named], out: Path, plot_file: str | None) -> tuple[dict, dict]:
    """Each workload's winner as a launch file, the plot; the results as a dict and the files by workload."""
    from ..tune import launch_file, plot

    d = res.to_dict()
    files = {}
    for wl, wd in zip(wls, d["workloads"]):
        w = res.winner(wl)
        if w is not None:
            f = out / f"{wl.name}.yaml"
            f.write_text(launch_file(spec, w, wl, res))
            files[wl.name] = wd["launch_file"] = str(f)
    if plot_file and any(c.points for c in res.candidates):
        plot(res, plot_file)
        d["plot"] = plot_file
        common.said_plot(plot_file)
    d["results"] = str(out / "results.json")
    return d, files


def _exit(res: TuneResult, wls: list[Named]) -> None:
    """Exit 3 when vLLM's defaults do not fit, 4 when they did not run, 1 when a workload has no winner."""
    dflt = res.defaults
    if dflt is not None and not dflt.ran:
        from ..errors import DoesNotFit, NotReady
        if dflt.fits is False:
            raise DoesNotFit(f"vLLM's defaults do not fit: {dflt.pruned}")
        raise NotReady(f"vLLM's defaults did not run: {dflt.error}")
    if any(res.winner(wl) is None for wl in wls):
        raise typer.Exit(ExitCode.FAILED)


def render(res: TuneResult, files: dict, con: Console) -> None:
    from rich.table import Table

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x * 1000:.0f}"
    for wl in res.workloads:
        t = Table(title=f"{wl.name}: output tokens/s" + (f" at p99 TTFT ≤ {wl.slo_ttft_p99_s * 1000:.0f} ms" if wl.slo_ttft_p99_s else ""))
        for col in ("#", "candidate", "KV k-tok est/vLLM", "start s", "load", "out tok/s", "p99 TTFT ms",
                    "TPOT ms", "pre-empt", "prefix hit", "vs defaults", "note"):
            t.add_column(col)
        base = res.defaults_score(wl)
        rows = res.ranked(wl) + ([res.defaults_again] if res.defaults_again else [])
        for i, c in enumerate(rows, 1):
            p, s = c.best_point(wl), c.score(wl)
            kv = "/".join(f"{x / 1000:.0f}" if x else "-" for x in (c.predicted_kv_tokens, c.vllm_kv_tokens))
            note = c.pruned or c.error or c.skipped or ("" if s is not None or not p else "target not met at any load")
            t.add_row(str(i), c.label, kv, "-" if c.start_s is None else f"{c.start_s:.0f}",
                      str(p.concurrency) if p else "-", f"{s:.1f}" if s is not None else "-",
                      ms(p.ttft_p99_s) if p else "-", ms(p.tpot_p50_s) if p else "-",
                      "-" if not p or p.preemptions is None else f"{p.preemptions:.0f}",
                      "-" if not p or p.prefix_cache_hit_rate is None else f"{p.prefix_cache_hit_rate:.0%}",
                      f"{s / base - 1:+.1%}" if s is not None and base else "-", note[:80])
        con.print(t)
        w, imp = res.winner(wl), res.improvement(wl)
        if w is None:
            con.print(f"{wl.name}: no candidate met the target at any load level.")
        elif not w.engine_args:
            con.print(f"{wl.name}: vLLM's defaults stay (no candidate beat them by more than {res.min_gain:.0%}) → {files.get(wl.name)}")
        else:
            con.print(f"{wl.name}: winner {w.label}, {imp:+.1%} vs vLLM's defaults → {files.get(wl.name)} "
                      f"(launcher launch --config {files.get(wl.name)})" if imp is not None else
                      f"{wl.name}: winner {w.label} (the defaults met the target at no load level) → {files.get(wl.name)}")
