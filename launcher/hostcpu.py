"""The host CPU as vLLM's CPU build reads it (its platform changes memory layouts and kernels by instruction set)."""
from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

# The flags that decide which of vLLM's CPU kernels run (csrc/cpu: AMX tiles, AVX-512 BF16, plain AVX-512)
KERNEL_FLAGS = ("avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
# what vLLM's AMX attention (cpu_attn_amx.hpp, bfloat16) needs: torch.cpu._is_amx_tile_supported() asks for these
AMX_TILE_FLAGS = ("amx_tile", "amx_bf16")


@lru_cache(maxsize=4)
def flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The kernel's CPU flags of the first processor (empty where /proc/cpuinfo cannot be read)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[-1].split())
    return frozenset()


@lru_cache(maxsize=4)
def model_name(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name as the kernel reports it (else the platform's word for it)."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[-1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_avx512_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """What torch.cpu._is_avx512_bf16_supported() answers, the function vLLM's CPU platform asks
    (platforms/cpu.py), read without importing torch: the kernel lists the same CPUID bit as the `avx512_bf16`
    flag, and only where the OS saves the AVX-512 state, as torch's cpuinfo also requires."""
    return "avx512_bf16" in flags(cpuinfo)


def has_amx_tiles(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether vLLM's CPU build takes its AMX kernels here (the kernel lists AMX only where it enables the state)."""
    return all(f in flags(cpuinfo) for f in AMX_TILE_FLAGS)


def missing_amx_flags(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """The AMX flags this host lacks (for a skip reason that names them)."""
    return [f for f in AMX_TILE_FLAGS if f not in flags(cpuinfo)]


def summary(cpuinfo: str = "/proc/cpuinfo") -> str:
    """One line: the CPU's model and which of the kernel-deciding flags it has (shown first by `make test`)."""
    have = [f for f in KERNEL_FLAGS if f in flags(cpuinfo)]
    return f"{model_name(cpuinfo)}; {' '.join(have) or 'no AVX-512, no AMX'}"
