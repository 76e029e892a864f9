"""Write launcher/estimator/vllm_releases.json and docs/vllm-releases.md: per vLLM release from 0.24.0 to the newest,
what the estimator depends on, read from the release's own sources (unpacked from its wheel by
scripts/gen_vllm_args.py into --work).

Values read: the default gpu_memory_utilization (config/cache.py), whether VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS
exists and its default (envs.py), the architectures that run on the V2 model runner
(DEFAULT_V2_MODEL_RUNNER_ARCHITECTURES). Mechanisms: each a function of vLLM's source, compared by its syntax tree
(docstrings, comments and layout left out) with the same function of 0.24.0, the release the estimator's GPU
starts were measured on: `same` where equal, else `changed` (the estimator does not follow the change: an estimate
for that release keeps the margin of an unmodelled part).

usage: .venv/bin/python scripts/gen_vllm_releases.py [--work DIR]
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = "0.24.0"
# hand-kept: per release and changed mechanism, what the change does to memory and how the estimator covers it
REVIEWS = ROOT / "scripts" / "vllm_release_reviews.json"

# what the estimator models, where vLLM 0.24.0 does it: (mechanism, file under vllm/, qualified function names)
MECHANISMS = [
    ("available memory (profile, non-torch, graph estimate, free-memory check)", "v1/worker/gpu_worker.py",
     ["Worker.determine_available_memory"]),
    ("memory snapshot and profiling", "utils/mem_utils.py", ["memory_profiling", "MemorySnapshot.measure"]),
    ("profile run, V1 runner", "v1/worker/gpu_model_runner.py", ["GPUModelRunner.profile_run"]),
    ("dummy forward, V1 runner", "v1/worker/gpu_model_runner.py", ["GPUModelRunner._dummy_run"]),
    ("sampler warm-up, V1 runner", "v1/worker/gpu_model_runner.py", ["GPUModelRunner._dummy_sampler_run"]),
    ("profile run, V2 runner", "v1/worker/gpu/model_runner.py", ["GPUModelRunner.profile_run"]),
    ("KV cache groups (hybrid, sliding window)", "v1/core/kv_cache_utils.py|v1/core/kv_cache_planning.py",
     ["get_kv_cache_groups", "_get_kv_cache_groups_uniform_page_size", "unify_hybrid_kv_cache_specs"]),
    ("KV cache blocks", "v1/core/kv_cache_utils.py|v1/core/kv_cache_planning.py",
     ["get_num_blocks", "get_kv_cache_config_from_groups"]),
    ("batch defaults", "engine/arg_utils.py", ["EngineArgs.get_batch_defaults"]),
    ("KV page sizes", "v1/kv_cache_interface.py",
     ["AttentionSpec.page_size_bytes", "AttentionSpec.real_page_size_bytes", "FullAttentionSpec.real_page_size_bytes",
      "MLAAttentionSpec.real_page_size_bytes", "SlidingWindowSpec.real_page_size_bytes", "MambaSpec.page_size_bytes"]),
    ("hybrid block size", "platforms/interface.py", ["Platform._align_hybrid_block_size"]),
    ("CUDA graph capture sizes", "config/vllm.py", ["VllmConfig._set_cudagraph_sizes"]),
    ("recurrent state shapes", "model_executor/layers/mamba/mamba_utils.py",
     ["MambaStateShapeCalculator.linear_attention_state_shape", "MambaStateShapeCalculator.mamba1_state_shape",
      "MambaStateShapeCalculator.mamba2_state_shape", "MambaStateShapeCalculator.short_conv_state_shape",
      "MambaStateShapeCalculator.gated_delta_net_state_shape", "MambaStateShapeCalculator.kda_state_shape",
      "MambaStateShapeCalculator.extra_groups_for_head_shards"]),
    ("hybrid model config", "model_executor/models/config.py",
     ["HybridAttentionMambaModelConfig.verify_and_update_config", "MambaModelConfig.verify_and_update_config"]),
    ("which runner (V1/V2)", "config/vllm.py", ["VllmConfig.use_v2_model_runner"]),
]


def _functions(tree: ast.AST) -> dict[str, ast.AST]:
    out = {}

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out[prefix + child.name] = child
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".")
    walk(tree, "")
    return out


def _fingerprint(fn: ast.AST) -> str:
    body = list(fn.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]  # the docstring
    return hashlib.sha256(ast.dump(ast.Module(body=body, type_ignores=[])).encode()).hexdigest()[:16]


def read_release(src: Path) -> dict:
    v = src / "vllm"
    cache = (v / "config" / "cache.py").read_text()
    m = re.search(r"gpu_memory_utilization: float = (?:Field\(default=)?([\d.]+)", cache) \
        or re.search(r"DEFAULT_GPU_MEMORY_UTILIZATION: ClassVar\[float\] = ([\d.]+)", cache)
    # 0.34: an "extensible" KV cache sized from measured memory, default on CUDA, with utilization 1.0
    extensible = "enable_extensible_kv_cache" in cache
    envs = (v / "envs.py").read_text()
    g = re.search(r'os\.getenv\("VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS", "(\d)"\)', envs)
    v2 = []
    for f in (v / "config" / "vllm.py",):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "DEFAULT_V2_MODEL_RUNNER_ARCHITECTURES"
                                                    for t in node.targets):
                v2 = sorted(c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant) and isinstance(c.value, str))
    cfg_src = (v / "config" / "vllm.py").read_text()
    fns = _functions(ast.parse(cfg_src))
    chooser = ast.get_source_segment(cfg_src, fns["VllmConfig.use_v2_model_runner"]) \
        if "VllmConfig.use_v2_model_runner" in fns else ""
    # from 0.29.0 the V2 runner is every architecture's default (unless a feature it lacks is used)
    # and from 0.34.0 the only one (the V1 runner's module is gone)
    v2_all = (bool(chooser) and "_is_default_v2_model_runner_model" not in chooser) \
        or not (v / "v1" / "worker" / "gpu_model_runner.py").is_file()
    # from 0.26: the list holds the MoE architectures on V2; every dense one is on V2 too
    # (`return is_default_v2_architecture or not model_config.is_moe`), a hybrid only where listed from 0.27
    default_fn = ast.get_source_segment(cfg_src, fns["VllmConfig._is_default_v2_model_runner_model"]) \
        if "VllmConfig._is_default_v2_model_runner_model" in fns else ""
    v2_dense = "not model_config.is_moe" in default_fn and "or not model_config.is_moe" in default_fn.replace("\n", " ")
    v2_hybrid_listed = v2_dense and "not is_default_v2_architecture" in default_fn
    mech = {}
    for name, rel, quals in MECHANISMS:
        fns = {}
        for path in (v / r for r in reversed(rel.split("|"))):  # a function found in the later file wins
            fns = {**(_functions(ast.parse(path.read_text())) if path.is_file() else {}), **fns}
        mech[name] = {q: (_fingerprint(fns[q]) if q in fns else None) for q in quals}
    # 0.27: the profile counts what the worker consumed since its start-up snapshot (free memory before minus after),
    # so persistent buffers allocated before the profile are inside the KV cache's budget
    mem_utils = (v / "utils" / "mem_utils.py").read_text() if (v / "utils" / "mem_utils.py").is_file() else ""
    return {"profile_counts_consumed": "total_consumed" in mem_utils,
            "v1_runner": (v / "v1" / "worker" / "gpu_model_runner.py").is_file(),
            "default_utilization": float(m.group(1)) if m else None,
            "extensible_kv_cache": extensible, "estimate_cudagraphs_env": g is not None, "estimate_cudagraphs_default": int(g.group(1)) if g else None,
            "v2_runner_architectures": v2, "v2_runner_default_for_all": v2_all,
            **({"v2_runner_default_for_dense": True} if v2_dense and not v2_all else {}),
            **({"v2_runner_hybrid_if_listed": True} if v2_hybrid_listed and not v2_all else {}), "mechanisms": mech}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "launcher-vllm-releases"))
    ap.add_argument("--review", nargs=3, metavar=("VERSION", "MECHANISM", "NOTE"),
                    help="record a review of a changed mechanism (its current function bodies) and regenerate")
    args = ap.parse_args()
    work = Path(args.work)
    if args.review:
        ver, mech, note = args.review
        fps = read_release(work / f"vllm-{ver}")["mechanisms"][mech]
        reviews = json.loads(REVIEWS.read_text()) if REVIEWS.is_file() else {}
        reviews.setdefault(ver, {})[mech] = {"note": note, "fingerprints": fps}
        REVIEWS.write_text(json.dumps(reviews, indent=1, sort_keys=True) + "\n")
    releases = {}
    for src in sorted(work.glob("vllm-[0-9]*"), key=lambda p: tuple(map(int, p.name.split("-")[1].split(".")))):
        releases[src.name.split("-")[1]] = read_release(src)
    base = releases[BASE]["mechanisms"]
    reviews = json.loads(REVIEWS.read_text()) if REVIEWS.is_file() else {}
    for ver, r in releases.items():
        r["changed"] = [name for name, fns in r["mechanisms"].items() if fns != base[name]]
        # a review holds for the function bodies it read: one that changed again is unreviewed
        r["reviewed"] = {m: rv["note"] for m, rv in reviews.get(ver, {}).items()
                         if m in r["changed"] and rv.get("fingerprints") == r["mechanisms"][m]}
    data = {"source": "scripts/gen_vllm_releases.py (each release's sources, from its wheel)", "base": BASE,
            "mechanisms": [{"name": n, "file": " or ".join(f"vllm/{x}" for x in f.split("|")), "functions": q}
                           for n, f, q in MECHANISMS],
            "releases": releases}
    (ROOT / "launcher" / "estimator" / "vllm_releases.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    (ROOT / "docs" / "vllm-releases.md").write_text(markdown(data))
    print(f"{len(releases)} releases: " + ", ".join(f"{v} ({len(r['changed'])} changed)" for v, r in releases.items()))


def markdown(data: dict) -> str:
    rel = data["releases"]
    vers = list(rel)
    lines = ["# vLLM releases: what the estimator depends on", "",
             f"Generated by `scripts/gen_vllm_releases.py` from each release's own sources (the `vllm` wheels on the "
             f"package index, unpacked by `scripts/gen_vllm_args.py`, nothing installed). Each mechanism is a function "
             f"of vLLM's source compared by its syntax tree with the same function in {data['base']}, the release the "
             "estimator's GPU starts were measured on: `=` the same, `changed` a different body, `-` not found "
             "there (moved or renamed). A release whose mechanisms are all `=` is estimated as "
             f"{data['base']} is (`confidence` `derived`, or `measured` for {data['base']}); where one changed, the estimate "
             "keeps the margin of an unmodelled part (`extrapolated`) and names it. The values below are read by the "
             "estimator (`launcher/estimator/vllm_releases.json`): a new release is one more entry.", "",
             "| release | " + " | ".join(vers) + " |", "|---|" + "---|" * len(vers)]
    lines.append("| default `gpu_memory_utilization` | " + " | ".join(str(rel[v]["default_utilization"]) for v in vers) + " |")
    lines.append("| extensible KV cache (`enable_extensible_kv_cache`; default utilization then 1.0) | " + " | ".join(
        "yes" if rel[v]["extensible_kv_cache"] else "no" for v in vers) + " |")
    lines.append("| `VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS` (default) | " + " | ".join(
        (f"yes ({rel[v]['estimate_cudagraphs_default']})" if rel[v]["estimate_cudagraphs_env"] else "no") for v in vers) + " |")
    lines.append("| profile counts the memory consumed since start-up (`total_consumed`: buffers made before the profile "
                 "inside the share) | " + " | ".join("yes" if rel[v].get("profile_counts_consumed") else "no" for v in vers) + " |")
    lines.append("| V2 model runner: default for | " + " | ".join(
        ("all" if rel[v]["v2_runner_default_for_all"] else
         f"dense models + {len(rel[v]['v2_runner_architectures'])} MoE" if rel[v].get("v2_runner_default_for_dense")
         else f"{len(rel[v]['v2_runner_architectures'])} architectures")
        for v in vers) + " |")
    base = rel[data["base"]]["mechanisms"]
    for m in data["mechanisms"]:
        cells = []
        for v in vers:
            fns = rel[v]["mechanisms"][m["name"]]
            if fns == base[m["name"]]:
                cells.append("=")
            elif m["name"] in rel[v].get("reviewed", {}):
                cells.append("reviewed")
            elif any(h is None for h in fns.values()):
                cells.append("-")
            else:
                cells.append("changed")
        where = f"`{m['file']}` " + ", ".join(f"`{q}`" for q in m["functions"])
        lines.append(f"| {m['name']} ({where}) | " + " | ".join(cells) + " |")
    lines += ["", "Reviewed changes (scripts/vllm_release_reviews.json; a review holds for the function bodies it read):", ""]
    for v in vers:
        for name, note in rel[v].get("reviewed", {}).items():
            lines.append(f"- {v}, {name}: {note}")
    lines += ["", "V2 model runner architectures per release:", ""]
    for v in vers:
        lines.append(f"- {v}: " + (", ".join(rel[v]["v2_runner_architectures"]) or "none"))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
