"""What vLLM's model classes build beyond a Llama-style decoder, per model type (the tables read from
model_executor/models/*.py, or the transformers classes its Transformers backend builds): biases, LayerNorms with a
bias, learned positions, no rotary cache, gated queries, whole q/k norms, Gemma's normalizer and per-layer inputs, as
fields of models.config.ModelArch. Each is held to vLLM's own construction on the meta device
(tests/test_published_configs.py, tests/test_conformance.py, docs/architectures.md)."""
from __future__ import annotations

VOCAB_PADDING = 64  # vLLM's DEFAULT_VOCAB_PADDING_SIZE: an embedding's rows are padded to a multiple of it


def padded(n: int, to: int = VOCAB_PADDING) -> int:
    return -(-n // to) * to


# Model types whose MLP is up + down projections only (vLLM's model code for them has no gate), whatever the
# activation (Nemotron's relu2 included)
UNGATED_MLP = {"starcoder2", "gpt2", "gpt_sw3", "gpt_bigcode", "gpt_neox", "gptj", "falcon", "mpt", "bloom", "opt", "phi",
               "codegen", "persimmon", "gpt_neo", "nemotron",
               # vLLM's ArceeMLP (arcee.py) and NemotronHMLP (nemotron_h.py): up_proj and down_proj, relu2 between
               "arcee", "nemotron_h", "apertus"}

# Learned position tables, as vLLM's model classes size them: rows = max positions + offset (OPT's 2)
LEARNED_POSITIONS = {"gpt2": 0, "gpt_sw3": 0, "gpt_bigcode": 0, "opt": 2}
# Model types vLLM builds through its Transformers backend whose transformers model registers a causal mask of
# max_positions x max_positions booleans as a buffer (GPTBigCodeModel's `bias`; vLLM's registry maps
# GPTBigCodeForCausalLM to TransformersForCausalLM in 0.26.0 and 0.32.0)
CAUSAL_MASK_BUFFER = {"gpt_bigcode"}
# Model types whose attention has no rotary embedding in vLLM (learned positions, ALiBi, Jamba)
NO_ROTARY = {*LEARNED_POSITIONS, "jamba", "bloom", "mpt"}
# Model types whose every linear layer has a bias and whose LayerNorms have one (OPT: enable_bias,
# layer_norm_elementwise_affine, both true unless the config says otherwise)
BIASED = {"gpt2", "gpt_sw3", "gpt_bigcode", "opt"}
# Model types whose attention normalises the whole query and the whole key (q_norm over num_heads x head_dim,
# k_norm over num_kv_heads x head_dim: vLLM's olmoe.py, transformers' Olmo2Attention and Olmo3Attention)
FULL_QK_NORM = {"olmo2", "olmo3", "olmoe", "flex_olmo"}
# Model types whose LayerNorms carry a bias (nn.LayerNorm) without being BIASED: their linear layers' biases are
# read in layout() from the config's own switch
LAYER_NORM_WITH_BIAS = {"gpt_neox", "starcoder2", "stablelm", "gptj", "falcon", "bloom"}
# Model types that keep a scalar buffer of the model's dtype (Gemma's `normalizer`, sqrt(hidden_size))
NORMALIZER_BUFFER = {"gemma", "gemma2", "gemma3", "gemma3_text", "gemma4_text", "gemma4"}
# Model types with per-layer inputs (Gemma 3n, Gemma 4: embed_tokens_per_layer and its projections)
PER_LAYER_INPUT = {"gemma3n_text", "gemma3n", "gemma4_text", "gemma4"}
# Model types whose query projection carries an output gate by default (vLLM's attn_output_gate)
QUERY_GATE = {"qwen3_next", "hrm_text"}


def layout(cfg: dict, mtype: str, hidden: int, plan: tuple[str, ...]) -> dict:
    """What vLLM's model class builds beyond a Llama-style decoder: an ungated MLP, biases, learned positions, no
    rotary cache, gated queries, a narrower embedding, weightless norms, layers reused per cycle (each by the model
    type and the switches it reads)."""
    family = mtype.replace("-", "_")
    out: dict = {"query_gate": bool(cfg.get("attn_output_gate", family in QUERY_GATE)),
                 "gated_mlp": family not in UNGATED_MLP}
    if family in LEARNED_POSITIONS:  # vLLM reads max_position_embeddings (GPT-2's n_positions by its alias)
        rows = int(cfg.get("max_position_embeddings") or cfg.get("n_positions") or 0)
        out["learned_positions"] = rows + LEARNED_POSITIONS[family] if rows else 0
        if family in CAUSAL_MASK_BUFFER:
            out["mask_buffer_bytes"] = rows * rows
    if family in BIASED:
        out["linear_bias"] = bool(cfg.get("enable_bias", True))
        out["norm_bias"] = bool(cfg.get("layer_norm_elementwise_affine", True))
        out["attention_bias"] = out["linear_bias"]
    if family in LAYER_NORM_WITH_BIAS:
        out["norm_bias"] = True
    if family == "gpt_neox":  # every linear layer biased: qkv and dense by attention_bias, the MLP's always
        out["linear_bias"], out["attention_bias"] = True, bool(cfg.get("attention_bias", True))
    elif family == "starcoder2":  # use_bias: qkv, o_proj, c_fc and c_proj alike
        out["linear_bias"] = out["attention_bias"] = bool(cfg.get("use_bias", True))
    elif family == "stablelm":  # vLLM's stablelm.py: a qkv bias by use_qkv_bias, none on o_proj or the MLP
        out["attention_bias"] = bool(cfg.get("use_qkv_bias", False))
    elif family == "chatglm":  # chatglm.py: qkv biased by add_bias_linear or add_qkv_bias, the rest by add_bias_linear
        out["linear_bias"] = bool(cfg.get("add_bias_linear", False))
        out["attention_bias"] = out["linear_bias"] or bool(cfg.get("add_qkv_bias", False))
    elif family == "bloom":  # bloom.py: every linear layer biased, and a LayerNorm on the embedding (weight, bias)
        out["linear_bias"] = out["attention_bias"] = True
        out["extra_params"] = out.get("extra_params", 0) + 2 * hidden
    elif family == "gptj":  # gpt_j.py: fc_in and fc_out biased (out_proj is not: counted, the larger reading), and
        out["linear_bias"] = True  # lm_head has a bias of the padded vocabulary
        out["extra_params"] = padded(int(cfg.get("vocab_size") or 0))
    out["one_norm_per_layer"] = family in ("gptj", "cohere", "cohere2") or (
        family == "falcon" and bool(cfg.get("parallel_attn", True)) and not cfg.get("new_decoder_architecture"))
    if family == "apertus":  # its xIELU activation: alpha_p, alpha_n (parameters), beta, eps (buffers) a layer
        out["layer_extra_params"] = 4
    if family in PER_LAYER_INPUT:
        out.update(per_layer_input(cfg, family, hidden))
    if family in NORMALIZER_BUFFER:
        out["extra_params"] = out.get("extra_params", 0) + 1
    if family == "opt":
        width = int(cfg.get("word_embed_proj_dim") or hidden)
        out["embed_dim"] = width if width != hidden else 0
        out["final_norm"] = bool(cfg.get("do_layer_norm_before", True)) and not cfg.get("_remove_final_layer_norm")
    has_attention = not plan or any("A" in p for p in plan)
    out["rotary"] = has_attention and family not in NO_ROTARY and not (family == "falcon" and cfg.get("alibi"))
    if family == "hrm_text":  # vLLM's HrmText: two stacks, parameterless RMSNorms, a learned initial state
        per_stack = int(cfg.get("num_layers_per_stack") or 1)
        # each stack runs once per cycle step, with a cache per layer and step
        cache_layers = int(cfg.get("H_cycles") or 2) * (int(cfg.get("L_cycles") or 2) + 1) * per_stack
        out.update(norm_weights=False, final_norm=False, extra_params=hidden, weight_layers=2 * per_stack,
                   num_layers=cache_layers, layer_windows=(None,) * cache_layers)
    return out


def per_layer_input(cfg: dict, family: str, hidden: int) -> dict:
    """What vLLM's gemma3n.py / gemma4.py build beyond a Gemma 3 decoder, as parameter counts (read there, checked
    against vLLM's construction on the meta device: tests/test_published_configs.py, docs/architectures.md).

    Both: embed_tokens_per_layer (vocab_size_per_layer_input x layers x hidden_size_per_layer_input),
    per_layer_model_projection (hidden -> layers x that) and its norm; per layer per_layer_input_gate and
    per_layer_projection (hidden <-> that) and post_per_layer_input_norm. Gemma 3n: altup's projections in and out
    ((altup_num_inputs - 1) x hidden x hidden each) and per layer its router, router norm, output scale and
    coefficients, and laurel's low-rank pair (laurel_rank) and norm. Gemma 4: each layer's scalar and, for its full
    attention layers, global_head_dim (512 unless given) and num_global_key_value_heads where attention_k_eq_v."""
    layers = int(cfg.get("num_hidden_layers") or 0)
    per = int(cfg.get("hidden_size_per_layer_input") or 0)
    vocab = padded(int(cfg.get("vocab_size_per_layer_input") or cfg.get("vocab_size") or 0))
    out: dict = {}
    if per:
        out["per_layer_embed_params"] = vocab * layers * per
        extra = hidden * layers * per + per
        layer = 2 * hidden * per + hidden
    else:
        extra, layer = 0, 0
    if family.startswith("gemma3n"):
        n = int(cfg.get("altup_num_inputs") or 4)
        rank = int(cfg.get("laurel_rank") or 64)
        extra += 2 * (n - 1) * hidden * hidden
        # router, its norm, the output scale (float32: two 16-bit units), coefficients, the router's input scale
        layer += hidden * n + hidden + 2 * hidden + n * n * n + n * n + 1
        layer += 2 * hidden * rank + hidden  # laurel and its norm
        extra += 4  # embed_scale, embed_scale_per_layer, per_layer_input_scale, per_layer_projection_scale
    else:
        layer += 1  # layer_scalar
        extra += 3  # embed_scale_per_layer, per_layer_input_scale, per_layer_projection_scale
        out["full_head_dim"] = int(cfg.get("global_head_dim") or 512)
        kv = cfg.get("num_global_key_value_heads") if cfg.get("attention_k_eq_v") else None
        out["full_kv_heads"] = int(kv or cfg.get("num_key_value_heads") or cfg.get("num_attention_heads") or 1)
    out["extra_params"], out["layer_extra_params"] = extra, layer
    out["kv_shared_layers"] = min(layers, int(cfg.get("num_kv_shared_layers") or 0))
    return out
