"""Which GPUs a model needs: the estimate for each GPU kind and 1, 2, 4 and 8 GPUs, no GPU needed.

Each cell is the same plan `launcher estimate --gpu KIND --num-gpus N` makes with the parallel layout set: tensor
parallel over the N GPUs where N divides the attention heads (vLLM's requirement), else pipeline parallel where the
model has at least N layers, else nothing (the cell says why)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from .errors import BadInput
from .gpu import PRESETS_MIB

if TYPE_CHECKING:
    from .planning import ModelRef

# The kinds `--gpu all` covers: one name per card (PRESETS_MIB has aliases), smallest first
ALL_KINDS = ("L4", "A10G", "RTX4090", "V100-32GB", "A100-40GB", "L40S", "A100-80GB", "H100-80GB", "H100-94GB", "H200",
             "B200")
COUNTS = (1, 2, 4, 8)


@dataclass(frozen=True)
class Cell:
    gpu: str
    num_gpus: int
    tensor_parallel_size: int
    pipeline_parallel_size: int
    fits: bool | None  # None: no parallel layout for this count
    max_model_len: int  # the length asked for (or the model's maximum)
    max_model_len_fit: int
    max_concurrency: float
    kv_cache_tokens: int
    cause: str = ""
    confidence: str = ""
    fix: str = ""  # the change that makes it fit where the cause is not the length (a utilization, say)

    def to_dict(self) -> dict:
        return asdict(self)


def kinds(selector: str) -> list[str]:
    """'all' or a comma-separated list of known GPU kinds."""
    if selector.strip().lower() == "all":
        return list(ALL_KINDS)
    out = []
    for part in (x.strip() for x in selector.split(",") if x.strip()):
        key = part.upper().replace(" ", "-")
        if key not in PRESETS_MIB:
            from .errors import did_you_mean

            raise BadInput(f"unknown GPU kind '{part}'.{did_you_mean(key, PRESETS_MIB)}",
                           hint="Known: " + ", ".join(ALL_KINDS) + "; or --gpu all.")
        out.append(key)
    return out


def parallel_layout(num_heads: int, num_layers: int, n: int) -> tuple[int, int] | None:
    if num_heads % n == 0:
        return n, 1
    if n <= num_layers:
        return 1, n
    return None


def is_matrix(gpu: str | None) -> bool:
    return bool(gpu) and (gpu.strip().lower() == "all" or "," in gpu)


def cells(model: ModelRef, engine_args: dict, selector: str, *, vllm_version: str | None = None) -> list[Cell]:
    """model: a planning.ModelRef with its architecture. engine_args: the user's; tensor/pipeline sizes are set
    per cell."""
    from .estimator.core import advice_flags
    from .planning import plan

    m = model.arch
    out = []
    for kind in kinds(selector):
        for n in COUNTS:
            lay = parallel_layout(m.num_heads, m.num_layers, n)
            if lay is None:
                out.append(Cell(kind, n, 0, 0, None, 0, 0, 0.0, 0, cause=f"no layout: {m.num_heads} heads, "
                                                                      f"{m.num_layers} layers"))
                continue
            args = {**engine_args, "tensor-parallel-size": lay[0], "pipeline-parallel-size": lay[1]}
            e = plan(model, args, gpu_preset=kind, num_gpus=n, vllm_version=vllm_version, suggest=False).estimate
            fix = advice_flags(e.suggestions[0]) if not e.fits and e.cause != "max_model_len" and e.suggestions else ""
            out.append(Cell(kind, n, lay[0], lay[1], e.fits, e.max_model_len, e.max_model_len_fit, e.max_concurrency,
                            e.kv_cache_tokens, "" if e.fits else e.cause, e.confidence, fix))
    return out


def plot(rows: list[Cell], path: str, title: str) -> None:
    """A heat map of the largest max_model_len that fits, per GPU kind and count (matplotlib, imported only here)."""
    try:
        import matplotlib
    except ImportError:
        raise BadInput("--plot needs matplotlib.", hint="pip install 'launcher[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    kinds_ = list(dict.fromkeys(c.gpu for c in rows))
    grid = [[next(c for c in rows if c.gpu == k and c.num_gpus == n) for n in COUNTS] for k in kinds_]
    values = [[max(c.max_model_len_fit, 1) for c in row] for row in grid]
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(kinds_) + 1.5))
    ax.imshow(values, cmap="viridis", norm=LogNorm(vmin=1, vmax=max(max(r) for r in values)), aspect="auto")
    for i, row in enumerate(grid):
        for j, c in enumerate(row):
            text = "-" if c.fits is None else (f"{c.max_model_len_fit:,}" + ("" if c.fits else " ✗"))
            ax.text(j, i, text, ha="center", va="center", color="white", fontsize=8)
    ax.set_xticks(range(len(COUNTS)), [str(n) for n in COUNTS])
    ax.set_yticks(range(len(kinds_)), kinds_)
    ax.set_xlabel("GPUs")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
