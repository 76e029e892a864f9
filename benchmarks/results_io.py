"""Read measured vLLM start-ups (benchmarks/results/*.jsonl) into estimator inputs."""
from __future__ import annotations

import glob
import json
import os
import re

from launcher.estimator import EngineSettings, GpuBudget
from launcher.models import catalog
from launcher.models.checkpoint import as_vllm_quantizes
from launcher.models.config import from_config

from gpu.measure_vllm import PAT as LOG_PATTERNS  # the patterns the GPU runs record with

HERE = os.path.dirname(os.path.abspath(__file__))


def _flag(args: list[str], name: str, cast=str):
    return cast(args[args.index(name) + 1]) if name in args else None


def settings_from_args(args: list[str], graph_mode: str = "vllm") -> EngineSettings:
    """A start's engine arguments. graph_mode: how its CUDA graph pool was accounted for: "vllm" (vLLM's own
    estimate, as `vllm serve` does by default) or "launcher" (started as `launcher launch` starts it)."""
    mml = _flag(args, "--max-model-len")
    return EngineSettings(
        max_model_len=("auto" if mml == "auto" else (int(mml) if mml else None)),
        gpu_memory_utilization=_flag(args, "--gpu-memory-utilization", float),
        tensor_parallel_size=_flag(args, "--tensor-parallel-size", int) or 1,
        pipeline_parallel_size=_flag(args, "--pipeline-parallel-size", int) or 1,
        max_num_batched_tokens=_flag(args, "--max-num-batched-tokens", int),
        max_num_seqs=_flag(args, "--max-num-seqs", int),
        kv_cache_dtype=_flag(args, "--kv-cache-dtype") or "auto",
        enforce_eager="--enforce-eager" in args,
        limit_mm_per_prompt=_flag(args, "--limit-mm-per-prompt"),
        graph_memory=graph_mode,
    )


def gpu_from(row: dict) -> GpuBudget:
    name, total, _used = [x.strip() for x in row["gpu"].split(",")]
    return GpuBudget(name=name, total_bytes=int(re.sub(r"\D", "", total)) << 20)


def num(x) -> float:
    return float(str(x).replace(",", ""))


def rows(pattern: str = "*.jsonl") -> list[dict]:
    """Every measured start with its ModelArch, settings and GPU attached."""
    out = []
    for f in sorted(glob.glob(os.path.join(HERE, "results", pattern))):
        for line in open(f):
            r = json.loads(line)
            if not (r.get("model") or r.get("config")) or "weights_gib" not in r or "kv_avail_gib" not in r:
                continue  # a start that did not get as far as sizing its KV cache
            cfg = r["config"] if r.get("config") else catalog.lookup(r["model"], r["size"]).config
            r["arch"] = from_config(cfg, quantization=_flag(r.get("args", []), "--quantization"))
            if r.get("config") and not r.get("safetensors"):  # a folder holding config.json only (dummy weights)
                r["arch"] = as_vllm_quantizes(r["arch"], "/nonexistent")
            r.setdefault("family", r["arch"].model_type)
            r["model"], r["size"] = r.get("model") or r["case"], r.get("size") or r["case"]
            r["settings"] = settings_from_args(r.get("args", []), r.get("graph_memory", "vllm"))
            r["budget"] = gpu_from(r)
            r["file"] = os.path.basename(f)
            r["graph_parts"] = graph_parts(r)
            out.append(r)
    return out


GRAPH_FIELDS = (("FULL", "cg_full"), ("PIECEWISE", "cg_piecewise"))


def graph_parts(r: dict) -> dict:
    """vLLM's CUDA graph estimate split as it logs it at DEBUG level (gpu_model_runner.profile_cudagraph_memory):
    {"FULL": (first-capture MiB, graphs, per-graph MiB), "PIECEWISE": (...)}, as measure_vllm.py records it, or
    read with the same patterns from the start's log under benchmarks/results/*/CASE.log; {} where neither is kept."""
    found = {k: r[k] for _, k in GRAPH_FIELDS if r.get(k)}
    for log in [] if found else glob.glob(os.path.join(HERE, "results", "*", r["case"] + ".log")):
        text = open(log, errors="replace").read()
        found = {k: m.groups() for _, k in GRAPH_FIELDS if (m := LOG_PATTERNS[k].search(text))}
        if found:
            break
    return {mode: (float(found[k][0]), int(found[k][1]), float(found[k][2])) for mode, k in GRAPH_FIELDS if k in found}


def kv_avail_bytes(r: dict) -> int:
    """The KV cache memory vLLM logged at this start ("Available KV cache memory")."""
    return int(num(r["kv_avail_gib"]) * (1 << 30))


def launcher_mode_kv(r: dict, est) -> int | None:
    """The KV cache memory vLLM would have sized at this start had it been started as `launcher launch`
    starts it (est: the estimate in that mode): vLLM's own formula (gpu_worker.determine_available_memory,
    requested - non-KV memory - the graph estimate applied) with the terms this start logged, the graph
    estimate not applied and the share lowered to est.vllm_gpu_memory_utilization. None where the start
    logged no graph estimate to take back."""
    avail = kv_avail_bytes(r)
    if r.get("graph_memory") == "launcher" or est.graph_memory != "launcher":
        return avail
    if "cg_est_gib" not in r:
        return None
    return int(avail + num(r["cg_est_gib"]) * (1 << 30) - est.cudagraph_bytes)
