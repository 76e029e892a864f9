"""LoRA, speculative decoding and two models on one GPU: vLLM's KV cache against the blind estimates and today's.

usage: MODELS_DIR=/tmp/m .venv/bin/python benchmarks/users_check.py [RESULTS_DIR] [BLIND_DIR]
  RESULTS_DIR  benchmarks/results/h200-users (results.jsonl from measure_vllm.py; two/ from two_models.sh)
  BLIND_DIR    benchmarks/results/h200-users-blind (measure_vllm.py --blind and `launcher estimate --json`, committed
               before the starts; a start without a file there was a diagnostic one, planned after the others)
Prints a markdown table: vLLM's weights (with adapters or draft) and KV tokens, the blind estimate and today's, errors.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

GiB = 1 << 30
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tokens(text: str) -> int | None:
    m = re.search(r"GPU KV cache size: ([\d,]+) tokens", text)
    return int(m.group(1).replace(",", "")) if m else None


def _weights(text: str) -> float | None:
    m = re.search(r"Model loading took ([\d.]+) GiB", text)
    return float(m.group(1)) if m else None


def today(cases: str) -> dict[str, dict]:
    """Today's plan of every case (measure_vllm.py --blind on the H200 preset, into a scratch folder)."""
    out = tempfile.mkdtemp()
    env = dict(os.environ, PLAN_GPU="H200", MODELS_DIR=os.environ.get("MODELS_DIR", tempfile.mkdtemp()))
    subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu", "measure_vllm.py"), "--blind", out, cases],
                   env=env, check=True, capture_output=True)
    return {f.removesuffix(".json"): json.load(open(os.path.join(out, f)))["estimate_at_start"] for f in os.listdir(out)}


def _budget_estimate(model: str, size: str, budget: str) -> dict:
    d = tempfile.mkdtemp()
    subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu", "make_dummy_model.py"), model, size, d],
                   check=True, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "launcher", "estimate", "--model-path", d, "--gpu", "H200",
                        "--gpu-memory-budget", budget, "--json"], check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(r.stdout)


def rows(results: str, blind: str) -> list[dict]:
    now = today(os.path.join(ROOT, "benchmarks", "gpu", "cases-h200-users.json"))
    out = []
    for line in open(os.path.join(results, "results.jsonl")):
        r = json.loads(line)
        path = os.path.join(blind, r["case"] + ".json")
        b = json.load(open(path))["estimate_at_start"] if os.path.exists(path) else None
        n = now[r["case"]]
        out.append({"case": r["case"], "runner": n.get("runner"),
                    "vllm_tokens": int(str(r["kv_tokens"]).replace(",", "")) if r.get("kv_tokens") else None,
                    "vllm_weights": float(r["weights_gib"]) if r.get("weights_gib") else None,
                    "est_weights": (n["weights_bytes"] + n["lora_bytes"] + n["draft_weights_bytes"]) / GiB,
                    "blind": b["kv_cache_tokens"] if b else None, "now": n["kv_cache_tokens"]})
    for name, blind_name, model, size in (("qwen", "two_two_qwen25_7b", "qwen2.5-instruct", "7"),
                                          ("llama", "two_two_llama31_8b", "llama-3.1-instruct", "8")):
        log = os.path.join(results, "two", f"server-{name}.log")
        text = open(log, errors="replace").read()
        b = json.load(open(os.path.join(blind, blind_name + ".json")))
        budget = "50GiB" if name == "qwen" else "60GiB"
        n = _budget_estimate(model, size, budget)
        out.append({"case": f"two at once: {name}, --gpu-memory-budget {budget}", "runner": b.get("runner"),
                    "vllm_tokens": _tokens(text), "vllm_weights": _weights(text), "est_weights": n["weights_bytes"] / GiB,
                    "blind": b["kv_cache_tokens"], "now": n["kv_cache_tokens"]})
    return out


def main() -> int:
    results = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "benchmarks", "results", "h200-users")
    blind = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "benchmarks", "results", "h200-users-blind")
    print("| start | runner | weights GiB vLLM / estimate | vLLM KV tokens | blind estimate | blind error "
          "| estimate now | error now |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows(results, blind):
        vt = r["vllm_tokens"]
        err = lambda x: f"{(x - vt) / vt * 100:+.2f}%"  # noqa: E731
        blind_cells = f"{r['blind']:,} | {err(r['blind'])}" if r["blind"] else "(not blind) | -"
        print(f"| {r['case']} | {r['runner']} | {r['vllm_weights']:.2f} / {r['est_weights']:.2f} | {vt:,} | "
              f"{blind_cells} | {r['now']:,} | {err(r['now'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
