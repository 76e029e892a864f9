"""The host CPU as vLLM's CPU build reads it (its platform changes memory layouts by instruction set)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def has_avx512_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """What torch.cpu._is_avx512_bf16_supported() answers, the function vLLM's CPU platform asks
    (platforms/cpu.py), read without importing torch: the kernel lists the same CPUID bit as the `avx512_bf16`
    flag, and only where the OS saves the AVX-512 state, as torch's cpuinfo also requires."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return "avx512_bf16" in line.split(":", 1)[-1].split()
    return False
