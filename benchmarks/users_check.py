"""LoRA, speculative decoding and two models on one GPU: vLLM's KV cache against the blind estimates.

usage: .venv/bin/python benchmarks/users_check.py [RESULTS_DIR] [BLIND_DIR]
  RESULTS_DIR  benchmarks/results/h200-users (results.jsonl from measure_vllm.py; two/ from two_models.sh)
  BLIND_DIR    benchmarks/results/h200-users-blind (measure_vllm.py --blind and `launcher estimate --json`)
Prints a markdown table: vLLM's weights (with adapters or draft) and KV tokens, the blind estimate, the error.
"""
from __future__ import annotations

import json
import os
import re
import sys

GiB = 1 << 30


def _tokens(text: str) -> int | None:
    m = re.search(r"GPU KV cache size: ([\d,]+) tokens", text)
    return int(m.group(1).replace(",", "")) if m else None


def _weights(text: str) -> float | None:
    m = re.search(r"Model loading took ([\d.]+) GiB", text)
    return float(m.group(1)) if m else None


def rows(results: str, blind: str) -> list[dict]:
    out = []
    path = os.path.join(results, "results.jsonl")
    for line in open(path) if os.path.exists(path) else []:
        r = json.loads(line)
        b = json.load(open(os.path.join(blind, r["case"] + ".json")))["estimate_at_start"]
        out.append({"case": r["case"], "flags": " ".join(r.get("args", [])), "runner": b.get("runner"),
                    "vllm_tokens": int(str(r["kv_tokens"]).replace(",", "")) if r.get("kv_tokens") else None,
                    "vllm_weights": float(r["weights_gib"]) if r.get("weights_gib") else None,
                    "est_weights": (b["weights_bytes"] + b["lora_bytes"] + b["draft_weights_bytes"]) / GiB,
                    "est_tokens": b["kv_cache_tokens"], "error": r.get("error")})
    for name, blind_name in (("qwen", "two_two_qwen25_7b"), ("llama", "two_two_llama31_8b")):
        log = os.path.join(results, "two", f"server-{name}.log")
        if not os.path.exists(log):
            continue
        text = open(log, errors="replace").read()
        b = json.load(open(os.path.join(blind, blind_name + ".json")))
        out.append({"case": f"two models: {name}", "flags": f"--gpu-memory-budget ({b['gpu_memory_utilization']})",
                    "runner": b.get("runner"), "vllm_tokens": _tokens(text), "vllm_weights": _weights(text),
                    "est_weights": b["weights_bytes"] / GiB, "est_tokens": b["kv_cache_tokens"], "error": None})
    return out


def main() -> int:
    results = sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/h200-users"
    blind = sys.argv[2] if len(sys.argv) > 2 else "benchmarks/results/h200-users-blind"
    print("| start | runner | vLLM weights GiB / blind | vLLM KV tokens | blind estimate | error |")
    print("|---|---|---|---|---|---|")
    for r in rows(results, blind):
        vt, et = r["vllm_tokens"], r["est_tokens"]
        err = f"{(et - vt) / vt * 100:+.2f}%" if vt else f"no KV cache ({(r['error'] or '')[:80]})"
        w = f"{r['vllm_weights']:.2f} / {r['est_weights']:.2f}" if r["vllm_weights"] else f"- / {r['est_weights']:.2f}"
        print(f"| {r['case']} | {r['runner']} | {w} | {vt or '-':,} | {et:,} | {err} |" if vt else
              f"| {r['case']} | {r['runner']} | {w} | - | {et:,} | {err} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
