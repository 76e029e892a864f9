"""KV cache bytes and tokens, mirroring vllm/v1/kv_cache_interface.py and kv_cache_utils.py."""
from __future__ import annotations

from dataclasses import dataclass

from ..models.config import ModelArch


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class LayerSpec:
    """One KV cache layer type: page bytes for one block, and its sliding window (None: full)."""

    page_bytes: int
    window: int | None

    def blocks_per_request(self, max_model_len: int, block_size: int, max_num_batched_tokens: int) -> int:
        if self.window is None:
            return cdiv(max_model_len, block_size)
        return cdiv(min(self.window - 1 + max_num_batched_tokens, max_model_len), block_size) + 1


@dataclass(frozen=True)
class KvLayout:
    """KV cache groups as vLLM forms them: (spec, number of groups) and layers per group."""

    groups: tuple[tuple[LayerSpec, int], ...]
    group_size: int  # layers sharing one memory pool entry

    @property
    def bytes_per_block(self) -> int:
        """Memory of one block index across all pools (page x layers per group)."""
        return self.groups[0][0].page_bytes * self.group_size

    def blocks_per_request(self, max_model_len: int, block_size: int, max_num_batched_tokens: int) -> int:
        return sum(n * spec.blocks_per_request(max_model_len, block_size, max_num_batched_tokens)
                   for spec, n in self.groups)

    def bytes_per_request(self, max_model_len: int, block_size: int, max_num_batched_tokens: int) -> int:
        return self.group_size * self.groups[0][0].page_bytes * self.blocks_per_request(
            max_model_len, block_size, max_num_batched_tokens)

    def num_blocks(self, available_bytes: int) -> int:
        return max(0, available_bytes // self.bytes_per_block)

    def tokens(self, available_bytes: int, max_model_len: int, block_size: int, max_num_batched_tokens: int) -> int:
        """What vLLM logs as 'GPU KV cache size: N tokens' (max concurrency x max_model_len)."""
        per_req = self.blocks_per_request(max_model_len, block_size, max_num_batched_tokens)
        return int(self.num_blocks(available_bytes) / per_req * max_model_len)

    def max_len_that_fits(self, available_bytes: int, upper: int, block_size: int, max_num_batched_tokens: int) -> int:
        """Largest max_model_len <= upper whose one request fits (vLLM's auto-fit binary search)."""
        lo, hi = 0, upper
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.bytes_per_request(mid, block_size, max_num_batched_tokens) <= available_bytes:
                lo = mid
            else:
                hi = mid - 1
        return lo


def kv_dtype_bytes(kv_cache_dtype: str, model_dtype_bytes: int) -> int:
    return 1 if kv_cache_dtype.startswith("fp8") else model_dtype_bytes


def layout(m: ModelArch, *, tp: int, pp: int, block_size: int, kv_cache_dtype: str = "auto") -> KvLayout:
    """Group the model's attention layers the way vLLM's KV cache manager does."""
    eb = kv_dtype_bytes(kv_cache_dtype, m.dtype_bytes)
    layers = m.layer_windows[: cdiv(m.num_layers, pp)]
    if m.mla:
        per_token = (m.kv_lora_rank + m.qk_rope_head_dim) * eb
    else:
        per_token = 2 * max(1, m.num_kv_heads // tp) * m.head_dim * eb
    page = block_size * per_token
    counts: dict[int | None, int] = {}
    for w in layers:
        counts[w] = counts.get(w, 0) + 1
    if len(counts) == 1:
        (w, n), = counts.items()
        return KvLayout(((LayerSpec(page, w), 1),), n)
    lo, hi = min(counts.values()), max(counts.values())
    group_size = hi if hi < lo * 1.5 else lo
    return KvLayout(tuple((LayerSpec(page, w), cdiv(n, group_size)) for w, n in counts.items()), group_size)
