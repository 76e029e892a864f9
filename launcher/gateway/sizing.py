"""What a model holds, as planned: awake (its share and what vLLM takes beside it) and asleep, read from an Estimate
as launch.json records it (to_dict()). Used by the pool to make room and by the models file's check."""
from __future__ import annotations


def need_of(estimate: dict | None, cpu_kv: dict | None) -> int:
    """The bytes a model holds, as planned (an Estimate as launch.json records it, to_dict()): on a GPU the share
    vLLM takes plus what it takes beside it, per GPU, times the GPUs; on the CPU build its weights and KV cache (the
    Python runtime of each server not counted)."""
    if estimate:
        return (int(estimate.get("requested_bytes") or 0) + int(estimate.get("outside_budget_bytes") or 0)) \
            * _gpu_count(estimate)
    if cpu_kv:
        from ..planning import cpu_held_bytes

        return cpu_held_bytes(cpu_kv)
    return 0


def asleep_of(estimate: dict | None) -> int | None:
    """What a model keeps on the device in sleep mode level 1, as planned: the KV cache is freed and the weights go to
    host memory (vLLM's cumem allocator), while what it takes beside its share (the CUDA graph pool, its CUDA
    context) and its non-torch memory stay, per GPU. Measured on an H100 with vLLM 0.26.0 (2026-12-06): 1.91 GiB
    asleep against 2.53 planned for Llama-3.1-8B shapes at 32k (docs/gateway.md). None without an estimate."""
    if not estimate:
        return None
    return (int(estimate.get("outside_budget_bytes") or 0) + int(estimate.get("non_torch_bytes") or 0)) \
        * _gpu_count(estimate)


def host_asleep_of(estimate: dict | None) -> int | None:
    """What a model asleep (sleep mode level 1) keeps in the host's memory: its weights, moved there (vLLM's cumem
    allocator backs each weight allocation up to pinned host memory, which torch rounds up to a power of two:
    estimator/pinned.py), on every GPU it spans; the weights themselves where an older record has no such count.
    None without an estimate."""
    if not estimate:
        return None
    per_gpu = estimate.get("host_asleep_bytes") or estimate.get("weights_bytes") or 0
    return int(per_gpu) * _gpu_count(estimate)


def _gpu_count(estimate: dict) -> int:
    """The GPUs an estimate (to_dict()) plans for: its per-GPU terms count once on each."""
    return max(1, len(estimate.get("gpus") or [1]))


def need_of_record(name: str) -> tuple[int | None, int | None, int | None]:
    """The planned bytes of an adopted model awake, asleep on the device and asleep in host memory, from its
    launch.json (None where it recorded none)."""
    from ..runs import read_json, run_dir

    rec = read_json(run_dir(name) / "launch.json") or {}
    if not (rec.get("estimate") or rec.get("cpu_kv")):
        return None, None, None
    e = rec.get("estimate")
    return need_of(e, rec.get("cpu_kv")), asleep_of(e), host_asleep_of(e)
