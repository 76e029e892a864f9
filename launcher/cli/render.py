"""Rich rendering of an estimate, and its JSON form."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..units import gib

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from ..cluster.plan import ClusterPlan
    from ..estimator.core import Estimate
    from ..planning import Plan


def estimate_dict(p: Plan) -> dict:
    base = {"model": p.model.label, "load": p.model.load, "vllm_version": p.vllm_version, "gpu_source": p.source}
    if p.estimate is not None:
        d = p.estimate.to_dict()
        d.update(base)
        d["notes"] = p.notes
        d["chosen_gpus"], d["gpu_choice"] = p.chosen_gpus, p.gpu_choice
        d["beside"] = [n.to_dict() for n in p.beside]
        if p.cluster is not None:
            d["cluster"] = p.cluster.to_dict()
        return d
    kv = p.cpu_kv or {}
    fits = kv.get("fits")
    return base | {
        "device": "cpu", "fits": True if fits is None else fits, "max_model_len": kv.get("max_model_len"),
        "max_model_len_fit": kv.get("max_model_len_fit"), "kv_cache_tokens": kv.get("kv_cache_tokens"),
        "kv_cache_bytes": kv.get("kv_cache_bytes"), "kv_cache_source": kv.get("source"),
        "kv_bytes_per_token": kv.get("kv_bytes_per_token"), "weights_bytes": None, "activation_bytes": None,
        "lora_bytes": kv.get("lora_bytes"), "host_weights_bytes": kv.get("weights_bytes"),
        "host_available_bytes": kv.get("host_available_bytes"), "reason": kv.get("reason", ""),
        "beside": [n.to_dict() for n in p.beside],
        "cudagraph_bytes": None, "non_torch_bytes": None, "requested_bytes": None, "gpus": [],
        "notes": p.notes + ["No GPU: the CPU build of vLLM sizes its KV cache from VLLM_CPU_KVCACHE_SPACE (GiB), not by profiling."],
    }


def _g(b: int | None) -> str:
    return "-" if b is None else gib(b)


def render_estimate(p: Plan, con: Console) -> None:
    """A plan for people: the CPU build's KV cache, or the per-GPU table, the verdict and the notes."""
    if p.estimate is None:
        _render_cpu(p, estimate_dict(p), con)
        return
    e = p.estimate
    con.print(_gpu_table(p, e))
    color = {"measured": "green", "derived": "cyan", "extrapolated": "yellow"}.get(e.confidence, "white")
    con.print(f"confidence: [{color}]{e.confidence}[/] ({e.confidence_reason})")
    con.print(f"KV cache: {e.kv_cache_tokens:,} tokens ({e.kv_bytes_per_token:,} bytes/token), "
              f"max concurrency {e.max_concurrency:.2f}x at {e.max_model_len:,} tokens per request.")
    if e.fits:
        word = "auto: largest max_model_len" if e.auto else "fits: max_model_len"
        con.print(f"[green]✓ {word} {e.max_model_len:,}[/] (largest that fits: {e.max_model_len_fit:,}; model maximum {e.derived_max_model_len:,}).")
    else:
        con.print(f"[red]✗ does not fit:[/] {e.reason}")
        for s in e.suggestions:
            con.print(f"  → {s}")
    if p.cluster is not None:
        _render_nodes(p.cluster, con)
    if p.gpu_choice and len(p.gpus) > 1:
        con.print(f"GPUs: {p.gpu_choice}")
    for n in p.notes:
        con.print(f"[yellow]note:[/] {n}")


def _render_cpu(p: Plan, d: dict, con: Console) -> None:
    con.print(f"[bold]{p.model.label}[/] on the CPU build of vLLM")
    for n in d["notes"]:
        con.print(n)
    if d["reason"]:
        con.print(f"[red]✗ does not fit:[/] {d['reason']}")
    if d["kv_cache_bytes"]:
        con.print(f"KV cache {_g(d['kv_cache_bytes'])} GiB ({d['kv_cache_source']}): {d['kv_cache_tokens']:,} tokens; "
                  f"largest max_model_len {d['max_model_len_fit']:,}.")


def _gpu_table(p: Plan, e: Estimate) -> Table:
    """What vLLM reserves per GPU, row by row, down to the KV cache."""
    from rich.table import Table

    g = e.gpus[0] if e.gpus else {}
    src = "NVML" if p.source == "nvml" else "planned"
    t = Table(title=f"{p.model.label} · vLLM {p.vllm_version} · per GPU ({g.get('name', '?')}, {_g(e.total_bytes)} GiB, {src}) x{len(e.gpus)}")
    t.add_column("what")
    t.add_column("GiB", justify="right")
    t.add_row("requested (total x %.2f)" % e.gpu_memory_utilization, _g(e.requested_bytes))
    t.add_row("weights", _g(e.weights_bytes))
    if e.lora_bytes:
        lo = p.settings.lora
        t.add_row(f"LoRA adapters ({lo.max_loras} slot{'s' * (lo.max_loras > 1)} x rank {lo.max_lora_rank})", _g(e.lora_bytes))
    if e.draft_weights_bytes:
        sp = p.settings.speculative
        t.add_row(f"speculative proposer ({sp.method}, {e.draft_kv_layers} KV layer{'s' * (e.draft_kv_layers != 1)})",
                  _g(e.draft_weights_bytes))
    kept = " and the extensible KV cache's margin" if e.graph_memory == "measured" else ""
    t.add_row(f"peak activation (profile: {e.max_num_batched_tokens} tokens, {e.max_num_seqs} seqs){kept}",
              _g(e.activation_bytes))
    t.add_row("non-torch (NCCL, cuBLAS, allocator)", _g(e.non_torch_bytes))
    t.add_row(*_graph_row(e))
    if e.graph_segment_bytes:
        t.add_row("  of which: a fresh allocator segment per graph", _g(e.graph_segment_bytes))
    t.add_row("[bold]KV cache[/]", f"[bold]{_g(e.kv_cache_bytes)}[/]")
    return t


def _graph_row(e: Estimate) -> tuple[str, str]:
    if e.graph_memory == "launcher":
        return (f"CUDA graph pool (kept by the launcher: vLLM gets {e.vllm_gpu_memory_utilization:.4f})",
                _g(e.cudagraph_bytes))
    if e.graph_memory == "measured":
        return "CUDA graph pool and block tables (measured by vLLM before it sizes the KV cache)", _g(e.cudagraph_bytes)
    if e.graph_memory == "off":
        return "CUDA graphs (taken beyond the share: VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0)", "0.00"
    return "CUDA graphs (estimate vLLM subtracts)", _g(e.cudagraph_bytes)


def _render_nodes(cp: ClusterPlan, con: Console) -> None:
    from rich.table import Table

    t = Table(title=f"across nodes: {cp.world_size} ranks; the KV cache is the smallest of them (limiting: {cp.limiting_node})")
    for c in ("node", "ranks", "GPU", "total GiB", "free GiB", "KV tokens", "largest max_model_len", "fits"):
        t.add_column(c)
    for r in cp.per_node:
        t.add_row(r["node"], str(r["ranks"]), r["gpu"], r["total_gib"], r["free_gib"], f"{r['kv_cache_tokens']:,}",
                  f"{r['max_model_len_fit']:,}", "yes" if r["fits"] else "[red]no[/]")
    con.print(t)
