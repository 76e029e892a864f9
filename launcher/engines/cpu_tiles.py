"""AMX tiles in vLLM's CPU build: the tile-data permission each vLLM process needs, requested by a vLLM plugin.

Linux enables the AMX tile-data state (XSTATE component 18) per process, only after the process asks with
`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`; the permission is inherited on fork and cleared on exec.
Until then the first instruction that touches tile data (`tilezero`, `tileloadd`) traps and the kernel answers
SIGILL (Documentation/arch/x86/xstate.rst). vLLM's CPU attention for bfloat16 on such a host
(csrc/cpu/cpu_attn_amx.hpp) issues those instructions itself and never asks: vLLM 0.32's server relies on oneDNN
having asked first, which oneDNN does when it picks an AMX GEMM, as it does in the warm-up forward pass of
`max_num_batched_tokens` tokens. The CPU worker skips that warm-up with eager execution (`--enforce-eager`, and
`--enable-lora`, which turns compilation off on the CPU platform) and an explicit KV cache size
(VLLM_CPU_KVCACHE_SPACE, which the launcher always sets) (`CPUWorker._should_warm_up_model`); a short first prompt
then runs its linear layers on AVX-512 kernels, and the attention's `tilezero` kills the worker with SIGILL.
vLLM's own tests and kernel benchmarks call `torch.cpu._init_amx()` first for this reason.

vLLM loads every `vllm.general_plugins` entry point in each of its processes (the engine core and every worker
included) before the model runs. The launcher registers `vllm_plugin` there; it acts only where the launcher
started the server (ENV set by server_env) and the host has AMX tiles. Should the kernel refuse the permission,
it makes the process report no AMX to vLLM, which then takes its AVX-512 attention instead of crashing."""
from __future__ import annotations

import ctypes
import os
import platform
import sys

ENV = "LAUNCHER_AMX_TILES"  # set to 1 in the server's environment by engines.vllm.server_env (CPU build)
PLUGIN = "launcher_amx_tiles"  # the entry point's name (pyproject.toml), as VLLM_PLUGINS lists plugins
ARCH_GET_XCOMP_PERM = 0x1022
ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILEDATA = 18
SYS_ARCH_PRCTL = 158  # x86-64


def _arch_prctl(code: int, arg) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(SYS_ARCH_PRCTL, code, arg)


def tile_data_permitted() -> bool:
    """Whether this process may use AMX tile data now (ARCH_GET_XCOMP_PERM)."""
    if platform.machine() != "x86_64" or sys.platform != "linux":
        return False
    mask = ctypes.c_uint64(0)
    if _arch_prctl(ARCH_GET_XCOMP_PERM, ctypes.byref(mask)) != 0:
        return False
    return bool(mask.value & (1 << XFEATURE_XTILEDATA))


def request_tile_data() -> tuple[bool, str]:
    """Ask the kernel for AMX tile data in this process: (granted, why not)."""
    if platform.machine() != "x86_64" or sys.platform != "linux":
        return False, f"not x86-64 Linux ({sys.platform}, {platform.machine()})"
    if _arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0:
        return False, os.strerror(ctypes.get_errno())
    granted = tile_data_permitted()
    return granted, "" if granted else "not granted"


def vllm_plugin() -> None:
    """vLLM's general plugin (loaded in each vLLM process): AMX tile data requested where the launcher started the
    server on a host with AMX tiles; refused, vLLM is told there are no AMX tiles. One line in the server log."""
    from .. import hostcpu

    if os.environ.get(ENV) != "1" or not hostcpu.has_amx_tiles():
        return
    ok, why = request_tile_data()
    if ok:
        print(f"launcher: AMX tile data permitted in PID {os.getpid()} (vLLM's AMX attention needs it)",
              file=sys.stderr, flush=True)
        return
    import torch

    torch.cpu._is_amx_tile_supported = lambda: False  # vLLM's attention and GEMM choices then take AVX-512
    print(f"launcher: AMX tile data refused in PID {os.getpid()} ({why}): vLLM told there are no AMX tiles",
          file=sys.stderr, flush=True)


def plugins_env(value: str | None) -> str | None:
    """VLLM_PLUGINS with this plugin allowed: unset stays unset (vLLM then loads every plugin)."""
    if value is None:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    return ",".join([*names, PLUGIN] if PLUGIN not in names else names)


def plugin_installed() -> bool:
    """Whether vLLM will find this plugin (the launcher installed with its entry points, `pip install -e .`)."""
    from importlib.metadata import entry_points

    return any(ep.name == PLUGIN for ep in entry_points(group="vllm.general_plugins"))


def check_plugin() -> None:
    """Before a CPU-build start on a host with AMX tiles: refused (exit 2) where vLLM would not load the plugin,
    since its first short request would then kill the server with SIGILL."""
    from .. import hostcpu
    from ..errors import BadInput

    if hostcpu.has_amx_tiles() and not plugin_installed():
        raise BadInput("this host has AMX tiles, and vLLM's CPU build would die with SIGILL (illegal instruction) at "
                       "its first short request: the launcher's vLLM plugin that requests AMX tile data is not "
                       "installed in this environment.",
                       hint="Install the launcher with its entry points (`pip install -e .` or `make setup`).")
