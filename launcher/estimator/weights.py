"""Weight bytes per GPU, module by module, as vLLM shards them with TP and PP."""
from __future__ import annotations

from dataclasses import replace

from ..models.config import ModelArch
from ..models.layouts import padded

# each attention layer's four float32 scalars (vLLM's Attention: _k_scale, _v_scale, _q_scale, _prob_scale)
ATTENTION_SCALE_BYTES = 4 * 4
# Measured, not derived: what vLLM 0.24 counts as model loading beyond the parameters of a multimodal
# model (Qwen2-VL-7B 0.13 GiB, Qwen2.5-VL-7B 0.20 GiB above the tower's and the language model's
# parameters, H200, 2026-11-23); the larger is kept for every model with a vision tower.
VISION_LOAD_EXTRA = int(0.21 * (1 << 30))


def _attention(m: ModelArch, tp: int, cap: tuple[int, int] | None = None, own_kv: bool = True) -> float:
    """One attention layer's bytes on one rank; own_kv False: a layer that reads an earlier layer's KV cache (Gemma
    3n/4's last num_kv_shared_layers: a query projection and its norm, no key or value)."""
    h, d, b = m.hidden_size, m.head_dim, m.dtype_bytes

    def lin(k: int, n: int, dtype_bytes: int) -> float:  # with this GPU's kernel choice
        return m.quant.linear_bytes(k, n, dtype_bytes, cap)
    if m.mla or m.kv_lora_rank:  # latent projections (MLA, and MiniCPM3's without MLA's cache)
        heads = m.num_heads // tp
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        n = 0.0
        if m.q_lora_rank:
            n += lin(h, m.q_lora_rank, b) + m.q_lora_rank * b
            n += lin(m.q_lora_rank, heads * qk, b)
        else:
            n += lin(h, heads * qk, b)
        n += lin(h, m.kv_lora_rank + m.qk_rope_head_dim, b) + m.kv_lora_rank * b
        n += lin(m.kv_lora_rank, heads * (m.qk_nope_head_dim + m.v_head_dim), b)
        n += lin(heads * m.v_head_dim, h, b)
        return n
    q_heads = m.num_heads // tp
    kv_heads = max(1, m.num_kv_heads // tp) if own_kv else 0  # replicated when kv heads < tp
    q_out = (2 if m.query_gate else 1) * q_heads  # a gated query projects the gate too
    n = lin(h, (q_out + 2 * kv_heads) * d, b) + lin(q_heads * d, h, b)
    if m.attention_bias:
        n += (q_out + 2 * kv_heads) * d * b
    if m.linear_bias:  # the output projection's bias (whole on every rank)
        n += h * b
    if m.qk_norm:
        n += (2 if own_kv else 1) * d * b
    elif m.full_qk_norm:
        n += (m.num_heads + m.num_kv_heads) * d * b
    return n


def _mlp(m: ModelArch, inter: int, tp: int, cap: tuple[int, int] | None = None) -> float:
    i = inter // tp
    up = (2 if m.gated_mlp else 1) * i
    bias = (up + m.hidden_size) * m.dtype_bytes if m.linear_bias else 0
    return (m.quant.linear_bytes(m.hidden_size, up, m.dtype_bytes, cap)
            + m.quant.linear_bytes(i, m.hidden_size, m.dtype_bytes, cap) + bias)


def _moe(m: ModelArch, tp: int, cap: tuple[int, int] | None = None) -> float:
    h, b = m.hidden_size, m.dtype_bytes
    # fused-MoE integer weights stay in Marlin's packed layout on every GPU (no Machete for experts)
    if m.quant.method == "mxfp4":
        n = m.num_experts * m.quant.mxfp4_expert_bytes(h, m.moe_intermediate_size // tp, b)
    else:
        n = m.num_experts * _mlp(m, m.moe_intermediate_size, tp, (8, 0) if m.quant.is_int else cap)
    n += h * m.num_experts * (4 if m.router_fp32 else b)  # router gate (replicated, unquantized)
    n += m.num_experts * 4 if m.router_bias else 0  # its float32 score correction bias
    if m.shared_experts:
        if m.mla:  # DeepSeek: n_shared_experts x moe_intermediate_size
            n += _mlp(m, m.moe_intermediate_size * m.shared_experts, tp, cap)
        else:  # Qwen2-MoE: one shared expert of its own size, plus its gate
            n += _mlp(m, m.shared_expert_intermediate or m.intermediate_size, tp, cap) + h * b
    return n


def layer_bytes(m: ModelArch, index: int, tp: int, cap: tuple[int, int] | None = None) -> float:
    """Bytes of decoder layer `index` on one GPU."""
    parts = m.layer_plan[index] if m.layer_plan else "AF"
    # one norm before each part (a lone state mixer: one), each a weight and, for LayerNorm, a bias
    count = (1 if parts == "S" or m.one_norm_per_layer else 2) + m.extra_norms_per_layer
    n = count * _norm(m)
    if "F" in parts:
        n += _moe(m, tp, cap) if m.is_moe_layer(index) else _mlp(m, m.intermediate_size, tp, cap)
    if "A" in parts:
        full = m.full_head_dim and index < len(m.layer_windows) and m.layer_windows[index] is None
        # Gemma 4's full-attention layers: their own head size and KV heads
        at = replace(m, head_dim=m.full_head_dim, num_kv_heads=m.full_kv_heads) if full else m
        n += _attention(at, tp, cap, own_kv=index < m.num_layers - m.kv_shared_layers) + ATTENTION_SCALE_BYTES
    n += m.layer_extra_params * m.dtype_bytes
    if "S" in parts and m.state is not None:  # the state mixer's projections, conv and norm (unquantized)
        n += m.state.mixer_params / tp * m.dtype_bytes + m.state.mixer_fp32 / tp * (4 - m.dtype_bytes)
    return n


def _norm(m: ModelArch) -> int:
    """Bytes of one norm over hidden_size: none where vLLM's norms have no weight, two vectors for LayerNorm."""
    return (2 if m.norm_bias else 1) * m.hidden_size * m.dtype_bytes if m.norm_weights else 0


def weights_bytes(m: ModelArch, tp: int = 1, pp: int = 1, capability: tuple[int, int] | None = None,
                  vision: bool = True) -> int:
    """Bytes of weights on the most loaded GPU (first or last pipeline stage).

    With the checkpoint's safetensors headers read (m.checkpoint), their total is what vLLM holds (packed
    integers and fp8 as stored, floating tensors in the served dtype), plus the rotary cache that no
    checkpoint stores; it is split over the GPUs as the module-by-module formula splits it. Integer
    zero points are then laid out as the chosen kernel keeps them (see models/quant.py).
    `vision` False: --limit-mm-per-prompt turned every modality off, and vLLM builds the language model
    only (measured: Gemma 3 4B 7.82 GiB instead of 8.61, H200, 2026-12-01)."""
    tower = 0
    if not vision and m.vision_layers:
        tower = m.vision_params * m.dtype_bytes
        m = replace(m, vision_params=0, vision_layers=0)
    f = _formula(m, tp, pp, capability)
    if m.checkpoint is None:
        return f
    whole = _formula(m, 1, 1, capability)
    attention_layers = sum("A" in p for p in m.layer_plan) if m.layer_plan else m.num_layers
    total = (m.checkpoint.bytes(m.dtype_bytes) - tower + _buffers(m) + ATTENTION_SCALE_BYTES * attention_layers
             + _kernel_layout_change(m, capability))
    return int(f * total / whole) if whole else total


def _buffers(m: ModelArch) -> int:
    """Buffers of the whole model that no checkpoint stores: the rotary cache (or, through the Transformers backend,
    transformers' inv_freq vectors) and a causal mask."""
    return _rope(m) + m.inv_freq_bytes + m.mask_buffer_bytes


def rotary_dim(m: ModelArch) -> int:
    """The width the rotary embedding rotates: MLA's rope part, else the share of head_dim partial_rotary_factor
    gives."""
    return m.qk_rope_head_dim if m.mla or m.kv_lora_rank else int(m.head_dim * m.rotary_fraction)


def _rope(m: ModelArch) -> int:
    # the rotary cos/sin cache is a buffer of the model (max_position x rotary dim)
    if not m.rotary:
        return 0
    rotary = rotary_dim(m)
    if m.full_head_dim:  # Gemma 4: a cache for its sliding layers and one as wide as its full layers' heads
        rotary = m.head_dim + m.full_head_dim
    return m.rope_max_pos * rotary * m.dtype_bytes


def _kernel_layout_change(m: ModelArch, capability: tuple[int, int] | None) -> int:
    """Bytes the integer kernel adds to (or drops from) the stored checkpoint."""
    ck, q = m.checkpoint, m.quant
    if not q.is_int:
        return 0
    if not q.zero_point:  # symmetric: qzeros replaced by an empty tensor; g_idx too without act-order
        return -ck.zeros_bytes - ck.g_idx_bytes
    if q.kernel(capability) in ("machete", "unknown"):  # packed int32 zeros -> one act-dtype value each
        per_int32 = 32 // q.bits
        return int(ck.zeros_bytes * (per_int32 * m.dtype_bytes / 4 - 1))
    return 0


def _formula(m: ModelArch, tp: int, pp: int, cap: tuple[int, int] | None = None) -> int:
    b = m.dtype_bytes
    vocab = padded(m.vocab_size) // tp
    width = m.embed_dim or m.hidden_size  # OPT's narrower embedding, projected in and out (replicated)
    embed = vocab * width * b + m.learned_positions * m.hidden_size * b + m.extra_params * b
    embed += m.per_layer_embed_params // tp * b  # Gemma 3n/4's per-layer input embedding, vocabulary-parallel
    if m.embed_dim:
        embed += 2 * m.embed_dim * m.hidden_size * b
    head = 0 if m.tie_word_embeddings and pp == 1 else vocab * width * b
    layers_per_stage = -(-(m.weight_layers or m.num_layers) // pp)
    buffers = _buffers(m)  # buffers every stage keeps whole
    body = sum(layer_bytes(m, i, tp, cap) for i in range(layers_per_stage)) + buffers
    # the vision tower sits with the first stage, whole on every TP rank
    vision = m.vision_params * b + (VISION_LOAD_EXTRA if m.vision_layers else 0)
    final = _norm(m) if m.final_norm else 0
    first = embed + body + vision + (head if pp == 1 else 0) + (final if pp == 1 else 0)
    last = head + body + final
    return int(max(first, last) if pp > 1 else first)
