"""What each model of a models file holds on one GPU of a given kind, from the estimate (no load, no GPU): its share
(`gpu_memory_budget` or `--gpu-memory-utilization` where the entry gives one, else the smallest share at which its
max_model_len fits, as `launcher estimate` finds it for copies on one GPU), what vLLM takes beside that share, and its
CUDA context."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .pack import Need

if TYPE_CHECKING:
    from ..models_file import ModelEntry


def need_of(entry: ModelEntry, gpu_name: str, total_bytes: int, order: int, vllm_version: str | None = None) -> Need:
    """The entry as it would run on GPUs of `total_bytes` each; a Need whose `reason` says why where it fits on
    none (the estimate's own reason and advice)."""
    from ..errors import BadInput, DoesNotFit
    from ..estimator import GpuBudget
    from ..estimator.core import context_bytes
    from ..estimator.sharing import smallest_share
    from ..engines import vllm as vllm_engine
    from ..planning import plan, resolve_model

    s = entry.spec
    args = dict(s.engine_args)
    pp = int(args.get("pipeline-parallel-size") or 1)
    n = int(args.get("tensor-parallel-size") or 1) * pp
    base = Need(entry.name, n, pinned=entry.pinned, preload=entry.preload, order=order, stages=pp)
    try:
        ref = resolve_model(s.model_path, s.model_name, s.size_in_billions, s.model_format, s.quantization,
                            model_repo=s.model, revision=s.revision)
        p = plan(ref, args, gpu_memory=f"{total_bytes >> 20}MiB", num_gpus=n, vllm_version=vllm_version,
                 gpu_memory_budget=s.gpu_memory_budget, suggest=True)
    except (BadInput, DoesNotFit) as e:
        return _with(base, reason=str(e))
    e = p.estimate
    ctx = context_bytes(total_bytes)
    if s.gpu_memory_budget or args.get("gpu-memory-utilization") is not None:  # its share as written
        if not e.fits:
            return _with(base, reason=_why(e))
        return _with(base, bytes_per_gpu=e.requested_bytes + e.outside_budget_bytes + ctx, share_bytes=e.requested_bytes)
    want = e.max_model_len if e.max_model_len > 0 else p.model.arch.derived_max_len
    found = smallest_share(p.model.arch, p.settings, GpuBudget(gpu_name, total_bytes, None),
                           vllm_engine.parse_version(p.vllm_version), want)
    if found is None:
        return _with(base, reason=_why(e))
    _, small = found
    return _with(base, bytes_per_gpu=small.requested_bytes + small.outside_budget_bytes + ctx,
                 share_bytes=small.requested_bytes)


def _why(e) -> str:
    advice = "; ".join(e.suggestions[:2]) if e.suggestions else ""
    return f"fits on no GPU of this kind alone: {e.reason}" + (f" Would: {advice}." if advice else "")


def _with(n: Need, **kw) -> Need:
    from dataclasses import replace

    return replace(n, **kw)


def memory_need_of(entry: ModelEntry, order: int) -> Need:
    """The entry as vLLM's CPU build runs it (a node of a Ray cluster offering memory, not GPUs): its weights and its
    KV cache (VLLM_CPU_KVCACHE_SPACE, as the launch sets it), as one device's worth."""
    import os

    from ..errors import BadInput
    from ..planning import cpu_held_bytes, plan, resolve_model

    s = entry.spec
    base = Need(entry.name, 1, pinned=entry.pinned, preload=entry.preload, order=order)
    try:
        ref = resolve_model(s.model_path, s.model_name, s.size_in_billions, s.model_format, s.quantization,
                            model_repo=s.model, revision=s.revision)
        kv = plan(ref, dict(s.engine_args), device="cpu", env={**os.environ, **s.env}, suggest=False).cpu_kv or {}
    except BadInput as e:
        return _with(base, reason=str(e))
    need = cpu_held_bytes(kv)
    return _with(base, bytes_per_gpu=need, share_bytes=need)

