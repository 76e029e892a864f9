"""Configs as their publishers wrote them (nested blocks, other names), counted as vLLM's model classes lay them out,
worked by hand from those classes."""
from launcher.estimator.weights import weights_bytes
from launcher.models.config import from_config

# databricks/dbrx-instruct config.json (every key kept)
DBRX = {"architectures": ["DbrxForCausalLM"], "attn_config": {"clip_qkv": 8, "kv_n_heads": 8, "model_type": "",
        "rope_theta": 500000}, "d_model": 6144, "emb_pdrop": 0.0, "ffn_config": {"ffn_hidden_size": 10752,
        "model_type": "", "moe_jitter_eps": 0, "moe_loss_weight": 0.05, "moe_num_experts": 16, "moe_top_k": 4},
        "initializer_range": 0.02, "max_seq_len": 32768, "model_type": "dbrx", "n_heads": 48, "n_layers": 40,
        "output_router_logits": False, "resid_pdrop": 0.0, "router_aux_loss_coef": 0.05, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "transformers_version": "4.38.2", "use_cache": True, "vocab_size": 100352}
# mosaicml/mpt-7b config.json
MPT = {"architectures": ["MPTForCausalLM"], "attn_config": {"alibi": True, "alibi_bias_max": 8, "attn_impl": "torch",
       "attn_pdrop": 0, "attn_type": "multihead_attention", "attn_uses_sequence_id": False, "clip_qkv": None,
       "prefix_lm": False, "qk_ln": False, "softmax_scale": None}, "d_model": 4096, "emb_pdrop": 0,
       "embedding_fraction": 1.0, "expansion_ratio": 4, "init_device": "cpu", "learned_pos_emb": True,
       "logit_scale": None, "max_seq_len": 2048, "model_type": "mpt", "n_heads": 32, "n_layers": 32, "no_bias": True,
       "norm_type": "low_precision_layernorm", "resid_pdrop": 0, "torch_dtype": "bfloat16", "use_cache": False,
       "verbose": 0, "vocab_size": 50432}


def test_dbrx_nested_attention_and_experts_are_read():
    """vLLM's dbrx.py: Wqkv d x (d + 2 kv_heads head_dim) with 8 KV heads (attn_config.kv_n_heads, as
    get_total_num_kv_heads reads it), out_proj d x d, a router d x 16, 16 experts of w1, v1, w2 (ffn_hidden_size
    x d each), two norms per layer, a final norm, embedding and head untied: 131.6B parameters, 263,193,047,040 bytes
    in bfloat16. Read as a dense model with 48 KV heads it was 50.8 GB: about 5x low."""
    m = from_config(DBRX)
    h, layers = 6144, 40
    per_layer = h * (h + 2 * 8 * 128) + h * h + h * 16 + 16 * 3 * 10752 * h + 2 * h
    by_hand = 2 * (2 * 100352 * h + layers * per_layer + h)
    assert (m.num_kv_heads, m.num_experts, m.experts_per_tok) == (8, 16, 4)
    assert weights_bytes(m) == by_hand == 263_193_047_040
    assert any("nested attn_config, ffn_config" in n for n in m.notes)


def test_mpt_reads_its_widths_as_published():
    """vLLM's mpt.py without biases: Wqkv d x 3d, out_proj d x d, up d x 4d and down 4d x d (expansion_ratio 4),
    two norms per layer and a final one, the embedding tied to the head: 6,649,286,656 parameters (MosaicML says
    6.7B)."""
    m = from_config(MPT)
    d, layers = 4096, 32
    by_hand = 50432 * d + layers * (d * 3 * d + d * d + 2 * d * 4 * d + 2 * d) + d
    assert by_hand == 6_649_286_656
    assert weights_bytes(m) == 2 * by_hand
