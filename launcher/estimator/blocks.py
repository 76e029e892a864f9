"""The GPU memory a model's weights take as torch's CUDA caching allocator holds them: what vLLM logs as "Model
loading took" (DeviceMemoryProfiler: torch's allocated bytes, which count each block whole).

c10/cuda/CUDACachingAllocator.cpp: a request is rounded up to 512 bytes; one of more than 10 MiB (kMinLargeAlloc)
gets a segment of its size rounded up to 2 MiB (kRoundLarge), and the block is split only where more than 1 MiB
(kSmallSize) would be left over. So a tensor of 267.5 MiB (EXAONE-4.0-32B's down projection) holds 268 MiB and one
of 535 MiB (its fused gate and up projection) 536 MiB, where one of 1.5 MiB past a 2 MiB step is split and holds its
size. Smaller requests are split from shared 2 MiB and 20 MiB segments and hold their size.

Measured on an H100 with vLLM 0.26.0 (2026-12-07, benchmarks/gpu/alloc_snapshot.py, raw blocks in
benchmarks/results/h100-alloc/): EXAONE-4.0-32B's weights held 96.2 MiB beyond their bytes (64 blocks of 536 MiB for
535, 64 of 268 for 267.5), Qwen2.5-7B's 57.1 MiB, Llama-3.1-8B's 0.1 MiB; vLLM's own "Model loading took" for that
EXAONE start (59.75 GiB) was 0.11 GiB above the bytes of its parameters and buffers.

Counted for the tensors modelled one by one (large_tensors, which pinned.py's host backups count too); the rest as
their bytes."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..models.layouts import padded

if TYPE_CHECKING:
    from ..models.config import ModelArch

MiB = 1 << 20
MIN_BLOCK = 512  # kMinBlockSize: every request rounded up to it
SMALL = 1 * MiB  # kSmallSize: a larger remainder is split off a block
MIN_LARGE_ALLOC = 10 * MiB  # kMinLargeAlloc: from here a request gets a segment of its own
ROUND_LARGE = 2 * MiB  # kRoundLarge


def block_bytes(n: int) -> int:
    """The bytes torch's allocator counts for one tensor of n bytes allocated on its own (a fresh process)."""
    if n <= 0:
        return 0
    size = -(-n // MIN_BLOCK) * MIN_BLOCK
    if size < MIN_LARGE_ALLOC:
        return size
    segment = -(-size // ROUND_LARGE) * ROUND_LARGE
    return segment if segment - size <= SMALL else size


def large_tensors(m: ModelArch, tp: int = 1) -> list[int]:
    """The bytes of each large weight tensor on one GPU, as vLLM builds them (unquantized attention and MLP/MoE
    layers, the embedding, the LM head); [] where the model is not modelled tensor by tensor."""
    if m.quant.method != "none" or m.mla or m.kv_lora_rank or m.state is not None or m.embed_dim:
        return []
    b, h, d = m.dtype_bytes, m.hidden_size, m.head_dim
    vocab = padded(m.vocab_size) // tp * h * b
    out = [vocab] + ([] if m.tie_word_embeddings else [vocab])
    q = m.num_heads // tp
    kv = max(1, m.num_kv_heads // tp)
    q_out = (2 if m.query_gate else 1) * q
    up = 2 if m.gated_mlp else 1
    for i in range(m.weight_layers or m.num_layers):
        parts = m.layer_plan[i] if m.layer_plan else "AF"
        if "A" in parts and not m.full_head_dim:
            out += [(q_out + 2 * kv) * d * h * b, q * d * h * b]
        if "F" in parts and m.is_moe_layer(i):
            inter = m.moe_intermediate_size // tp
            out += [m.num_experts * up * inter * h * b, m.num_experts * inter * h * b]
        elif "F" in parts:
            inter = m.intermediate_size // tp
            out += [up * inter * h * b, inter * h * b]
    return out


def weights_slack_bytes(m: ModelArch, tp: int = 1, pp: int = 1) -> int:
    """What the allocator holds beyond the weights' own bytes on one GPU: each large tensor's unsplit remainder."""
    if pp != 1:  # the tensors of one pipeline stage are not listed apart
        return 0
    return sum(block_bytes(t) - t for t in large_tensors(m, tp))
