"""Weight bytes per GPU, module by module, as vLLM shards them with TP and PP."""
from __future__ import annotations

from ..models.config import ModelArch

VOCAB_PADDING = 64  # vLLM's DEFAULT_VOCAB_PADDING_SIZE


def _pad(n: int, to: int) -> int:
    return -(-n // to) * to


def _attention(m: ModelArch, tp: int) -> float:
    h, d, b, q = m.hidden_size, m.head_dim, m.dtype_bytes, m.quant
    if m.mla:
        heads = m.num_heads // tp
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        n = 0.0
        if m.q_lora_rank:
            n += q.linear_bytes(h, m.q_lora_rank, b) + m.q_lora_rank * b
            n += q.linear_bytes(m.q_lora_rank, heads * qk, b)
        else:
            n += q.linear_bytes(h, heads * qk, b)
        n += q.linear_bytes(h, m.kv_lora_rank + m.qk_rope_head_dim, b) + m.kv_lora_rank * b
        n += q.linear_bytes(m.kv_lora_rank, heads * (m.qk_nope_head_dim + m.v_head_dim), b)
        n += q.linear_bytes(heads * m.v_head_dim, h, b)
        return n
    q_heads = m.num_heads // tp
    kv_heads = max(1, m.num_kv_heads // tp)  # replicated when kv heads < tp
    n = q.linear_bytes(h, (q_heads + 2 * kv_heads) * d, b) + q.linear_bytes(q_heads * d, h, b)
    if m.attention_bias:
        n += (q_heads + 2 * kv_heads) * d * b
    if m.qk_norm:
        n += 2 * d * b
    return n


def _mlp(m: ModelArch, inter: int, tp: int) -> float:
    i = inter // tp
    return m.quant.linear_bytes(m.hidden_size, 2 * i, m.dtype_bytes) + m.quant.linear_bytes(i, m.hidden_size, m.dtype_bytes)


def _moe(m: ModelArch, tp: int) -> float:
    h, b = m.hidden_size, m.dtype_bytes
    n = m.num_experts * _mlp(m, m.moe_intermediate_size, tp)
    n += h * m.num_experts * b  # router gate (replicated, unquantized)
    if m.shared_experts:
        if m.mla:  # DeepSeek: n_shared_experts x moe_intermediate_size
            n += _mlp(m, m.moe_intermediate_size * m.shared_experts, tp)
        else:  # Qwen2-MoE: one shared expert of its own size, plus its gate
            n += _mlp(m, m.intermediate_size, tp) + h * b
    return n


def layer_bytes(m: ModelArch, index: int, tp: int) -> float:
    """Bytes of decoder layer `index` on one GPU."""
    norms = (2 + m.extra_norms_per_layer) * m.hidden_size * m.dtype_bytes
    if m.is_moe and index >= m.dense_layers:
        mlp = _moe(m, tp)
    else:
        mlp = _mlp(m, m.intermediate_size, tp)
    return _attention(m, tp) + mlp + norms


def weights_bytes(m: ModelArch, tp: int = 1, pp: int = 1) -> int:
    """Bytes of weights on the most loaded GPU (first or last pipeline stage).

    With the checkpoint's safetensors headers read (m.checkpoint), their total is what vLLM holds (packed
    integers and fp8 as stored, floating tensors in the served dtype), plus the rotary cache that no
    checkpoint stores; it is split over the GPUs as the module-by-module formula splits it."""
    f = _formula(m, tp, pp)
    if m.checkpoint is None:
        return f
    whole = _formula(m, 1, 1)
    total = m.checkpoint.bytes(m.dtype_bytes) + _rope(m)
    return int(f * total / whole) if whole else total


def _rope(m: ModelArch) -> int:
    # the rotary cos/sin cache is a buffer of the model (max_position x rotary dim)
    return m.rope_max_pos * (m.qk_rope_head_dim if m.mla else m.head_dim) * m.dtype_bytes


def _formula(m: ModelArch, tp: int, pp: int) -> int:
    b = m.dtype_bytes
    vocab = _pad(m.vocab_size, VOCAB_PADDING) // tp
    embed = vocab * m.hidden_size * b
    head = 0 if m.tie_word_embeddings and pp == 1 else vocab * m.hidden_size * b
    layers_per_stage = -(-m.num_layers // pp)
    rope = _rope(m)
    body = sum(layer_bytes(m, i, tp) for i in range(layers_per_stage)) + rope
    first = embed + body + (head if pp == 1 else 0) + (m.hidden_size * b if pp == 1 else 0)
    last = head + body + m.hidden_size * b
    return int(max(first, last) if pp > 1 else first)
