"""Fit the estimator's activation / non-torch / CUDA graph coefficients to measured vLLM starts.

usage: .venv/bin/python benchmarks/fit_calibration.py   (writes launcher/estimator/calibration.json)

Only runs with VLLM_LOGGING_LEVEL=DEBUG (field "profile": vLLM's own split into
torch peak increase, non-torch increase and weights) are used for the fit.
The profile peak is counted from vLLM's code (launcher/estimator/activation.py);
what is taken from the starts is what vLLM measures rather than computes: a
constant over that count (upper envelope), non-torch memory, and the parts of its
CUDA graph estimate (per-capture costs). benchmarks/estimator_accuracy.py then
checks the whole estimate, leave-one-out, against every measured line.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launcher.estimator import activation  # noqa: E402
from results_io import rows as load_rows  # noqa: E402

GiB = 1 << 30
OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "launcher", "estimator", "calibration.json")


def _gpus(r: dict) -> int:
    return r["settings"].tensor_parallel_size * r["settings"].pipeline_parallel_size


def _batches(r: dict) -> tuple[int, int]:
    """(max_num_seqs, max_num_batched_tokens) vLLM used: the flags, else its defaults on these large GPUs."""
    s = r["settings"]
    return s.max_num_seqs or 1024, s.max_num_batched_tokens or 8192


def fit(rows: list[dict]) -> dict:
    prof = [r for r in rows if "profile" in r]
    pts = []
    for r in prof:
        s = r["settings"]
        seqs, batched = _batches(r)
        shape = activation.profile_shape(r["arch"], max_num_batched_tokens=batched, max_num_seqs=seqs,
                                         tp=s.tensor_parallel_size)
        kind = activation.runner(r["arch"], (0, 24, 0))
        peak, nt = float(r["profile"][1]) * GiB, float(r["profile"][2]) * GiB
        pts.append((r, kind, shape, peak, nt))
    v1 = [p for p in pts if p[1] == "v1"]
    v2 = [p for p in pts if p[1] == "v2"]
    # both runners' peaks are counted from vLLM's code (activation.peak_activation_bytes); only a constant
    # is measured: raised until no measured profile peak lies above the count (upper envelope), so a
    # configuration like the measured ones is never given more KV cache than vLLM finds
    coef = {
        "fitted_on": sorted({p[0]["case"] for p in pts}),
        "activation": {"v1": {"const": 0.0}, "v2": {"const": 0.0}},
        # vLLM measures non-torch memory itself; the largest one-GPU value seen is kept (never below it)
        "non_torch": {
            "v1": float(max(p[4] for p in v1 if _gpus(p[0]) == 1)),
            "v2": float(max(p[4] for p in v2 if _gpus(p[0]) == 1)),
        },
    }
    for kind, group in (("v1", v1), ("v2", v2)):
        act = coef["activation"][kind]
        act["const"] = max(0.0, max((p[3] - activation.peak_activation_bytes(p[2], kind, coef)) for p in group))
    # NCCL communicators and custom all-reduce buffers once a worker has peers: vLLM measures them as
    # non-torch memory. Taken as the largest increase over the one-GPU value seen on a multi-GPU run
    # (measured at TP 4 only; other counts use the same value).
    extra = [p[4] - coef["non_torch"][p[1]] for p in pts if _gpus(p[0]) > 1]
    coef["non_torch"]["per_extra_gpu"] = float(max(extra)) if extra else 0.25 * GiB
    coef["cudagraph"] = fit_graphs(rows)
    coef["fit_margin_bytes"] = fit_margin(coef, rows)
    coef["measured"] = measured_coverage(rows)
    return coef


def fit_graphs(rows: list[dict]) -> dict:
    """vLLM's CUDA graph estimate as vLLM builds it (activation.cudagraph_bytes): max(first FULL, first PIECEWISE
    capture) + (sizes - 1) x per-graph cost. From the starts whose DEBUG log splits it: the first FULL capture per
    unit of hidden size and the first PIECEWISE capture, each the largest seen (an envelope). From every one-GPU
    16-bit start without recurrent state whose second capture took no fresh allocator segment: the per-graph
    cost, a constant plus a cost per layer (least squares on what remains of vLLM's total), its constant then
    raised until none of those starts' estimates lies above the model. activation.SEGMENT_PER_GRAPH, added to
    every estimate, covers the starts whose second capture took a segment, and integer-weight kernels' few MiB
    more per graph (tests/test_estimator.py checks every logged start against the sum).
    At TP 4 the graphs also hold all-reduce buffers, so the one-GPU model (not divided by the GPU count) stays
    above what TP 4 measured and is kept as it is for multi-GPU launches."""
    MiB = 1 << 20
    one = [r for r in rows if "cg_est_gib" in r and _gpus(r) == 1]
    plain = [r for r in one if not r["arch"].quant.is_int and not r["arch"].state_layers]
    parts = [r for r in plain if "FULL" in r.get("graph_parts", {}) and "PIECEWISE" in r["graph_parts"]]
    def largest_full(r) -> int:
        return max(activation.full_graph_sizes(*_batches(r)))
    # per token and hidden unit of the largest FULL graph, from the starts that capture it at 512 (a first
    # capture of a few MiB is mostly the allocator's 2 MiB rounding)
    c = {"full_first_per_token_hidden": max(r["graph_parts"]["FULL"][0] * MiB / (largest_full(r) * r["arch"].hidden_size)
                                            for r in parts if largest_full(r) == 512),
         "piecewise_first": max(r["graph_parts"]["PIECEWISE"][0] * MiB for r in parts),
         "per_graph": 0.0, "per_graph_per_layer": 0.0}

    def graphs(r) -> int:
        return activation.cudagraph_capture_sizes(*_batches(r)) - 1

    def first(r) -> float:
        return max(c["full_first_per_token_hidden"] * largest_full(r) * r["arch"].hidden_size, c["piecewise_first"])
    # the line under vLLM's per-graph cost, fitted without the starts whose second capture took a fresh allocator
    # segment (more than 10 MiB per graph above the others': activation.SEGMENT_PER_GRAPH covers those, and
    # every estimate gets it)
    X = np.array([[graphs(r), graphs(r) * r["arch"].num_layers] for r in plain], float)
    y = np.array([float(r["cg_est_gib"]) * GiB - first(r) for r in plain])
    k = np.linalg.lstsq(X, y, rcond=None)[0]
    keep = (y - X @ k) / X[:, 0] < 10 * MiB
    k = np.linalg.lstsq(X[keep], y[keep], rcond=None)[0]
    c["per_graph"], c["per_graph_per_layer"] = float(k[0]), float(k[1])
    c["per_graph"] += max(0.0, float(max((y[keep] - X[keep] @ k) / X[keep, 0])))  # envelope over the others

    bare = {"cudagraph": {**c, "state": 0.0}}

    def excess(group) -> float:
        """The largest excess of vLLM's graph estimate over the model (with the segment allowance) on a group
        of one-GPU starts."""
        def model(r) -> int:
            seqs, batched = _batches(r)
            return activation.cudagraph_bytes(r["arch"], "v1", enforce_eager=False, tp=1, max_num_seqs=seqs,
                                              max_num_batched_tokens=batched, coef=bare)
        return max(0.0, max(float(r["cg_est_gib"]) * GiB - model(r) for r in group))
    # models with recurrent state capture FULL and PIECEWISE decode graphs with their state updates
    # (vLLM's default for them): the excess measured on those starts
    state = [r for r in one if r["arch"].state_layers]
    if state:
        c["state"] = excess(state)
    return c


def measured_coverage(rows: list[dict]) -> dict:
    """Per architecture: the quantizations, depths and GPU counts vLLM's measured starts covered
    (the estimator's `confidence` is 'measured' inside them)."""
    out: dict = {}
    for r in rows:
        m = r["arch"]
        e = out.setdefault(m.architecture, {"quant": set(), "max_layers": 0, "gpus": set()})
        e["quant"].add(m.quant.method)
        e["max_layers"] = max(e["max_layers"], m.num_layers)
        e["gpus"].add(_gpus(r))
    return {k: {"quant": sorted(v["quant"]), "max_layers": v["max_layers"], "gpus": sorted(v["gpus"])} for k, v in sorted(out.items())}


def fit_margin(coef: dict, rows: list[dict]) -> int:
    """Headroom kept when answering max_model_len_fit: the worst under-prediction of
    vLLM's available KV memory over the fitted lines, rounded up to 0.05 GiB (at least 0.05 GiB)."""
    from launcher.estimator import estimate
    saved = activation.coefficients
    activation.coefficients = lambda: {**coef, "fit_margin_bytes": 0}  # noqa: E731
    try:
        worst = 0.0
        for r in rows:
            e = estimate(r["arch"], r["settings"], r["budget"], vllm_version=(0, 24, 0))
            worst = max(worst, e.kv_cache_bytes - float(r["kv_avail_gib"]) * GiB)
    finally:
        activation.coefficients = saved
    step = 0.05 * GiB
    return int(max(1, -(-worst // step)) * step)


if __name__ == "__main__":
    coef = fit(load_rows())
    with open(OUT, "w") as fh:
        json.dump(coef, fh, indent=1)
    print(json.dumps(coef, indent=1))
