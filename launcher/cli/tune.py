"""`launcher tune`: a configuration chosen for the workload, measured for real."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import common
from .launch import Env, spec_from_cli


def _ints(s: str) -> list[int]:
    from ..errors import BadInput
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise BadInput(f"expected a comma-separated list of integers, got '{s}'.") from None


def tune(
    ctx: typer.Context,
    model_path: common.ModelPath = None,
    model_name: common.ModelName = None,
    size_in_billions: common.Size = None,
    model_format: common.ModelFormatOpt = None,
    config: common.Config = None,
    env: Env = None,
    gpu_memory: common.GpuMemory = None,
    gpu: common.GpuPreset = None,
    num_gpus: common.NumGpus = None,
    max_num_seqs: Annotated[str, typer.Option("--max-num-seqs-grid", help="Candidates for max_num_seqs.")] = "64,256",
    max_num_batched_tokens: Annotated[str, typer.Option("--max-num-batched-tokens-grid", help="Candidates for max_num_batched_tokens.")] = "2048,8192",
    utilizations: Annotated[str, typer.Option("--gpu-memory-utilization-grid", help="Candidates for gpu_memory_utilization ('' for none).")] = "",
    kv_dtypes: Annotated[str, typer.Option("--kv-cache-dtype-grid", help="Candidates for kv_cache_dtype, e.g. auto,fp8.")] = "auto",
    ttft_p99_ms: Annotated[Optional[float], typer.Option("--ttft-p99-ms", help="Latency target: p99 time to first token.")] = None,
    num_requests: common.NumRequests = 64,
    concurrency: common.Concurrency = 8,
    request_rate: common.RequestRate = None,
    prompt_len: common.PromptLen = "128",
    output_len: common.OutputLen = "64",
    prompts_file: common.PromptsFile = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Start-up deadline per candidate, seconds.")] = 900.0,
    out: Annotated[Path, typer.Option("--out", help="Launch file for the winner.")] = Path("launch-tuned.yaml"),
    json_out: common.Json = False,
) -> None:
    """Prune candidate settings with the estimator (the context length you need must fit: give
    --max-model-len), launch and benchmark the rest, stop early where a candidate is clearly worse,
    rank by output throughput among those meeting --ttft-p99-ms, write a launch file for the winner.
    Exit: 0 a winner was found, 1 none met the target, 2 bad input."""
    from ..planning import resolve_model
    from ..tune import grid, launch_file, tune as run_tune

    spec = spec_from_cli(ctx, config, dict(model_path=model_path, model_name=model_name, size_in_billions=size_in_billions,
                                           model_format=model_format, env=env, gpu_memory=gpu_memory, gpu=gpu,
                                           num_gpus=num_gpus, startup_timeout_s=timeout))
    from dataclasses import replace
    spec = replace(spec, name=f"tune-{spec.name}"[:60])
    w = common.workload(num_requests, concurrency, request_rate, prompt_len, output_len, prompts_file)
    cands = grid(_ints(max_num_seqs), _ints(max_num_batched_tokens),
                 [float(x) for x in utilizations.split(",") if x.strip()], [x for x in kv_dtypes.split(",") if x.strip()])
    vocab = resolve_model(spec.model_path, spec.model_name, spec.size_in_billions, spec.model_format, spec.quantization).arch.vocab_size
    con = common.console(stderr=True)

    def progress(c):
        r = c.report
        con.print(f"{c.label}: " + (f"pruned ({c.why_pruned})" if c.fits is False else c.error or
                  f"{r.output_throughput:.1f} output tok/s, p99 TTFT {r.ttft_s['p99'] * 1000 if r.ttft_s['p99'] else float('nan'):.0f} ms"
                  + (f" (stopped early: {c.stopped_early})" if c.stopped_early else "")))
    res = run_tune(spec, cands, w, ttft_p99_ms=ttft_p99_ms, timeout_s=timeout, vocab_size=vocab, on_progress=progress)
    if res.winner:
        out.write_text(launch_file(spec, res.winner))
    d = res.to_dict() | {"launch_file": str(out) if res.winner else None}
    if json_out:
        common.emit_json(d)
    else:
        from rich.table import Table

        t = Table(title="launcher tune" + (f" (target p99 TTFT ≤ {ttft_p99_ms:.0f} ms)" if ttft_p99_ms else ""))
        for col in ("#", "candidate", "output tok/s", "req/s", "p99 TTFT ms", "p99 TPOT ms", "meets target", "note"):
            t.add_column(col)
        for i, c in enumerate(d["ranked"], 1):
            ms = (lambda x: "-" if x is None else f"{x * 1000:.0f}")
            t.add_row(str(i), c["label"], "-" if c["output_throughput"] is None else f"{c['output_throughput']:.1f}",
                      "-" if c["request_throughput"] is None else f"{c['request_throughput']:.2f}", ms(c["ttft_p99_s"]),
                      ms(c["tpot_p99_s"]), str(c["meets_target"]), c["pruned"] or c["error"] or c["stopped_early"])
        common.console().print(t)
        if res.winner:
            common.console().print(f"winner: {res.winner.label} → {out} (use: launcher launch --config {out})")
    if not res.winner:
        raise typer.Exit(1)
