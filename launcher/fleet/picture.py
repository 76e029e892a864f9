"""The plan as a picture: GPUs as columns, the models awake at start as stacked blocks, those that wait hatched above
their home GPU (matplotlib, imported only here)."""
from __future__ import annotations


def draw(d: dict, path: str) -> None:
    from ..errors import BadInput

    try:
        import matplotlib
    except ImportError:
        raise BadInput("--plot needs matplotlib.", hint="pip install 'launcher[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gib = 1 << 30
    cols = {(g["node"], g["index"]): i for i, g in enumerate(d["gpus"])}
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(cols) + 2), 5))
    base = [0.0] * len(cols)
    for m in d["models"]:
        spots = [(st["node"], i) for st in m.get("stages") or [] for i in st["gpus"]] or [(m["node"], i) for i in m["gpus"]]
        for spot in spots:
            c = cols[spot]
            h = m["bytes_per_gpu"] / gib
            ax.bar(c, h, bottom=base[c], edgecolor="black", hatch=None if m["awake"] else "//",
                   alpha=1.0 if m["awake"] else 0.35)
            ax.text(c, base[c] + h / 2, m["name"], ha="center", va="center", fontsize=7)
            base[c] += h
    for g, c in cols.items():
        total = next(x["total_bytes"] for x in d["gpus"] if (x["node"], x["index"]) == g) / gib
        ax.hlines(total, c - 0.45, c + 0.45, colors="red", linestyles="dashed")
    ax.set_xticks(range(len(cols)), [f"GPU {i}" for _, i in cols])
    ax.set_ylabel("GiB (dashed: the GPU's memory; hatched: waits, not awake at start)")
    ax.set_title(f"{d['models_file']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
