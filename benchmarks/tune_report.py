"""Markdown tables (and the trade-off plot) from `launcher tune` results and the check that follows it.

usage: .venv/bin/python benchmarks/tune_report.py RESULTS.json... [--check DIR] [--plot PNG] [--markdown MD]
  RESULTS.json  results.json files written by `launcher tune` (one per tune run)
  --check DIR   the files of `benchmarks/gpu/tune_gpu.sh check` (bench-NAME-WORKLOAD.json, vllm-bench-*.json)
"""
import argparse
import glob
import json
import os
import sys
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from launcher.tune import Candidate, TuneResult, workloads_from_key  # noqa: E402
from launcher.workloads import PRESETS  # noqa: E402


def load(path: str) -> TuneResult:
    d = json.load(open(path))
    r = d["result"]
    tuned = workloads_from_key(d.get("key", {}).get("workloads", []))  # as tuned, overrides included
    wls = [replace(PRESETS[w["name"]], workload=tuned.get(w["name"], PRESETS[w["name"]].workload),
                   levels=tuple(w["levels"]), slo_ttft_p99_s=w["slo_ttft_p99_s"]) for w in r["workloads"]]
    res = TuneResult(wls, [Candidate.from_dict(c) for c in r["candidates"]], min_gain=r.get("min_gain", 0.05))
    if r.get("defaults_again"):
        res.defaults_again = Candidate.from_dict(r["defaults_again"])
    return res


def ms(x):
    return "-" if x is None else f"{x * 1000:.0f}"


def tables(res: TuneResult) -> list[str]:
    out = []
    for wl in res.workloads:
        base = res.defaults_score(wl)
        out += [f"**{wl.name}** ({wl.describe()})", "",
                "| candidate | KV tokens: estimate / vLLM | start s | load levels: output tok/s (p99 TTFT ms) | score | vs defaults |",
                "|---|---|---|---|---|---|"]
        rows = res.ranked(wl) + ([res.defaults_again] if res.defaults_again else [])
        for c in rows:
            pts = " · ".join(f"{p.concurrency}: {p.output_throughput:.0f} ({ms(p.ttft_p99_s)})" + ("" if p.meets else " ✗")
                             for p in c.points.get(wl.name, []))
            s = c.score(wl)
            kv = " / ".join(f"{x:,}" if x else "-" for x in (c.predicted_kv_tokens, c.vllm_kv_tokens))
            out.append(f"| {c.label} | {kv} | {c.start_s or '-'} | {pts or c.pruned or c.skipped or c.error} | "
                       f"{'-' if s is None else f'{s:.0f}'} | {'-' if s is None or not base else f'{s / base - 1:+.1%}'} |")
        w = res.winner(wl)
        out += ["", f"Winner: **{w.label if w else 'none'}**" + (f" ({res.improvement(wl):+.1%})" if w and w.engine_args else
                                                                  " (kept: no candidate beat it by more than "
                                                                  f"{res.min_gain:.0%})"), ""]
    return out


def check_table(d: str) -> list[str]:
    out = ["| server | workload @ concurrency | tool | output tok/s | p99 TTFT ms | mean TPOT ms | median ITL ms |",
           "|---|---|---|---|---|---|---|"]
    for f in sorted(glob.glob(os.path.join(d, "bench-*.json"))):
        name, w = os.path.basename(f)[6:-5].rsplit("-", 1)
        b = json.load(open(f))
        v = os.path.join(d, f"vllm-bench-{name}-{w}.json")
        if os.path.exists(v):
            x = json.load(open(v))
            out.append(f"| {name} | {w} @ {x['max_concurrency']} | vllm bench serve | {x['output_throughput']:.1f} | "
                       f"{x['p99_ttft_ms']:.0f} | {x['mean_tpot_ms']:.2f} | {x['median_itl_ms']:.2f} |")
        out.append(f"| {name} | {w} @ {b['workload']['concurrency']} | launcher bench | {b['output_throughput']:.1f} | "
                   f"{ms(b['ttft_s']['p99'])} | {b['tpot_s']['mean'] * 1000:.2f} | {b['itl_s']['p50'] * 1000:.2f} |")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="+")
    ap.add_argument("--check")
    ap.add_argument("--plot")
    ap.add_argument("--markdown")
    a = ap.parse_args()
    lines = []
    runs = [load(p) for p in a.results]
    for res in runs:
        lines += tables(res)
    if a.check:
        lines += check_table(a.check) + [""]
    text = "\n".join(lines)
    print(text)
    if a.markdown:
        open(a.markdown, "w").write(text)
    if a.plot:
        from launcher.tune import plot
        merged = TuneResult([w for r in runs for w in r.workloads], [])
        for r in runs:
            for c in r.candidates:
                same = next((x for x in merged.candidates if x.engine_args == c.engine_args), None)
                if same is None:
                    merged.candidates.append(Candidate.from_dict(c.to_dict()))
                else:
                    same.points.update(c.points)
        plot(merged, a.plot)


if __name__ == "__main__":
    main()
