"""vLLM 0.34.0's sizing of its extensible KV cache, verbatim from its source (the oracle for tests/test_releases.py).

Copied from vllm 0.34.0 (Apache-2.0, the vLLM project), vllm/v1/worker/extensible_kv_cache.py: the CUDA values of
KV_CACHE_MARGIN_FLOOR_BYTES and KV_CACHE_MARGIN_FRACTION and the function measure_kv_cache_bytes, unchanged. The
0.34 wheel has no CPU build here, so the function is kept as text rather than imported."""

KV_CACHE_MARGIN_FLOOR_BYTES = 1 << 30  # (3 if current_platform.is_rocm() else 1) << 30
KV_CACHE_MARGIN_FRACTION = 0.75


def measure_kv_cache_bytes(
    *,
    init_free_memory: int,
    free_memory: int,
    committed_bytes: int,
    requested_memory: int,
    transient_peak_bytes: int = 0,
    torch_reserve_growth_bytes: int = 0,
    margin_floor_bytes: int = KV_CACHE_MARGIN_FLOOR_BYTES,
    margin_fraction: float = KV_CACHE_MARGIN_FRACTION,
) -> int:
    """Bytes the KV cache may occupy given the memory measured after warmup.

    Everything resident except the committed KV prefix is needed by the engine;
    the cache gets the rest of the budget, capped by the device headroom (free
    memory plus the committed prefix) less a margin of
    `max(margin_floor_bytes, margin_fraction * transient_peak_bytes)`. The
    larger of transient_peak_bytes and torch_reserve_growth_bytes is then kept
    free in full. The margin guards physical memory, so it never reduces an
    explicit budget that already leaves that much free.
    """
    non_kv_used = init_free_memory - free_memory - committed_bytes
    headroom = free_memory + committed_bytes
    margin = max(margin_floor_bytes, int(transient_peak_bytes * margin_fraction))
    available = min(requested_memory - non_kv_used, headroom - margin)
    available -= max(transient_peak_bytes, torch_reserve_growth_bytes)
    return max(available, 0)
