"""`launcher bench`: measured throughput, latency and GPU memory for a workload."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from . import common
from ..errors import ExitCode
from ..runs import RunState

if TYPE_CHECKING:
    from rich.console import Console

    from ..bench import BenchReport, Workload
    from ..spec import LaunchSpec


def bench(
    ctx: typer.Context,
    name: Annotated[Optional[str], typer.Option("--name", help="Benchmark this running launch (else start one from the model flags).")] = None,
    model: common.Model = None,
    revision: common.Revision = None,
    download_dir: common.DownloadDir = None,
    model_path: common.ModelPath = None,
    model_name: common.ModelName = None,
    size_in_billions: common.Size = None,
    model_format: common.ModelFormat = None,
    config: common.Config = None,
    env: common.Env = None,
    num_requests: common.NumRequests = 64,
    concurrency: common.Concurrency = 8,
    request_rate: common.RequestRate = None,
    prompt_len: common.PromptLen = None,
    output_len: common.OutputLen = None,
    prompts_file: common.PromptsFile = None,
    workload: Annotated[Optional[str], typer.Option("--workload", "-w", help="A named workload (chat, rag, batch, agent; as in `launcher tune`) at --concurrency; --prompt-len/--output-len override its lengths.")] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Requests sent first and not measured.")] = 2,
    prompt_format: Annotated[str, typer.Option("--prompt-format", help="ids (token ids, exact lengths) or text (random ids decoded with the model's tokenizer.json, like vLLM's random dataset).")] = "ids",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random prompts and lengths: the same seed sends the same requests.")] = 0,
    timeout: Annotated[float, typer.Option("--timeout", click_type=common.duration("--timeout"), help="Start-up deadline and per-request timeout, seconds.")] = 600.0,
    plot_file: Annotated[Optional[str], typer.Option("--plot", help="Write latency percentiles and throughput over time to this PNG.")] = None,
    json_out: common.Json = False,
) -> None:
    """Benchmark a server: request and token throughput, TTFT, TPOT and ITL (p50/p90/p99), errors,
    GPU memory and utilization (NVML). Exit: 0 all requests succeeded, 1 failures or the server died
    (partial results are still reported), 2 bad input, 3 does not fit, 4 never became ready."""
    from ..bench import plot
    from ..errors import BadInput

    plot_file = common.plot_path("--plot", plot_file)
    w = _workload(workload, seed, prompt_len, output_len, concurrency, num_requests, request_rate, warmup,
                  prompts_file)
    if prompt_format not in ("ids", "text"):
        raise BadInput("--prompt-format must be ids or text.")
    model_path, model_repo = common.split_model(model, model_path)
    if name and not (model_path or model_name or config or model_repo):
        idle = [flag for flag, v in (("--revision", revision), ("--download-dir", download_dir), ("--env", env),
                                     ("--size-in-billions", size_in_billions), ("--model-format", model_format))
                if v] + [a for a in ctx.args if a.startswith("-")]
        target = _running_launch(name, idle)
    else:
        spec = common.spec_from_cli(ctx)
        target = _launch_for_bench(spec, named=bool(name), timeout=timeout)
    if prompt_format == "text":
        w = _with_tokenizer(w, target.ref_path)
    rep = _measure(target, w, timeout)
    if plot_file:
        plot(rep, plot_file)
        common.said_plot(plot_file)
    common.output(rep.to_dict(), json_out, lambda con: render(rep, con))
    if rep.failed or rep.aborted:
        raise typer.Exit(ExitCode.FAILED)


@dataclass
class _Target:
    """What the benchmark talks to: the server's base URL, the model name it answers to, its vocabulary (for random
    token ids), the local folder vLLM loaded, the serving context (a launch started for the benchmark, or none)
    and whether the server is still the same healthy one."""

    model: str
    base: str
    vocab: int
    ref_path: str | None
    serving: object
    alive: object = None


def _workload(workload: str | None, seed: int, prompt_len: str | None, output_len: str | None, concurrency: int, num_requests: int,
              request_rate: float | None, warmup: int, prompts_file: str | None) -> Workload:
    """A named workload at this concurrency (the length options override its own, as in `launcher tune`), or the
    one the flags describe."""
    from dataclasses import replace

    from ..errors import BadInput

    if not workload:
        return common.workload(num_requests, concurrency, request_rate, prompt_len or "128", output_len or "64", prompts_file,
                               warmup=warmup, seed=seed)
    from ..bench import parse_range
    from ..workloads import at_level, named

    wl = named(workload, seed=seed,
               prompt_len=parse_range(prompt_len, "--prompt-len") if prompt_len else None,
               output_len=parse_range(output_len, "--output-len") if output_len else None)
    if len(wl) != 1:
        raise BadInput("bench takes one --workload at a time.")
    return replace(at_level(wl[0], concurrency, 0), num_requests=num_requests, request_rate=request_rate,
                   warmup=warmup).validate()


def _running_launch(name: str, idle: list[str]) -> _Target:
    """--name: a READY launch of ours, asked for the model name it serves (a Hub launch: the repository id)."""
    import contextlib

    from ..engines.vllm import served_model_name
    from ..errors import BadInput
    from ..launching import effective_state
    from ..planning import resolve_model
    from ..runs import read_json, read_state, run_dir

    if idle:
        raise BadInput(f"with --name (a running launch) {', '.join(idle)} would do nothing.",
                       hint="Drop them, or give model flags instead of --name to start a launch for the benchmark.")
    st = read_state(name)
    if st is None or effective_state(st) != RunState.READY:
        raise BadInput(f"launch '{name}' is not running.", hint="See `launcher ps`, or give model flags to start one.")
    rec = read_json(run_dir(name) / "launch.json") or {}
    spec, argv = rec.get("spec", {}), rec.get("argv", [])
    ref = resolve_model(spec.get("model_path"), spec.get("model_name"), spec.get("size_in_billions"),
                        spec.get("model_format"), spec.get("quantization"), model_repo=spec.get("model"),
                        revision=spec.get("revision"))
    host = "127.0.0.1" if st.get("host") in ("0.0.0.0", None) else st["host"]
    return _Target(served_model_name(argv), f"http://{host}:{st['port']}", ref.arch.vocab_size,
                   argv[argv.index("--model") + 1],  # the local folder vLLM loaded (a Hub model's snapshot)
                   contextlib.nullcontext(None), lambda: effective_state(read_state(name) or {}) == RunState.READY)


def _launch_for_bench(spec: LaunchSpec, *, named: bool, timeout: float) -> _Target:
    """A launch started for the benchmark (served in-process, stopped after it)."""
    from dataclasses import replace

    from ..engines.vllm import served_model_name
    from ..launching import prepare
    from ..planning import resolve_model
    from ..serving import served
    from .download import fetch_model

    if not named:
        spec = replace(spec, name=f"bench-{spec.name}"[:64])
    prep = prepare(spec, fetch=fetch_model(), claim=True)
    vocab = resolve_model(spec.model_path, spec.model_name, spec.size_in_billions, spec.model_format,
                          spec.quantization, model_repo=spec.model, revision=spec.revision).arch.vocab_size
    return _Target(served_model_name(prep.argv), f"http://127.0.0.1:{prep.port}", vocab, spec.model_path,
                   served(prep, timeout_s=timeout))


def _with_tokenizer(w: Workload, ref_path: str | None) -> Workload:
    from dataclasses import replace
    from pathlib import Path

    from ..errors import BadInput

    tok = Path(ref_path or "") / "tokenizer.json"
    if not ref_path or not tok.is_file():
        raise BadInput("--prompt-format text needs a local model folder with tokenizer.json.")
    return replace(w, tokenizer=str(tok))


def _measure(target: _Target, w: Workload, timeout: float) -> BenchReport:
    import os

    from ..bench import run_bench
    from ..supervisor.machine import State

    con = common.console(stderr=True)
    with target.serving as sr:
        alive = target.alive
        if sr is not None:  # the in-process supervisor: the same server, never restarted
            alive = (lambda: sr.sup.state == State.READY and sr.sup.restarts == 0)  # noqa: E731
        from ..bench import served_max_len
        from ..workloads import check_fits

        check_fits(w, served_max_len(target.base, target.model, os.environ.get("VLLM_API_KEY")))
        with common.status(con, f"benchmarking {target.model}: {w.num_requests} requests, concurrency {w.concurrency}"):
            return run_bench(target.base, target.model, w, vocab_size=target.vocab,
                             api_key=os.environ.get("VLLM_API_KEY"), timeout_s=timeout, alive=alive)


def render(rep: BenchReport, con: Console) -> None:
    from rich.table import Table

    t = Table(title=f"bench: {rep.completed} ok, {rep.failed} failed in {rep.duration_s:.1f} s" + (f" — {rep.aborted}" if rep.aborted else ""))
    t.add_column("metric")
    for c in ("mean", "p50", "p90", "p99"):
        t.add_column(c, justify="right")
    for label, d in (("TTFT ms", rep.ttft_s), ("TPOT ms", rep.tpot_s), ("ITL ms", rep.itl_s), ("latency ms", rep.latency_s)):
        t.add_row(label, *("-" if d[k] is None else f"{d[k] * 1000:.1f}" for k in ("mean", "p50", "p90", "p99")))
    con.print(t)
    gpu = rep.gpu
    con.print(f"requests/s {rep.request_throughput:.2f} · output tokens/s {rep.output_throughput:.1f} · "
              f"total tokens/s {rep.total_token_throughput:.1f}" +
              (f" · GPU max used {gpu['max_used_bytes'] / 2**30:.2f} GiB, mean util {gpu['mean_util_pct']:.0f}%" if gpu.get("max_used_bytes") else " · no GPU sampled"))
    srv = rep.server
    if srv:
        con.print("server: " + " · ".join(
            x for x in (f"preemptions {srv['preemptions']:.0f}" if "preemptions" in srv else "",
                        f"prefix cache hit rate {srv['prefix_cache_hit_rate']:.0%}" if "prefix_cache_hit_rate" in srv else "")
            if x))
    for e in rep.errors:
        con.print(f"[red]error:[/] {e}")
