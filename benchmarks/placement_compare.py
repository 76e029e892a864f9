"""The worked 8-GPU example of docs/placement.md: examples/fleet.yaml on 8 x H100-80GB as `launcher plan` places it,
beside what each model's weights and GPUStack's documented rule of thumb (1.2 x weights + 2 GiB, per GPU of a
tensor-parallel model) say it needs, and how many GPUs Ray Serve LLM's default (one whole GPU per tensor-parallel rank,
vLLM's own default utilization) takes for the same file. Nothing is loaded; no GPU is needed.

usage: .venv/bin/python benchmarks/placement_compare.py [--markdown FILE]
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
GiB = 1 << 30
GPU, TOTAL_GIB = "H100-80GB", 79.65  # NVML's total of an H100 80GB HBM3 (the preset)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--markdown")
    ap.add_argument("--models", default=os.path.join(ROOT, "examples", "fleet.yaml"))
    a = ap.parse_args()
    from launcher.engines import vllm as vllm_engine
    from launcher.fleet.plan import plan_fleet
    from launcher.models_file import load_models
    from launcher.planning import plan, resolve_model

    p = plan_fleet(a.models, GPU, 8, None, None, None, None, None)
    by_name = {m.name: m for m in p.placements}
    rows, ray_gpus = [], 0
    for e in load_models(a.models, vllm_engine.arg_spec(allow_dump=False)):
        s, args = e.spec, dict(e.spec.engine_args)
        tp = int(args.get("tensor-parallel-size") or 1)
        ref = resolve_model(s.model_path, s.model_name, s.size_in_billions, s.model_format, s.quantization)
        est = plan(ref, args, gpu_preset=GPU, num_gpus=tp, vllm_version=p.vllm_version).estimate
        weights = est.weights_bytes / GiB  # per GPU
        gpustack = 1.2 * weights + 2
        ours = by_name[e.name]
        ray_gpus += tp
        rows.append((e.name, tp, args.get("max-model-len"), weights, gpustack, ours.bytes_per_gpu / GiB,
                     ",".join(map(str, ours.gpus)), "awake" if ours.awake else "waits"))
    lines = [f"examples/fleet.yaml on 8 x {GPU}, vLLM {p.vllm_version} (the default plan), per GPU of each model:", "",
             "| model | TP | max_model_len | weights, GiB | GPUStack's rule (1.2 x weights + 2), GiB | `launcher plan`, GiB | "
             "its GPU(s) | at start |", "|---|---|---|---|---|---|---|---|"]
    for name, tp, length, w, g, o, gpus, awake in rows:
        lines.append(f"| {name} | {tp} | {length} | {w:.2f} | {g:.2f} | {o:.2f} | {gpus} | {awake} |")
    used = sorted({g for m in p.placements for g in m.gpus})
    lines += ["", f"`launcher plan`: {len(used)} GPUs hold every model awake at once ({', '.join(map(str, used))}); "
              f"Ray Serve LLM's default (one whole GPU per tensor-parallel rank): {ray_gpus} GPUs. "
              f"GPUStack's rule is below what vLLM takes at these lengths for "
              f"{sum(1 for r in rows if r[4] < r[5])} of {len(rows)} models."]
    text = "\n".join(lines)
    print(text)
    if a.markdown:
        with open(a.markdown, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
