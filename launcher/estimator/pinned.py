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

from .blocks import ROUND_LARGE, large_tensors
from .weights import weights_bytes

if TYPE_CHECKING:
    from ..models.config import ModelArch

MiB = 1 << 20
SMALL_POOLS = 64 * MiB  # the 2 MiB and 20 MiB segments small tensors share, each backed up whole, rounded
UNEXPLAINED = (18_320 - 17_408) / 15_348  # MiB beyond the backups over MiB of weights, measured (above)


def backup_bytes(n: int) -> int:
    """The pinned bytes one allocation of n bytes takes asleep: its 2 MiB pages, rounded up to a power of two."""
    if n <= 0:
        return 0
    pages = -(-n // ROUND_LARGE) * ROUND_LARGE
    return 1 << (pages - 1).bit_length()


def pinned_weights_bytes(m: ModelArch, tp: int = 1, pp: int = 1, capability: tuple[int, int] | None = None,
                         total: int | None = None) -> int:
    """The pinned host memory one GPU's worth of weights takes while its server sleeps (never less than vLLM and
    torch take: see the module's note); total: weights_bytes(m, tp, pp, capability) where the caller has it."""
    total = weights_bytes(m, tp, pp, capability) if total is None else total
    tensors = large_tensors(m, tp) if pp == 1 else []
    rest = max(0, total - sum(tensors))
    return sum(backup_bytes(t) for t in tensors) + 2 * rest + SMALL_POOLS + int(UNEXPLAINED * total)
