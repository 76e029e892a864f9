"""KV cache bytes and tokens, mirroring vllm/v1/kv_cache_interface.py and kv_cache_utils.py."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..models.config import ModelArch


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class LayerSpec:
    """One KV cache layer type: page bytes for one block, and its sliding window (None: full)."""

    page_bytes: int
    window: int | None
    state_blocks: int | None = None  # a recurrent layer's state: this many pages per request (MambaSpec)
    # tokens a block of this kind holds, in blocks of the configured size: a layer of a smaller page per token has
    # its block grown until its page is the largest one (kv_cache_utils.unify_kv_cache_spec_page_size)
    block_scale: int = 1

    def blocks_per_request(self, max_model_len: int, block_size: int, max_num_batched_tokens: int) -> int:
        """Blocks one request of max_model_len needs in this layer kind (vLLM's max_memory_usage_bytes per page): a
        state's pages, a sliding window's (window - 1 + one step's tokens, plus one), or the whole length."""
        if self.state_blocks is not None:
            return self.state_blocks
        block_size *= self.block_scale
        if self.window is None:
            return cdiv(max_model_len, block_size)
        return cdiv(min(self.window - 1 + max_num_batched_tokens, max_model_len), block_size) + 1


@dataclass(frozen=True)
class KvLayout:
    """KV cache groups as vLLM forms them: (spec, number of groups) and layers per group."""

    groups: tuple[tuple[LayerSpec, int], ...]
    group_size: int  # layers sharing one memory pool entry
    block_size: int | None = None  # tokens per block when vLLM sets it (hybrids); None: the configured one

    @property
    def bytes_per_block(self) -> int:
        """Memory of one block index across all pools (page x layers per group)."""
        return self.groups[0][0].page_bytes * self.group_size

    def blocks_per_request(self, max_model_len: int, block_size: int, max_num_batched_tokens: int) -> int:
        """Blocks one request needs over every group."""
        return sum(n * spec.blocks_per_request(max_model_len, block_size, max_num_batched_tokens)
                   for spec, n in self.groups)

    def bytes_per_request(self, max_model_len: int, block_size: int, max_num_batched_tokens: int) -> int:
        """KV cache bytes one request of max_model_len needs."""
        return self.group_size * self.groups[0][0].page_bytes * self.blocks_per_request(
            max_model_len, block_size, max_num_batched_tokens)

    def num_blocks(self, available_bytes: int) -> int:
        """Blocks vLLM allocates from this many bytes (get_num_blocks: whole blocks across the groups' pools)."""
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
    """Bytes per cached element: 1 for the fp8 KV dtypes, else the model's."""
    return 1 if kv_cache_dtype.startswith("fp8") else model_dtype_bytes


def _group(counts: dict, page: int, state_blocks: int | None = None, block_size: int | None = None,
           scales: dict | None = None) -> KvLayout:
    """vLLM's _get_kv_cache_groups_uniform_page_size: the smallest layer count is the group size (the
    largest when it is under 1.5x the smallest); each kind splits into groups of that many layers."""
    def spec(kind: int | str | None) -> LayerSpec:  # kind: a sliding window, None (full attention) or "state"
        if kind == "state":
            return LayerSpec(page, None, state_blocks)
        return LayerSpec(page, kind, block_scale=(scales or {}).get(kind, 1))
    if len(counts) == 1:
        (w, n), = counts.items()
        return KvLayout(((spec(w), 1),), n, block_size)
    lo, hi = min(counts.values()), max(counts.values())
    group_size = hi if hi < lo * 1.5 else lo
    return KvLayout(tuple((spec(w), cdiv(n, group_size)) for w, n in counts.items()), group_size, block_size)


# vLLM's kernel block alignment for FlashAttention/FlashInfer/Triton attention (MultipleOf(16))
KERNEL_BLOCK_ALIGNMENT = 16
# vLLM 0.27+: a hybrid of MLA and recurrent layers aligns its attention block to 128 tokens (the TRTLLM/FlashInfer MLA
# decode kernels; platforms/interface.py _align_hybrid_block_size)
MLA_HYBRID_BLOCK_ALIGNMENT = 128


def token_bytes(m: ModelArch, tp: int, kv_cache_dtype: str = "auto") -> int:
    """One attention layer's KV cache bytes per token on one GPU: MLA's latent and rope parts, else K and V of its
    KV heads on this rank (replicated when there are fewer KV heads than ranks). Gemma 4's full-attention layers
    have their own head size: the larger of the two (layer_token_bytes gives each kind's)."""
    eb = kv_dtype_bytes(kv_cache_dtype, m.dtype_bytes)
    if m.mla:
        return (m.kv_lora_rank + m.qk_rope_head_dim) * eb
    if m.full_head_dim:
        return _kv_per_token(max(m.num_kv_heads, m.full_kv_heads), max(m.head_dim, m.full_head_dim), tp, eb)
    return _kv_per_token(m.num_kv_heads, m.head_dim, tp, eb)


def _kv_per_token(kv_heads: int, head_dim: int, tp: int, eb: int) -> int:
    """K and V of these KV heads on one rank (replicated when there are fewer of them than ranks)."""
    return 2 * max(1, kv_heads // tp) * head_dim * eb


def layer_token_bytes(m: ModelArch, tp: int, kv_cache_dtype: str = "auto", window: int | None = None) -> int:
    """token_bytes of one layer of this kind: Gemma 4's full-attention layers (window None) have global_head_dim and
    their own KV heads, its sliding ones the model's head_dim."""
    if m.full_head_dim and not m.mla:
        heads, dim = (m.full_kv_heads, m.full_head_dim) if window is None else (m.num_kv_heads, m.head_dim)
        return _kv_per_token(heads, dim, tp, kv_dtype_bytes(kv_cache_dtype, m.dtype_bytes))
    return token_bytes(m, tp, kv_cache_dtype)


def own_cache_windows(m: ModelArch) -> list[int | None]:
    """The sliding window (None: full) of each layer with a KV cache of its own, in layer order: Gemma 3n/4's last
    kv_shared_layers read the cache of the last earlier layer of their kind (vLLM's gemma3n.py: 2 before the first
    shared layer for a sliding one, 1 for a full one), and keep one of their own only where there is none."""
    first = m.num_layers - m.kv_shared_layers
    return [w for i, w in enumerate(m.layer_windows) if i < first or first - (2 if w else 1) < 0]


def layout(m: ModelArch, *, tp: int, pp: int, block_size: int, kv_cache_dtype: str = "auto",
           mamba_cache_mode: str = "none", max_model_len: int | None = None, extra_full_layers: int = 0,
           mla_hybrid_alignment: bool = False) -> KvLayout:
    """Group the model's attention layers the way vLLM's KV cache manager does. extra_full_layers: full-attention
    layers of the target's page size beside the model's own (a speculative proposer's, estimator/speculative.py).
    mla_hybrid_alignment: the release aligns an MLA hybrid's attention block to MLA_HYBRID_BLOCK_ALIGNMENT."""
    per_token = token_bytes(m, tp, kv_cache_dtype)
    if m.state is not None and m.state_layers:
        return _hybrid_layout(m, tp=tp, pp=pp, block_size=block_size, per_token=per_token,
                              mode=mamba_cache_mode, max_model_len=max_model_len, extra=extra_full_layers,
                              align=MLA_HYBRID_BLOCK_ALIGNMENT if mla_hybrid_alignment and (m.mla or m.kv_lora_rank)
                              else KERNEL_BLOCK_ALIGNMENT)
    layers = own_cache_windows(m)[: cdiv(m.num_layers, pp)]
    counts: dict[int | None, int] = {}
    for w in layers:
        counts[w] = counts.get(w, 0) + 1
    if extra_full_layers:
        counts[None] = counts.get(None, 0) + extra_full_layers
    per_kind = {w: layer_token_bytes(m, tp, kv_cache_dtype, w) for w in counts}
    if len(set(per_kind.values())) > 1:
        # pages of two sizes (Gemma 4): vLLM grows the smaller page's block until the pages are equal, or pads the
        # page where its size does not divide the largest (unify_kv_cache_spec_page_size)
        big = max(per_kind.values())
        scales = {w: big // b if big % b == 0 else 1 for w, b in per_kind.items()}
        return _group(counts, block_size * big, scales=scales)
    return _group(counts, block_size * per_token)


def _hybrid_layout(m: ModelArch, *, tp: int, pp: int, block_size: int, per_token: int, mode: str,
                   max_model_len: int | None, extra: int = 0, align: int = KERNEL_BLOCK_ALIGNMENT) -> KvLayout:
    """Attention and recurrent-state layers in one pool (platforms/interface.py _align_hybrid_block_size):
    the attention block grows until its page holds one state page, the state page is padded to it.
    Cache mode none: one page per request per state layer; align: two; all (prefix caching of the
    state): one per block of the request."""
    plan = m.layer_plan[: cdiv(len(m.layer_plan), pp)]
    n_attn = sum("A" in p for p in plan) + extra
    n_state = sum("S" in p for p in plan)
    state_page = m.state.page_bytes(m.dtype_bytes, tp)
    state_blocks = 2 if mode == "align" else 1
    if n_attn == 0:  # only recurrent layers: one block per request holds the whole state (block = max_model_len)
        return _group({"state": n_state}, state_page, state_blocks, max_model_len)
    align = max(align, block_size)
    if mode == "all":
        chunk = math.lcm(m.state.chunk, align)
        block = chunk * cdiv(cdiv(state_page, per_token), chunk)
    else:
        block = align * cdiv(state_page, align * per_token)
    block = max(block, block_size)
    counts = {None: n_attn, "state": n_state}
    return _group(counts, block * per_token, None if mode == "all" else state_blocks, block)
