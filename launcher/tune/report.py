"""What a tune hands over: a launch file per workload with the winner's settings, and the trade-off plot."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..workloads import Named
from .results import Candidate, TuneResult

if TYPE_CHECKING:
    from ..spec import LaunchSpec


def launch_file(base_spec: LaunchSpec, winner: Candidate, wl: Named, res: TuneResult) -> str:
    """A launch file (YAML) for `launcher launch --config` with the winner's settings."""
    import yaml

    d = {k: v for k, v in base_spec.to_dict().items()
         if k in ("model", "revision", "model_path", "model_name", "size_in_billions", "model_format", "quantization",
                  "env", "host", "port")
         and v not in (None, {}, "none", "pytorch", "127.0.0.1")}
    d["name"] = f"{base_spec.name.removeprefix('tune-')}-{wl.name}"[:64]
    d["engine_args"] = {**base_spec.engine_args, **winner.engine_args}
    imp = res.improvement(wl)
    head = (f"# written by `launcher tune` for the {wl.name} workload: {winner.label}"
            + (f" ({imp:+.1%} output tokens/s vs vLLM's defaults" if imp is not None else "")
            + (f" at p99 TTFT <= {wl.slo_ttft_p99_s:g} s)" if imp is not None and wl.slo_ttft_p99_s else
               ")" if imp is not None else ""))
    if str(winner.engine_args.get("kv-cache-dtype", "")).startswith("fp8"):
        head += ("\n# kv-cache-dtype fp8 stores keys and values in 8 bits (scale 1.0 unless the checkpoint has KV"
                 " scales):\n# outputs differ slightly from a 16-bit cache; check the model's accuracy before serving.")
    return head + "\n" + yaml.safe_dump(d, sort_keys=False)


def plot(res: TuneResult, path: str) -> None:
    """p99 TTFT against output throughput per candidate and workload (one panel per workload)."""
    from ..bench import _pyplot

    plt = _pyplot()
    n = len(res.workloads)
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4.2), squeeze=False)
    for ax, wl in zip(axes[0], res.workloads):
        for c in res.candidates:
            pts = c.points.get(wl.name) or []
            if pts:
                ax.plot([p.output_throughput for p in pts], [(p.ttft_p99_s or 0) * 1000 for p in pts], marker="o",
                        label=c.label)
                for p in pts:
                    ax.annotate(str(p.concurrency), (p.output_throughput, (p.ttft_p99_s or 0) * 1000), fontsize=7)
        if wl.slo_ttft_p99_s:
            ax.axhline(wl.slo_ttft_p99_s * 1000, color="grey", linestyle="--", label="target")
        ax.set_xlabel("output tokens/s")
        ax.set_ylabel("p99 TTFT ms")
        ax.set_title(f"{wl.name} (points labelled by concurrency)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
