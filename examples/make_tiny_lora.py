"""Generate examples/tiny-llama-lora/: a rank-8 LoRA adapter (PEFT layout) for examples/tiny-llama on q_proj and
v_proj, random and deterministic (fixed seed). No model hub involved.

usage: .venv/bin/python examples/make_tiny_lora.py [OUT_DIR]
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "tiny-llama-lora")
RANK, ALPHA = 8, 16
TARGETS = {"q_proj": ("num_attention_heads", "head_dim"), "v_proj": ("num_key_value_heads", "head_dim")}


def main() -> None:
    import torch
    from safetensors.torch import save_file

    cfg = json.load(open(os.path.join(HERE, "tiny-llama", "config.json")))
    torch.manual_seed(0)
    tensors = {}
    for layer in range(cfg["num_hidden_layers"]):
        for name, (heads, dim) in TARGETS.items():
            out = cfg[heads] * cfg[dim]
            key = f"base_model.model.model.layers.{layer}.self_attn.{name}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(RANK, cfg["hidden_size"]) * 0.02
            tensors[f"{key}.lora_B.weight"] = torch.randn(out, RANK) * 0.02
    os.makedirs(OUT, exist_ok=True)
    save_file(tensors, os.path.join(OUT, "adapter_model.safetensors"))
    adapter = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": RANK, "lora_alpha": ALPHA, "lora_dropout": 0.0,
               "bias": "none", "target_modules": sorted(TARGETS), "base_model_name_or_path": "examples/tiny-llama",
               "fan_in_fan_out": False, "inference_mode": True}
    with open(os.path.join(OUT, "adapter_config.json"), "w") as fh:
        json.dump(adapter, fh, indent=2)
    print(f"wrote {OUT}: rank {RANK} on {', '.join(sorted(TARGETS))}, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
