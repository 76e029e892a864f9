"""Configs as their publishers wrote them (tests/published_configs/: nested blocks, other names, switches left to
transformers' defaults), counted as vLLM's model classes lay them out: worked by hand from those classes, and the whole
set built by vLLM itself on the meta device (tests/conformance.py run_published; docs/architectures.md lists it)."""
import re

import pytest

from conformance import SHRUNK_LAYERS, WEIGHT_TOLERANCE, published, run_published, shrink
from conftest import ROOT
from launcher.estimator.kv import token_bytes
from launcher.estimator.weights import weights_bytes
from launcher.models.config import from_config

DBRX = published()["dbrx-instruct"]["config"]  # databricks/dbrx-instruct config.json (every key kept)
MPT = published()["mpt-7b"]["config"]  # mosaicml/mpt-7b config.json


def test_dbrx_nested_attention_and_experts_are_read():
    """vLLM's dbrx.py: Wqkv d x (d + 2 kv_heads head_dim) with 8 KV heads (attn_config.kv_n_heads, as
    get_total_num_kv_heads reads it), out_proj d x d, a router d x 16, 16 experts of w1, v1, w2 (ffn_hidden_size
    x d each), two norms per layer, a final norm, embedding and head untied: 131.6B parameters, 263,193,047,040 bytes
    in bfloat16. Read as a dense model with 48 KV heads it was 50.8 GB: about 5x low. Beside them the rotary cache
    of max_seq_len 32,768 x 128 (dbrx.py reads max_seq_len, not max_position_embeddings; left uncounted it was 8 MiB
    low) and each attention layer's four float32 scales."""
    m = from_config(DBRX)
    h, layers = 6144, 40
    per_layer = h * (h + 2 * 8 * 128) + h * h + h * 16 + 16 * 3 * 10752 * h + 2 * h
    by_hand = 2 * (2 * 100352 * h + layers * per_layer + h)
    assert (m.num_kv_heads, m.num_experts, m.experts_per_tok) == (8, 16, 4)
    assert by_hand == 263_193_047_040
    assert weights_bytes(m) == by_hand + 32768 * 128 * 2 + layers * 16
    assert any("nested attn_config, ffn_config" in n for n in m.notes)


def test_mpt_reads_its_widths_as_published():
    """vLLM's mpt.py without biases: Wqkv d x 3d, out_proj d x d, up d x 4d and down 4d x d (expansion_ratio 4),
    two norms per layer and a final one, the embedding tied to the head: 6,649,286,656 parameters (MosaicML says
    6.7B)."""
    m = from_config(MPT)
    d, layers = 4096, 32
    by_hand = 50432 * d + layers * (d * 3 * d + d * d + 2 * d * 4 * d + 2 * d) + d
    assert by_hand == 6_649_286_656
    assert weights_bytes(m) == 2 * by_hand + 32 * 16  # and each attention layer's four float32 scales


@pytest.fixture(scope="module")
def rows():
    return {r.id: r for r in run_published()}


def test_published_configs_build_as_the_estimate_counts_them(rows):
    """The bar: at least 110 published configs, at least 60 of them built by vLLM, at least 95% of those matched
    (weights within 0.1%, every layer's KV cache exact), none counted low, weights or KV, by a single byte, and each
    one not built with vLLM's reason: the parameters and buffers of vLLM's build (biases, LayerNorm biases, q/k norms, both LongRoPE caches, the attention layers' scales, Gemma's
    normalizer, transformers' inv_freq where the Transformers backend builds the model)."""
    built = {k: r for k, r in rows.items() if r.status not in ("not built", "no config")}
    matched = [k for k, r in built.items() if r.status == "matched"]
    low = {k: (r.weights_estimate - r.weights_vllm, r.kv_estimate - r.kv_vllm) for k, r in built.items()
           if r.weights_estimate < r.weights_vllm or r.kv_estimate < r.kv_vllm}
    assert len(rows) >= 110 and len(built) >= 60, sorted(set(rows) - set(built))
    assert len(matched) >= 0.95 * len(built), {k: r.reason for k, r in built.items() if r.status != "matched"}
    assert not low, low
    assert all(r.reason for k, r in rows.items() if k not in built), "every fixture not built says vLLM's reason"


def test_the_table_lists_each_fixture_as_it_compares(rows):
    """docs/architectures.md (scripts/gen_arch_table.py) says what this run finds, fixture by fixture."""
    doc = (ROOT / "docs" / "architectures.md").read_text()
    listed = dict(re.findall(r"^\| `([^`]+)` \| `[^`]*` \| (matched|differs|not built|no config) \|", doc, re.M))
    assert {k: r.status for k, r in rows.items()} == {k: listed.get(k) for k in rows}


def test_each_fixture_names_its_source():
    for name, f in published().items():
        assert f["source"].startswith("https://huggingface.co/") or "mlc-ai/mlc-llm" in f["source"], name
        assert isinstance(f["config"].get("architectures"), list), name


def test_shrink_keeps_every_key_and_cuts_the_per_layer_lists():
    """gpt-oss-20b's 24 layer_types are cut to the first 8 (4 sliding, 4 full, as published); a list of layer
    indices keeps those below 8; every other key is the publisher's."""
    cfg = published()["gpt-oss-20b"]["config"]
    small = shrink(cfg)
    assert set(small) == set(cfg) and small["num_hidden_layers"] == SHRUNK_LAYERS
    assert small["layer_types"] == cfg["layer_types"][:8] and small["layer_types"].count("full_attention") == 4
    assert {k: v for k, v in small.items() if k not in ("num_hidden_layers", "layer_types")} == \
        {k: v for k, v in cfg.items() if k not in ("num_hidden_layers", "layer_types")}
    assert shrink({"num_hidden_layers": 48, "mlp_only_layers": [3, 20], "hidden_size": 8})["mlp_only_layers"] == [3]
    assert shrink({"n_layer": 4, "x": [1, 2, 3, 4]}) == {"n_layer": 4, "x": [1, 2, 3, 4]}  # already small


def test_a_switch_left_out_is_read_as_transformers_fills_it():
    """DeepSeek-V2-Lite publishes q_lora_rank null (no query compression); a copy that leaves the key out gets
    DeepseekV2Config's 1536, as vLLM builds it (its fused_qkv_a_proj is 1536 + 512 + 64 = 2112 wide). Read as None
    it was 0.27% low at 8 layers."""
    cfg = published()["mlc-deepseek_v2_lite"]["config"]
    assert "q_lora_rank" not in cfg
    assert from_config(cfg).q_lora_rank == 1536
    assert from_config({**cfg, "q_lora_rank": None}).q_lora_rank is None


def test_gpt_bigcode_counts_the_causal_mask_of_vllms_transformers_backend():
    """vLLM builds GPT-BigCode through its Transformers backend, whose model keeps a causal mask of n_positions²
    booleans: SantaCoder's 2048 positions, 4,194,304 bytes (vLLM's buffers at 8 layers: 4,194,432, the rest its 32
    four-byte attention scales)."""
    m = from_config(shrink(published()["mlc-gpt_bigcode"]["config"]))
    assert m.mask_buffer_bytes == 2048 * 2048 == 4_194_304


def test_phi3_longrope_keeps_a_short_and_a_long_cache():
    """vLLM's Phi3LongRoPEScaledRotaryEmbedding concatenates a cos/sin cache of original_max_position_embeddings
    (4,096) with one of max_position_embeddings (131,072): Phi-3.5-mini's long_short_cos_sin_cache is 135,168 x 96
    in bfloat16 (seen on the meta device). Counted for the long one only it was 786,432 bytes low."""
    m = from_config(published()["mlc-phi-3_5"]["config"])
    assert m.rope_max_pos == 131072 + 4096
    assert int(m.head_dim * m.rotary_fraction) == 96


def test_olmoe_normalises_the_whole_query_and_key():
    """vLLM's olmoe.py: q_norm = RMSNorm(hidden_size), k_norm = RMSNorm(num_kv_heads x head_dim), whole on every
    rank: 2,048 + 2,048 per layer for OLMoE-1B-7B (16 heads of 128, 16 KV heads), where Qwen3's are 128 each."""
    from launcher.estimator.weights import _attention

    cfg = published()["olmoe-1b-7b-0924-sft"]["config"]
    m = from_config(cfg)
    without = from_config({**cfg, "model_type": "olmo"})  # the same attention, no q/k norms
    assert m.full_qk_norm and not m.qk_norm
    assert _attention(m, 1) - _attention(without, 1) == (2048 + 2048) * 2
    assert _attention(m, 2) - _attention(without, 2) == (2048 + 2048) * 2  # not split over ranks


def test_an_activation_not_read_here_keeps_the_larger_reading_and_says_so():
    cfg = {**published()["qwen3-8b"]["config"], "hidden_act": "xielu"}
    m = from_config(cfg)
    assert m.gated_mlp and any("activation 'xielu'" in n for n in m.notes)
    assert weights_bytes(m) == weights_bytes(from_config(published()["qwen3-8b"]["config"]))
    assert not from_config(published()["qwen3-8b"]["config"]).caveats


LFM2 = published()["lfm2-1_2b"]["config"]  # LiquidAI/LFM2-1.2B config.json


def test_lfm2_attention_layers_come_from_full_attn_idxs():
    """LFM2-1.2B as vLLM's lfm2.py builds it from transformers' Lfm2Config, which turns full_attn_idxs [2, 5, 8, 10,
    12, 14] into layer_types: 6 attention layers (q_proj and out_proj d x d, k_proj and v_proj d x 8 heads x 64, and
    q_layernorm, k_layernorm of head_dim 64), 10 short-conv layers (in_proj d x 3d, a depthwise conv d x L_cache 3,
    out_proj d x d, no bias), each layer an MLP of w1, w3, w2 with block_ff_dim 12,288 auto-adjusted to 2/3 (8,192,
    a multiple of 256) and two norms; the embedding tied, a final norm. KV cache per token: 6 layers x K and V x 8
    heads x 64 x 2 bytes = 12,288 B; a conv state of d x (L_cache - 1) per conv layer. Read as every layer a state
    mixer (full_attn_idxs not read) the KV cache was 0 bytes a token, every request's attention counted as free."""
    m = from_config(LFM2)
    h, ff = 2048, 8192
    params = (65536 * h + 6 * (2 * h * h + 2 * h * 512 + 2 * 64) + 10 * (3 * h * h + 3 * h + h * h)
              + 16 * (3 * h * ff + 2 * h) + h)
    assert params == 1_170_340_608
    assert m.layer_plan.count("AF") == 6 and m.layer_plan.count("SF") == 10
    assert token_bytes(m, 1) * 6 == 12_288
    assert (m.state.kind, m.state.conv, m.state.temporal) == ("short_conv", h * 2, 0)
    # and the rotary cache of 128,000 positions x 64, each attention layer's four float32 scales
    assert weights_bytes(m) == 2 * params + 128_000 * 64 * 2 + 6 * 16
