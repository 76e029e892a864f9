"""Where candidates come from: the workloads' shapes, what vLLM resolved for its defaults and the estimator's view
of them; combinations of winners; an explicit grid."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import LauncherError
from ..workloads import Named
from .results import MIN_GAIN, Candidate, TuneResult

if TYPE_CHECKING:
    from ..estimator.core import Estimate
    from ..spec import LaunchSpec


def fp8_kv_gain(wl: Named, kv_tokens: int, est: Estimate | None) -> float | None:
    """The most an fp8 KV cache can speed up this workload's decode steps. A decode step reads the weights
    once and every running request's KV cache (memory-bound at these batch sizes): an fp8 cache halves the
    second part. (weights + KV read) / (weights + KV read / 2) - 1, with the KV read capped by the cache vLLM
    sized; None where the estimator has no view of the weights."""
    if est is None or not getattr(est, "weights_bytes", 0) or not getattr(est, "kv_bytes_per_token", 0):
        return None
    read = kv_read_bytes(wl, kv_tokens, est)
    return (est.weights_bytes + read) / (est.weights_bytes + read / 2) - 1


def kv_read_bytes(wl: Named, kv_tokens: int, est: Estimate | None) -> float:
    """KV cache bytes one decode step reads at the workload's concurrency, capped by the cache vLLM sized."""
    return min(wl.workload.decode_reads(), kv_tokens or float("inf")) * est.kv_bytes_per_token


def propose(workloads: list[Named], defaults: Candidate, spec: LaunchSpec, est: Estimate | None = None,
            allow_fp8_kv: bool = False,
            min_gain: float = MIN_GAIN) -> list[Candidate]:
    """Candidates from the workloads' shapes, what vLLM resolved for its defaults and the KV cache sized
    (est: the estimator's view of the defaults, for the batch sizes vLLM picks on this GPU). With
    allow_fp8_kv, an fp8 KV cache where decode reads more KV than it gains from noise, or where the
    workload needs more KV than vLLM sized; it comes first, being the one with a modelled effect."""
    steps = defaults.vllm_resolved.get("max-num-batched-tokens")
    if not steps:
        steps = est.max_num_batched_tokens if est else 2048
    seqs = est.max_num_seqs if est else 256
    kv = defaults.vllm_kv_tokens or defaults.predicted_kv_tokens
    out: list[Candidate] = []

    def add(args: dict, why: str):
        for c in out:
            if c.engine_args == args:
                c.why += "; " + why
                return
        out.append(Candidate.of(args, why))

    pinned = spec.engine_args
    if allow_fp8_kv and "kv-cache-dtype" not in pinned:
        for wl in workloads:
            g, need = fp8_kv_gain(wl, kv, est), wl.workload.kv_tokens_in_flight()
            if g is not None and g > min_gain:
                add({"kv-cache-dtype": "fp8"},
                    f"{wl.name}: a decode step at concurrency {wl.workload.concurrency} reads about "
                    f"{kv_read_bytes(wl, kv, est) / 2**30:.0f} GiB "
                    f"of KV cache besides {est.weights_bytes / 2**30:.0f} GiB of weights; fp8 halves the KV part "
                    f"(at most {g:+.0%} per decode step)")
            elif kv and need > kv:
                add({"kv-cache-dtype": "fp8"},
                    f"{wl.name}: about {need:,.0f} KV tokens in flight, the defaults hold {kv:,}; fp8 holds twice as many")
    for wl in workloads:
        w = wl.workload
        new_prompt = w.prefix_len[1] + w.prompt_len[1]
        if "max-num-batched-tokens" not in pinned:
            if wl.slo_ttft_p99_s is None or new_prompt > steps / 2:
                for m in (2, 4):
                    add({"max-num-batched-tokens": steps * m},
                        f"{wl.name}: prompts up to {new_prompt} tokens are prefilled in {steps}-token steps; "
                        f"{steps * m} takes more prompt per step")
            elif steps // 2 >= max(seqs, w.prompt_len[1]):
                add({"max-num-batched-tokens": steps // 2},
                    f"{wl.name}: short prompts; {steps // 2}-token steps keep decode steps short under prefill")
        need = w.kv_tokens_in_flight()
        if kv and need > kv:
            if "gpu-memory-utilization" not in pinned:
                add({"gpu-memory-utilization": 0.95},
                    f"{wl.name}: about {need:,.0f} KV tokens in flight at concurrency {w.concurrency}, "
                    f"the defaults hold {kv:,}")
            cap = int(kv / w.mean_seq_len()) // 8 * 8
            preempted = sum(p.preemptions or 0 for p in defaults.points.get(wl.name, []))
            if "max-num-seqs" not in pinned and 8 <= cap < seqs and preempted:
                add({"max-num-seqs": cap},
                    f"{wl.name}: vLLM preempted {preempted:.0f} requests with its defaults; the KV cache holds "
                    f"about {cap} of them at once, and capping there avoids recomputing them")
    return out


def combine(res: TuneResult, workloads: list[Named], min_gain: float = MIN_GAIN) -> list[Candidate]:
    """For a workload where settings of different kinds each beat the defaults, both together."""
    d = res.defaults
    out = []
    for wl in workloads:
        base = d.score(wl) if d else None
        if not base:
            continue
        best: dict[str, Candidate] = {}
        for c in res.candidates:
            if c.ran and len(c.engine_args) == 1 and (c.score(wl) or 0) > base * (1 + min_gain):
                k = next(iter(c.engine_args))
                if k not in best or c.score(wl) > best[k].score(wl):
                    best[k] = c
        if len(best) >= 2:
            args = {k: v for c in best.values() for k, v in c.engine_args.items()}
            out.append(Candidate.of(args, f"{wl.name}: " + " and ".join(c.label for c in best.values())
                                    + " each beat the defaults"))
    return out


def default_estimate(spec: LaunchSpec) -> Estimate | None:
    """The estimator's view of the defaults (batch sizes vLLM picks for this GPU); None without a GPU."""
    try:
        from ..launching import prepare

        p = prepare(spec, check_port=False)
    except LauncherError:
        return None
    return p.plan.estimate if p.plan else None


def explicit_grid(max_num_seqs: list[int], max_num_batched_tokens: list[int], utilizations: list[float],
                  kv_dtypes: list[str]) -> list[Candidate]:
    """Every combination of the values given (instead of the proposals)."""
    import itertools

    out = []
    for s, b, u, k in itertools.product(max_num_seqs or [None], max_num_batched_tokens or [None], utilizations or [None],
                                        kv_dtypes or [None]):
        args = {}
        if s:
            args["max-num-seqs"] = s
        if b:
            args["max-num-batched-tokens"] = b
        if u:
            args["gpu-memory-utilization"] = u
        if k and k != "auto":
            args["kv-cache-dtype"] = k
        if args:
            out.append(Candidate.of(args, "given on the command line"))
    return out
