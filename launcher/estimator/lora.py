"""What `--enable-lora` adds: the adapters' stacked buffers vLLM allocates on every wrapped module.

vLLM's LoRA manager (lora/model_manager.py `_create_lora_modules`) wraps each linear layer, each fused-MoE
runner and, where the model class lists it in `embedding_modules`, the input embedding, and each wrapper
allocates zero-filled A and B stacks for `max_loras` slots at `max_lora_rank` (lora/layers/*.py
`create_lora_weights`), in the model's dtype unless --lora-dtype says otherwise:
- a column-parallel layer (QKV, gate/up): per output slice, A (rank x input) whole and B (slice/TP x rank);
- a row-parallel layer (o_proj, down_proj): A (rank x input/TP) and B (output x rank) whole;
- a fused-MoE layer: per expert, w1/w3 A (rank x hidden) and B (intermediate/TP x rank), w2 A (rank x
  intermediate/TP) and B (hidden x rank); its router (a replicated linear layer) as a layer of its own;
- the embedding: A (vocabulary x rank) and B (hidden x rank).
Checked against vLLM's own allocation on the meta device (tests/test_lora.py). The dummy adapters of the
profile run live in host memory (create_dummy_lora: device "cpu"), the Punica metadata is a few int tensors of
max_num_batched_tokens, and the shrink kernels' float32 buffers (slices x tokens x rank) are transient.
With CUDA graphs vLLM captures every graph twice, with and without adapters
(compilation_config.cudagraph_specialize_lora, default on; v1/cudagraph_dispatcher.py `_get_lora_cases`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import BadInput
from ..models.caveats import Caveat, Margin
from ..models.config import DTYPE_BYTES, ModelArch


@dataclass(frozen=True)
class LoraSettings:
    """--enable-lora and its sizes, with vLLM's defaults (config/lora.py)."""

    max_loras: int = 1
    max_lora_rank: int = 16
    lora_dtype: str = "auto"
    max_cpu_loras: int | None = None  # host memory only

    def __post_init__(self):
        if self.max_loras < 1 or self.max_lora_rank < 1:
            raise BadInput(f"--max-loras and --max-lora-rank must be at least 1, got {self.max_loras} and "
                           f"{self.max_lora_rank}.")
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise BadInput(f"--max-cpu-loras ({self.max_cpu_loras}) must be at least --max-loras ({self.max_loras}); "
                           "vLLM refuses it.")


# The extra captures with adapters (see the module's docstring).
GRAPH_CASES = 2


@lru_cache(maxsize=1)
def _support() -> dict:
    return json.loads(Path(__file__).parents[1].joinpath("models", "lora_support.json").read_text())


def support(architecture: str) -> dict | None:
    """What the snapshot of vLLM's model classes says of this architecture: {"lora": bool, "embedding": bool}
    (scripts/gen_lora_support.py), None when the architecture is not in it."""
    return _support()["architectures"].get(architecture)


def _linear(rank: int, inputs: int, outputs: tuple[int, ...]) -> int:
    """Elements of one slot of a linear layer's stacks: per output slice A (rank x inputs) and B (slice x rank)."""
    return sum(rank * inputs + out * rank for out in outputs)


def _slices(m: ModelArch) -> tuple[int, int]:
    """Output slices of the QKV and gate/up layers: vLLM merges q/k/v (gate/up) into one layer with a slice per
    checkpoint tensor where the class's packed_modules_mapping says so, else the fused layer is one slice."""
    info = support(m.architecture) or {}
    return info.get("qkv_slices") or 3, info.get("mlp_slices") or 2  # not declared: the larger count


def _attention(m: ModelArch, r: int, tp: int) -> int:
    h = m.hidden_size
    if m.mla or m.kv_lora_rank:  # latent projections: each a linear layer of its own
        heads = m.num_heads // tp
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        n = _linear(r, h, (m.kv_lora_rank + m.qk_rope_head_dim,))
        n += _linear(r, m.kv_lora_rank, (heads * (m.qk_nope_head_dim + m.v_head_dim),))
        if m.q_lora_rank:
            n += _linear(r, h, (m.q_lora_rank,)) + _linear(r, m.q_lora_rank, (heads * qk,))
        else:
            n += _linear(r, h, (heads * qk,))
        return n + r * heads * m.v_head_dim + h * r
    d = m.head_dim
    q, kv = m.num_heads // tp * d, max(1, m.num_kv_heads // tp) * d
    qkv = _linear(r, h, (q, kv, kv) if _slices(m)[0] == 3 else (q + 2 * kv,))
    o_proj = r * (m.num_heads // tp * d) + h * r  # row parallel: A's input split, B whole
    return qkv + o_proj


def _mlp(m: ModelArch, r: int, inter: int, tp: int) -> int:
    i = inter // tp
    up = _linear(r, m.hidden_size, (i, i) if m.gated_mlp and _slices(m)[1] == 2 else ((1 + m.gated_mlp) * i,))
    down = r * i + m.hidden_size * r
    return up + down


def _moe(m: ModelArch, r: int, tp: int) -> int:
    h, i = m.hidden_size, m.moe_intermediate_size // tp
    slices = 2 if m.gated_mlp else 1
    experts = m.num_experts * (slices * (r * h + i * r) + r * i + h * r)
    router = _linear(r, h, (m.num_experts,))
    n = experts + router
    if m.shared_experts:
        size = m.moe_intermediate_size * m.shared_experts if m.mla else (m.shared_expert_intermediate or m.intermediate_size)
        n += _mlp(m, r, size, tp)
        if not m.mla:
            n += _linear(r, h, (1,))  # Qwen2-MoE's shared-expert gate
    return n


def adapter_bytes(m: ModelArch, lora: LoraSettings, *, tp: int = 1, pp: int = 1) -> int:
    """Bytes of the adapters' stacks on the most loaded GPU (the first pipeline stage holds the embedding)."""
    r = lora.max_lora_rank
    per_stage = -(-m.num_layers // pp)
    n = 0
    for index in range(per_stage):
        parts = m.layer_plan[index] if m.layer_plan else "AF"
        if "A" in parts:
            n += _attention(m, r, tp)
        if "F" in parts:
            n += _moe(m, r, tp) if m.is_moe_layer(index) else _mlp(m, r, m.intermediate_size, tp)
    info = support(m.architecture)
    if info is None or info.get("embedding"):  # unknown: counted (the larger answer)
        n += r * m.vocab_size + m.hidden_size * r
    dtype = m.dtype if lora.lora_dtype in ("auto", None, "") else lora.lora_dtype
    return n * lora.max_loras * DTYPE_BYTES.get(dtype, 2)


def activation_bytes(lora: LoraSettings, max_num_batched_tokens: int) -> int:
    """The profile run's LoRA extras on the GPU: the Punica metadata (two int32 mappings of the batch and their
    sort, a few vectors per token) and one shrink buffer of a three-slice layer (float32, slices x tokens x rank)."""
    t = max_num_batched_tokens
    return 2 * 4 * 4 * t + 3 * t * lora.max_lora_rank * 4


def caveats(m: ModelArch) -> list[Caveat]:
    """What a LoRA launch of this model does not measure or count: modelled terms all (the smaller margin, derived
    from shapes), not unknown parts of vLLM."""
    out = ["no LoRA launch was measured on a GPU (the adapters' buffers are vLLM's own count, the second set of "
           "CUDA graphs is counted as large as the first)"]
    if m.state_layers:
        out.append("LoRA on the state-mixer layers of a hybrid model is not counted")
    if m.vision_layers:
        out.append("LoRA on the vision tower is not counted (vLLM leaves it off unless --enable-tower-connector-lora)")
    return [Caveat(w, topic="LoRA", margin=Margin.SHAPES) for w in out]


def check_supported(m: ModelArch) -> None:
    """vLLM refuses --enable-lora for a model class without LoRA support ("does not support LoRA yet")."""
    info = support(m.architecture)
    if info is not None and not info.get("lora"):
        raise BadInput(f"{m.architecture} does not support LoRA in vLLM {_support()['vllm']} (vLLM refuses "
                       "--enable-lora for it).", hint="Drop --enable-lora, or merge the adapter into the weights.")
