"""Weight bytes from a checkpoint's safetensors headers (only the header of each file is read).

A safetensors file starts with an 8-byte little-endian header length and a JSON header naming every
tensor with its dtype and shape. vLLM holds floating tensors in the model's dtype (an fp32 checkpoint
served in bf16 takes half its file size) and keeps packed integers (AWQ/GPTQ qweight, qzeros, g_idx)
and fp8 weights as stored, so the bytes on the GPU are: floating elements x the served dtype's size +
the other tensors' stored bytes. Which files vLLM reads: the index's weight map when there is one, else
every *.safetensors but consolidated*.safetensors (as vLLM's loader skips them when others exist).
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import ModelArch

FLOAT = {"F64", "F32", "F16", "BF16"}
SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
         "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "F8_E4M3FNUZ": 1, "F8_E5M2FNUZ": 1}
MAX_HEADER = 100 << 20  # a larger header is not a safetensors file


@dataclass(frozen=True)
class CheckpointWeights:
    float_params: int  # elements of floating tensors: held in the model's dtype
    other_bytes: int  # packed integers, fp8, float32 scales, ... as stored
    files: int
    source: str
    zeros_bytes: int = 0  # packed integer zero points (qzeros), included in other_bytes
    g_idx_bytes: int = 0  # GPTQ act-order indices, included in other_bytes

    def bytes(self, dtype_bytes: int) -> int:
        return self.float_params * dtype_bytes + self.other_bytes


def read_header(path: Path) -> dict:
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ValueError("shorter than a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER:
            raise ValueError(f"header of {n} bytes")
        return json.loads(fh.read(n))


def weight_files(folder: Path) -> list[Path] | None:
    """The safetensors files vLLM loads from this folder; None when there are none (or one is missing)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        files = [folder / n for n in names]
        return files if files and all(f.is_file() for f in files) else None
    files = sorted(folder.glob("*.safetensors"))
    if any(not f.name.startswith("consolidated") for f in files):
        files = [f for f in files if not f.name.startswith("consolidated")]
    return files or None


def from_folder(folder: str | Path) -> CheckpointWeights | None:
    """What the checkpoint in this folder holds; None when it has no readable safetensors files."""
    files = weight_files(Path(folder))
    if not files:
        return None
    floats = other = zeros = gidx = 0
    for f in files:
        try:
            header = read_header(f)
        except (OSError, ValueError):
            return None
        for name, t in header.items():
            if name == "__metadata__" or not isinstance(t, dict):
                continue
            n = math.prod(t.get("shape") or [1])
            dt = t.get("dtype", "")
            if dt in FLOAT and not (dt == "F32" and "scale" in name):
                floats += n
            else:  # vLLM keeps float32 quantization scales in float32
                other += n * SIZES.get(dt, 2)
                if name.endswith(("qzeros", "weight_zero_point")):
                    zeros += n * SIZES.get(dt, 2)
                elif name.endswith("g_idx"):
                    gidx += n * SIZES.get(dt, 2)
    return CheckpointWeights(floats, other, len(files), f"safetensors headers ({len(files)} file{'s' * (len(files) > 1)})",
                             zeros, gidx)


def from_index_total(total_size: int) -> CheckpointWeights:
    """A Hub repository's index gives only the stored total (metadata.total_size): taken as stored."""
    return CheckpointWeights(0, int(total_size), 0, "safetensors index total_size")


GPTQ_WITHOUT_METADATA = ("GPTQ config but no safetensors files: vLLM 0.24 takes the quantized layers from the "
                         "safetensors metadata (auto_gptq.maybe_update_config), finds none and allocates every "
                         "linear layer unquantized")


def as_vllm_quantizes(arch: ModelArch, folder: str | Path) -> ModelArch:
    """The architecture with the quantization vLLM will really apply to this local folder."""
    from dataclasses import replace

    from .quant import NONE
    if arch.quant.method == "gptq" and not any(Path(folder).glob("*.safetensors")):
        return replace(arch, quant=NONE, weights_note=GPTQ_WITHOUT_METADATA)
    return arch
