"""launcher/models/transformers_defaults.json: the flags transformers fills in when a config.json leaves them out,
per model_type, from each config class at its defaults (the estimate path never imports transformers).

Flags, and the few sizes that are switches of the layout (SWITCH_SIZES: DeepSeek's q_lora_rank, whose default
1536 gives the query its own low-rank projection and whose explicit null gives none); never other sizes: a size's
default is derived from other defaults (head_dim from hidden_size) and would be wrong beside a config's own sizes.

usage: .venv/bin/python scripts/gen_transformers_defaults.py
"""
import json
from pathlib import Path

import transformers
from transformers import CONFIG_MAPPING

FLAGS = ("tie_word_embeddings", "attention_bias", "mlp_bias", "multi_query", "new_decoder_architecture",
         "parallel_attn", "bias", "use_sliding_window", "use_qk_norm")
# Sizes that switch a part of the layout on (a published config's null switches it off: kept as null)
SWITCH_SIZES = ("q_lora_rank",)


def main() -> None:
    out = {"_transformers_version": transformers.__version__, "_switch_sizes": list(SWITCH_SIZES)}
    for mtype in sorted(CONFIG_MAPPING.keys()):
        try:
            cfg = CONFIG_MAPPING[mtype]()
        except Exception:  # noqa: BLE001 - a class that needs arguments has no defaults to copy
            continue
        flags = {k: getattr(cfg, k) for k in FLAGS if isinstance(getattr(cfg, k, None), bool)}
        flags |= {k: getattr(cfg, k) for k in SWITCH_SIZES if isinstance(getattr(cfg, k, None), int)}
        if flags:
            out[mtype] = flags
    path = Path(__file__).resolve().parents[1] / "launcher" / "models" / "transformers_defaults.json"
    path.write_text(json.dumps(out, indent=0, sort_keys=True) + "\n")
    print(f"wrote {path} ({len(out) - 1} model types)")


if __name__ == "__main__":
    main()
