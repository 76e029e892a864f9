"""The launches of ours already running on this host, and what each holds, from their records (launch.json).

A launch planned beside them says what they hold; NVML's free memory (what vLLM itself reads at start-up) already
leaves it out, because a launch plans only once the others are past their start (locks.StartLock).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .locks import held
from .runs import ACTIVE, all_names, read_json, read_state, run_dir
from .units import GiB


@dataclass(frozen=True)
class Neighbour:
    """A running launch: on these GPUs (NVML indices; empty on the CPU build), holding this much."""

    name: str
    state: str
    gpus: tuple[int, ...]
    share_bytes: int  # a GPU launch: the share vLLM sizes itself to (utilization x total), per GPU
    outside_bytes: int  # beyond the share: CUDA graphs, per-request tables, warm-up (per GPU)
    weights_bytes: int | None = None  # a CPU launch: its weights in host memory
    kv_cache_bytes: int | None = None  # a CPU launch: its KV cache in host memory

    @property
    def held_bytes(self) -> int:
        if self.gpus:
            return self.share_bytes + self.outside_bytes
        return (self.weights_bytes or 0) + (self.kv_cache_bytes or 0)

    def describe(self) -> str:
        if self.gpus:
            where = f"GPU{'s' * (len(self.gpus) > 1)} {','.join(map(str, self.gpus))}"
            return (f"'{self.name}' ({self.state}, {where}) holds {self.share_bytes / GiB:.2f} GiB per GPU (its share) "
                    f"+ {self.outside_bytes / GiB:.2f} GiB beside it")
        kv = "?" if self.kv_cache_bytes is None else f"{self.kv_cache_bytes / GiB:.2f}"
        w = "?" if self.weights_bytes is None else f"{self.weights_bytes / GiB:.2f}"
        return f"'{self.name}' ({self.state}, CPU) holds {w} GiB of weights + {kv} GiB of KV cache in host memory"

    def to_dict(self) -> dict:
        return asdict(self) | {"held_bytes": self.held_bytes}


def running(exclude: str | None = None) -> list[Neighbour]:
    """Every launch whose supervisor holds its name's lock (it runs), with what its record says it holds."""
    out = []
    for name in all_names():
        if name == exclude or held(name) is None:
            continue
        st = read_state(name) or {}
        if st.get("state") not in ACTIVE:
            continue
        rec = read_json(run_dir(name) / "launch.json") or {}
        est, cpu = rec.get("estimate"), rec.get("cpu_kv")
        if est:
            gpus = tuple(int(g["index"]) for g in est.get("gpus") or [])
            out.append(Neighbour(name, st["state"], gpus, int(est.get("requested_bytes") or 0),
                                 int(est.get("outside_budget_bytes") or 0)))
        elif cpu is not None:
            out.append(Neighbour(name, st["state"], (), 0, 0, cpu.get("weights_bytes"), cpu.get("kv_cache_bytes")))
    return out


def on_gpus(neighbours: list[Neighbour], indices: list[int]) -> list[Neighbour]:
    return [n for n in neighbours if set(n.gpus) & set(indices)]
