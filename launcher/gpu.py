"""GPUs through NVML (nvidia-ml-py), behind a small interface so tests can fake it."""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from .errors import BadInput
from .estimator import GpuBudget
from .units import MiB, parse_bytes

# What nvidia-smi reports as total for common cards (MiB).
PRESETS_MIB = {
    "H200": 143771, "H200-141GB": 143771, "H100-80GB": 81559, "H100": 81559, "H100-94GB": 95830,
    "A100-80GB": 81920, "A100-40GB": 40960, "L40S": 46068, "L40S-48GB": 46068, "A10G": 23028, "A10": 23028,
    "L4": 23034, "RTX4090": 24564, "RTX3090": 24576, "V100-32GB": 32768, "B200": 183359,
}


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    total_bytes: int
    free_bytes: int
    used_bytes: int
    pids: tuple[int, ...] = ()
    planned: bool = False  # described on the command line (--gpu, --gpu-memory): a bare card, no process on it

    def budget(self) -> GpuBudget:
        return GpuBudget(self.name, self.total_bytes, self.free_bytes, planned=self.planned)


class GpuSource(Protocol):
    def list(self) -> list[GpuInfo]: ...


class NvmlSource:
    """Reads the visible GPUs from NVML; an empty list when there is no driver or GPU."""

    def list(self) -> list[GpuInfo]:
        out = []
        with _nvml() as pynvml:
            if pynvml is None:
                return []
            n = pynvml.nvmlDeviceGetCount()
            for i in visible_indices(n):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                mem = pynvml.nvmlDeviceGetMemoryInfo(h)
                name = pynvml.nvmlDeviceGetName(h)
                name = name.decode() if isinstance(name, bytes) else name
                try:
                    procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
                    pids = tuple(p.pid for p in procs)
                except Exception:  # noqa: BLE001
                    pids = ()
                out.append(GpuInfo(i, name, int(mem.total), int(mem.free), int(mem.used), pids))
        return out


@contextmanager
def _nvml():
    """pynvml initialised for the block (None without the library, a driver or a GPU), shut down after."""
    try:
        import pynvml
    except ImportError:
        yield None
        return
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver, no GPU
        yield None
        return
    try:
        yield pynvml
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def visible_indices(count: int, env: dict | None = None) -> list[int]:
    """Respect CUDA_VISIBLE_DEVICES (indices only; UUIDs keep all)."""
    env = os.environ if env is None else env
    spec = env.get("CUDA_VISIBLE_DEVICES")
    if spec is None:
        return list(range(count))
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.lstrip("-").isdigit():
            return list(range(count))
        i = int(part)
        if i < 0:
            break  # CUDA stops at the first invalid index
        if i < count:
            out.append(i)
    return out


def planned_gpus(gpu_memory: str | None, preset: str | None, num_gpus: int | None) -> list[GpuInfo]:
    """GPUs described on the command line (no GPU needed): --gpu-memory or --gpu PRESET."""
    if preset and gpu_memory:
        raise BadInput("give either --gpu (a known GPU) or --gpu-memory (a size), not both.")
    if preset:
        key = preset.upper().replace(" ", "-")
        if key not in PRESETS_MIB:
            from .errors import did_you_mean
            raise BadInput(f"unknown GPU preset '{preset}'.{did_you_mean(key, PRESETS_MIB)}",
                           hint="Known: " + ", ".join(sorted(PRESETS_MIB)) + "; or give --gpu-memory 80GiB.")
        total, name = PRESETS_MIB[key] * MiB, key
    else:
        total, name = parse_bytes(gpu_memory, what="--gpu-memory"), f"planned {gpu_memory}"
    n = 1 if num_gpus is None else num_gpus
    if n < 1:
        raise BadInput("--num-gpus must be at least 1.")
    return [GpuInfo(i, name, total, total, 0, planned=True) for i in range(n)]


def memory_by_pid() -> dict[int, int]:
    """GPU memory each process holds, summed over the visible GPUs, as NVML reports it; {} without NVML."""
    out: dict[int, int] = {}
    with _nvml() as pynvml:
        if pynvml is None:
            return out
        for i in visible_indices(pynvml.nvmlDeviceGetCount()):
            try:
                procs = pynvml.nvmlDeviceGetComputeRunningProcesses(pynvml.nvmlDeviceGetHandleByIndex(i))
            except Exception:  # noqa: BLE001
                continue
            for p in procs:
                out[p.pid] = out.get(p.pid, 0) + int(p.usedGpuMemory or 0)
    return out
