"""vLLM 0.26.0 on an H100 80GB: vLLM's KV cache and profile against the launcher's blind estimates.

usage: python3 benchmarks/vllm026_check.py [RESULTS_DIR] [BLIND_DIR] > table.md
  RESULTS_DIR  benchmarks/results/h100-vllm026 (results.jsonl from measure_vllm.py via h200_check.sh; logs/)
  BLIND_DIR    benchmarks/results/h100-vllm026-blind (measure_vllm.py --blind with PLAN_GPU=H100-80GB
               PLAN_VLLM=0.26.0, committed before the starts)
"""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GiB = 1 << 30


def today(r: dict) -> dict:
    """Today's estimate of the launch as it was started: the engine arguments and variables the start got
    (launched_args, launched_env: the launcher's graph share, if it kept one), planned for vLLM 0.26.0 on an H100."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks", "gpu"))
    from measure_vllm import config_for

    d = tempfile.mkdtemp()
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump(config_for({k: v for k, v in r.items() if k in ("config", "model", "size")}), fh)
    env = dict(os.environ, **(r.get("launched_env") or {}))
    out = subprocess.run([sys.executable, "-m", "launcher", "estimate", "--model-path", d, "--gpu", "H100-80GB",
                          "--vllm-version", "0.26.0", *r.get("launched_args", []), "--json"],
                         env=env, cwd=ROOT, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    res = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "benchmarks", "results", "h100-vllm026")
    blind = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "benchmarks", "results", "h100-vllm026-blind")
    print("| case | vLLM: ready | vLLM KV tokens | blind estimate | error | today's estimate | error | runner (today) | "
          "vLLM torch peak + non-torch GiB | blind / today's activation GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for line in open(os.path.join(res, "results.jsonl")):
        r = json.loads(line)
        b = json.load(open(os.path.join(blind, r["case"] + ".json")))["estimate_at_start"]
        v = int(str(r.get("kv_tokens") or "0").replace(",", ""))
        e = b["kv_cache_tokens"]
        prof = r.get("profile") or ["-", "0", "0", "-"]
        ready = "yes" if r.get("ready") else f"no: {(r.get('error') or '')[:90]}"
        verdict = "fits" if b["fits"] else "does not fit"
        t = today(r)
        tv = t["kv_cache_tokens"]
        print(f"| {r['case']} | {ready} | {v:,} | {e:,} ({verdict}) | {(e - v) / v * 100:+.2f}% | "
              f"{tv:,} ({'fits' if t['fits'] else 'does not fit'}) | {(tv - v) / v * 100:+.2f}% | {t['runner']} | "
              f"{float(prof[1]) + float(prof[2]):.2f} | {b['activation_bytes'] / GiB:.2f} / "
              f"{t['activation_bytes'] / GiB:.2f} |")


if __name__ == "__main__":
    main()
