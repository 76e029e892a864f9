"""How many copies of a launch fit on one GPU at a given length, each started after the previous one is READY.

Each copy needs the smallest share (utilization x total) at which the length fits, what vLLM takes beyond its share
(estimate.outside_budget_bytes: CUDA graph capture, per-request tables, warm-up) and its own CUDA context (at least
the driver's reserve, core.context_bytes). vLLM checks at start-up that its share is free, so copies started one after the
other (as `launcher launch` starts them) fit while the sum of those footprints fits in the GPU's free memory.
"""
from __future__ import annotations

from dataclasses import replace

from ..models.config import ModelArch
from .core import EngineSettings, Estimate, GpuBudget, context_bytes, estimate


def smallest_share(m: ModelArch, s: EngineSettings, gpu: GpuBudget, vllm_version: tuple[int, ...],
                   max_model_len: int) -> Estimate | None:
    """The smallest utilization (two decimals) at which max_model_len fits, with its estimate, or None."""
    idle = GpuBudget(gpu.name, gpu.total_bytes, None)  # the share alone: the free memory is checked by the caller

    def fits(u: float):
        e = estimate(m, replace(s, gpu_memory_utilization=u, max_model_len=max_model_len), idle,
                     vllm_version=vllm_version, suggest=False)
        return e if e.fits else None

    lo, hi = 1, 99  # hundredths
    best = fits(hi / 100)  # the estimate at the smallest share found to fit so far
    if best is None:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        e = fits(mid / 100)
        if e is not None:
            hi, best = mid, e
        else:
            lo = mid + 1
    return hi / 100, best


def copies(m: ModelArch, s: EngineSettings, gpu: GpuBudget, vllm_version: tuple[int, ...], max_model_len: int) -> dict | None:
    """{"copies", "utilization", "footprint_bytes"} for one GPU (its free memory when known, else its total)."""
    if s.kv_cache_memory_bytes or s.tensor_parallel_size * s.pipeline_parallel_size != 1:
        return None
    found = smallest_share(m, s, gpu, vllm_version, max_model_len)
    if found is None:
        return {"copies": 0, "utilization": None, "footprint_bytes": None, "max_model_len": max_model_len}
    u, e = found
    footprint = e.requested_bytes + e.outside_budget_bytes + context_bytes(gpu.total_bytes)
    free = gpu.free_bytes if gpu.free_bytes is not None else gpu.total_bytes
    return {"copies": free // footprint, "utilization": u, "footprint_bytes": footprint, "max_model_len": max_model_len}
