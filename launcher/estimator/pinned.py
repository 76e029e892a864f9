"""The host memory a server's weights take while it sleeps (vLLM's sleep mode level 1), per GPU.

vLLM's cumem allocator backs every allocation tagged "weights" up to host memory at the sleep, one pinned tensor per
allocation (device_allocator/cumem.py CuMemAllocator.sleep: `torch.empty(size, dtype=torch.uint8, pin_memory=True)`
with the allocation's size), and torch's caching host allocator takes each from the driver rounded up to the next
power of two (ATen/core/CachingHostAllocator.h: `roundSize = c10::llvm::PowerOf2Ceil(size)`). A weight tensor of
more than 10 MiB is one allocation of its size rounded to the caching allocator's 2 MiB pages. So the backup of a
tensor of 224 MiB (Llama-3.1-8B's fused gate and up projection) is 256 MiB, and of one of 259 MiB (Qwen2.5-7B's) 512.

The large tensors are counted one by one from the shapes vLLM builds (merged QKV, merged gate and up, fused MoE
experts, the embedding and the LM head); what is not modelled tensor by tensor (norms, biases, buffers, quantized
layouts, latent attention, state mixers, pipeline stages) is counted twice over, the most a power of two can add,
plus one segment of the small-block pools. On top: what an H100 host lost beyond the backups at the first sleep of
Llama-3.1-8B (vLLM 0.26.0, 2026-12-07: 18,320 MiB of available memory against 17,408 MiB of power-of-two backups,
benchmarks/results/h100-round3/C/first-sleep.json), as a share of the weights."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..models.layouts import padded
from .weights import weights_bytes

if TYPE_CHECKING:
    from ..models.config import ModelArch

MiB = 1 << 20
PAGE = 2 * MiB  # the CUDA caching allocator's rounding of a large block (kRoundLarge)
SMALL_POOLS = 64 * MiB  # the 2 MiB and 20 MiB segments small tensors share, each backed up whole, rounded
UNEXPLAINED = (18_320 - 17_408) / 15_348  # MiB beyond the backups over MiB of weights, measured (above)


def backup_bytes(n: int) -> int:
    """The pinned bytes one allocation of n bytes takes asleep: its 2 MiB pages, rounded up to a power of two."""
    if n <= 0:
        return 0
    pages = -(-n // PAGE) * PAGE
    return 1 << (pages - 1).bit_length()


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


def pinned_weights_bytes(m: ModelArch, tp: int = 1, pp: int = 1, capability: tuple[int, int] | None = None,
                         total: int | None = None) -> int:
    """The pinned host memory one GPU's worth of weights takes while its server sleeps (never less than vLLM and
    torch take: see the module's note); total: weights_bytes(m, tp, pp, capability) where the caller has it."""
    total = weights_bytes(m, tp, pp, capability) if total is None else total
    tensors = large_tensors(m, tp) if pp == 1 else []
    rest = max(0, total - sum(tensors))
    return sum(backup_bytes(t) for t in tensors) + 2 * rest + SMALL_POOLS + int(UNEXPLAINED * total)
