"""Weight bytes of one linear layer as vLLM 0.24 holds it after `process_weights_after_loading`.

Read from vLLM's quantization methods and kernels (model_executor/layers/quantization/ and
model_executor/kernels/linear/mixed_precision/):

- 4/8-bit integer weights (AWQ, GPTQ, compressed-tensors pack-quantized): the packed weight
  (K x N x bits / 8) and one scale per group and output column in the activation dtype. vLLM
  picks the first kernel that can run it (kernels/linear/__init__.py `_POSSIBLE_KERNELS`): on
  compute capability 9.0 (H100/H200) that is Machete, which *pre-applies the scales to the zero
  points* and keeps them as one activation-dtype value per group and column (machete.py
  `transform_w_zp`), four times the packed 4-bit zeros; elsewhere Marlin, which keeps them packed
  (marlin_zero_points). Marlin pads N to 64 and K to lcm(128, group) (marlin_padded_nk).
  Symmetric GPTQ has no zero points: the checkpoint's qzeros are replaced by an empty tensor.
- FP8 (fp8 checkpoints, compressed-tensors float-quantized, online `--quantization fp8`): one byte
  per weight plus float32 scales (per tensor, per output channel or per 128 x 128 block).
- INT8 W8A8 (compressed-tensors int-quantized): one byte per weight plus a float32 scale per column.
- bitsandbytes 4-bit: packed nibbles plus a float32 absmax per 64 weights (an upper bound: nested
  quantization stores less).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

INT_METHODS = ("awq", "gptq", "wna16")  # packed integer weights with group scales


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


@dataclass(frozen=True)
class Quant:
    """Weight quantization as vLLM applies it to the linear layers of the decoder."""

    method: str  # "none", "awq", "gptq", "wna16", "fp8", "int8", "bitsandbytes"
    bits: int = 16
    group_size: int = 128  # -1: one group per column
    zero_point: bool = False  # asymmetric integer weights keep a zero point per group
    fp8_block: tuple[int, int] | None = None  # (block_n, block_k) of block-wise fp8 scales
    channel_scales: bool = False  # fp8/int8 with one scale per output column

    @property
    def is_int(self) -> bool:
        return self.method in INT_METHODS

    def kernel(self, capability: tuple[int, int] | None) -> str:
        """The mixed-precision kernel vLLM picks for integer weights (see module docstring)."""
        if not self.is_int:
            return ""
        machete_ok = self.bits in (4, 8) and (self.group_size in (-1, 64, 128) or self.group_size % 128 == 0)
        if capability is None:
            return "unknown"  # planning without a GPU: the larger of the two
        return "machete" if capability == (9, 0) and machete_ok else "marlin"

    def linear_bytes(self, n_in: int, n_out: int, dtype_bytes: int, capability: tuple[int, int] | None = None) -> float:
        """Bytes of one linear layer's weight, scales and zero points (K = n_in, N = n_out)."""
        m = self.method
        if m in ("none", "", "mxfp4"):  # MXFP4 quantizes the experts only (expert_bytes): linears stay 16-bit
            return n_in * n_out * dtype_bytes
        if m == "fp8":
            if self.fp8_block:
                bn, bk = self.fp8_block
                return n_in * n_out + math.ceil(n_out / bn) * math.ceil(n_in / bk) * 4
            return n_in * n_out + (n_out * 4 if self.channel_scales else 16)
        if m == "int8":
            return n_in * n_out + n_out * 4
        if m == "bitsandbytes":
            return n_in * n_out * self.bits / 8 + (n_in * n_out / 64 * 4 if self.bits == 4 else n_out * 4)
        # packed integers
        kern = self.kernel(capability)
        k, n = n_in, n_out
        g = self.group_size if self.group_size and self.group_size > 0 else k
        if kern in ("marlin", "unknown"):
            pads = ((_round_up(n, 64), _round_up(k, math.lcm(128, g))), (_round_up(n, 128), _round_up(k, math.lcm(64, g))))
            k, n = min(pads, key=lambda nk: (nk[0] * nk[1], nk[0] + nk[1]))[::-1]
        groups = -(-k // g)
        total = k * n * self.bits / 8 + groups * n * dtype_bytes
        if self.zero_point:
            zero_bytes = dtype_bytes if kern in ("machete", "unknown") else self.bits / 8
            total += groups * n * zero_bytes
        return total


    def mxfp4_expert_bytes(self, hidden: int, inter: int, dtype_bytes: int) -> float:
        """One MXFP4 expert as vLLM's Mxfp4MoEMethod.create_weights allocates it (quantization/mxfp4.py): uint8
        pairs of 4-bit values and one uint8 scale per 32 (w13: 2I x H, w2: H x I), and the 16-bit biases
        (gpt-oss's experts have them), after the padding of H and I that the GPU backends ask for: the largest
        of NVIDIA's (Marlin, TRT-LLM: H to 256, I to 128; fused_moe/oracle/mxfp4.py
        mxfp4_round_up_hidden_size_and_intermediate_size), so that no backend's choice is underestimated."""
        hidden, inter = _round_up(hidden, 256), _round_up(inter, 128)
        w13 = 2 * inter * (hidden // 2 + hidden // 32) + 2 * inter * dtype_bytes
        w2 = hidden * (inter // 2 + inter // 32) + hidden * dtype_bytes
        return w13 + w2


NONE = Quant("none")


def from_config(q: dict, override: str | None) -> tuple[Quant, str | None]:
    """(Quant, note) from config.json's quantization_config and --quantization; the note says what
    is not modelled (then the weights are counted at 16 bits, an upper bound)."""
    method = (override or q.get("quant_method") or "none").lower()
    if method in ("none", ""):
        return NONE, None
    if override and not q.get("quant_method") and method in ("fp8", "fbgemm_fp8"):
        return Quant("fp8", bits=8), None  # online quantization of a 16-bit checkpoint: per-tensor scales
    if method in ("fp8", "fbgemm_fp8", "modelopt"):
        block = q.get("weight_block_size")
        return Quant("fp8", bits=8, fp8_block=tuple(block) if block else None,
                     channel_scales=method == "fbgemm_fp8"), None
    if method in ("awq", "awq_marlin", "auto_awq"):
        return Quant("awq", bits=int(q.get("bits") or q.get("w_bit") or 4),
                     group_size=int(q.get("group_size") or q.get("q_group_size") or 128),
                     zero_point=bool(q.get("zero_point", True))), None
    if method in ("gptq", "gptq_marlin", "auto_gptq"):
        return Quant("gptq", bits=int(q.get("bits") or 4), group_size=int(q.get("group_size") or 128),
                     zero_point=not q.get("sym", True)), None
    if method == "compressed-tensors":
        return _compressed_tensors(q)
    if method == "bitsandbytes":
        return Quant("bitsandbytes", bits=4 if q.get("load_in_4bit", True) else 8), None
    if method == "mxfp4":
        return Quant("mxfp4", bits=4, group_size=32), None
    return NONE, f"quantization '{method}' is not modelled: weights counted at the checkpoint's 16-bit size, an upper bound"


def _compressed_tensors(q: dict) -> tuple[Quant, str | None]:
    groups = [g for g in (q.get("config_groups") or {}).values() if isinstance(g, dict)]
    w = (groups[0].get("weights") or {}) if groups else {}
    bits, kind, strategy = int(w.get("num_bits") or 16), str(w.get("type") or "int"), str(w.get("strategy") or "tensor")
    if len(groups) != 1 or bits >= 16:
        return NONE, "compressed-tensors scheme not modelled: weights counted at 16 bits, an upper bound"
    if kind == "float" and bits == 8:
        block = w.get("block_structure")
        return Quant("fp8", bits=8, fp8_block=tuple(block) if strategy == "block" and block else None,
                     channel_scales=strategy == "channel"), None
    if kind == "int" and bits == 8 and (groups[0].get("input_activations") or None):
        return Quant("int8", bits=8), None
    if kind == "int" and bits in (4, 8):
        return Quant("wna16", bits=bits, group_size=int(w.get("group_size") or -1),
                     zero_point=not w.get("symmetric", True)), None
    return NONE, f"compressed-tensors {kind}{bits} weights not modelled: counted at 16 bits, an upper bound"


# Compute capability by GPU name (NVML names), for the kernel choice above. Unknown names plan for the
# larger layout.
_CAPABILITY = (
    (("gb10", "dgx spark"), (12, 1)),
    (("h100", "h200", "h800", "h20", "gh200"), (9, 0)),
    (("b200", "b100", "gb200", "b300"), (10, 0)),
    (("l40", "l4", "rtx 40", "rtx 6000 ada", "rtx 5000 ada", "rtx 4000 ada"), (8, 9)),
    (("a100", "a800", "a30"), (8, 0)),
    (("a10", "a40", "a16", "a2", "rtx 30", "rtx a6000", "rtx a5000", "rtx a4000"), (8, 6)),
    (("rtx 50", "rtx pro 6000"), (12, 0)),
    (("t4", "rtx 20"), (7, 5)),
    (("v100",), (7, 0)),
)


def capability(gpu_name: str) -> tuple[int, int] | None:
    n = gpu_name.lower()
    for keys, cap in _CAPABILITY:
        if any(k in n for k in keys):
            return cap
    return None
