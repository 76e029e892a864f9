"""Blind estimates (committed before vLLM started) against what vLLM then reported, and the estimate now.

usage: .venv/bin/python benchmarks/blind_check.py BLIND_DIR [RESULTS_JSONL]
  BLIND_DIR      benchmarks/results/h200-check-blind (one `launcher estimate --json` file per case, or
                 measure_vllm.py's launcher_graph_args record: benchmarks/results/h200-graphs-blind)
  RESULTS_JSONL  the measured starts (default: every benchmarks/results/*.jsonl)
Prints a markdown table: vLLM's KV tokens, the blind estimate and its error, today's estimate and its error.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launcher.estimator import estimate  # noqa: E402
from results_io import num, rows as load_rows  # noqa: E402


def main() -> int:
    blind_dir = sys.argv[1]
    measured = {r["case"]: r for r in load_rows(os.path.basename(sys.argv[2]) if len(sys.argv) > 2 else "*.jsonl")}
    print("| case | flags | vLLM KV tokens | blind estimate | blind error | estimate now | error now | confidence now |")
    print("|---|---|---|---|---|---|---|---|")
    for f in sorted(os.listdir(blind_dir)):
        case = f.removesuffix(".json")
        r = measured.get(case)
        if r is None or "kv_tokens" not in r:
            continue
        b = json.load(open(os.path.join(blind_dir, f)))
        b = b.get("estimate_at_start", b)  # measure_vllm.py's record of a start made as the launcher makes it
        vt = num(r["kv_tokens"])
        now = estimate(r["arch"], r["settings"], r["budget"], vllm_version=(0, 24, 0))
        err = lambda x: f"{(x - vt) / vt * 100:+.2f}%"  # noqa: E731
        print(f"| {case} | {' '.join(r.get('args', [])) or '(defaults)'} | {int(vt):,} | {b['kv_cache_tokens']:,} "
              f"| {err(b['kv_cache_tokens'])} | {now.kv_cache_tokens:,} | {err(now.kv_cache_tokens)} | {now.confidence} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
