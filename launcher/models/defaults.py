"""What transformers fills in when a config.json leaves a key out.

Hub configs of some models are sparse: google/gemma-3-4b-it's `text_config` gives only hidden_size,
intermediate_size, num_hidden_layers, rope_scaling and sliding_window, and transformers (which vLLM uses
to read it) takes the rest from the config class's defaults. Reading without transformers (the estimate
path imports none of it), the defaults of those classes are copied here, per model_type, from
transformers' configuration_*.py (Gemma3TextConfig, Gemma3Config, SiglipVisionConfig,
CLIPVisionConfig). A key the file gives always wins. Below those, for every model_type transformers knows,
the flags its config class defaults to (tie_word_embeddings, biases, multi_query, ...) and the sizes that switch a
part of the layout on (q_lora_rank), generated into
transformers_defaults.json by scripts/gen_transformers_defaults.py.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

DEFAULTS: dict[str, dict] = {
    "gemma3_text": {
        "vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "max_position_embeddings": 131072,
        "sliding_window": 4096, "sliding_window_pattern": 6, "query_pre_attn_scalar": 256,
        "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "hidden_activation": "gelu_pytorch_tanh",
        "tie_word_embeddings": True,
    },
    # FalconConfig's max_position_embeddings (falcon-7b's config.json gives none; vLLM's rotary cache is that long)
    "falcon": {"max_position_embeddings": 2048},
    "gemma3": {"mm_tokens_per_image": 256, "image_token_index": 262144, "boi_token_index": 255999,
               "eoi_token_index": 256000},
    "siglip_vision_model": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                            "num_attention_heads": 12, "image_size": 224, "patch_size": 16,
                            "hidden_act": "gelu_pytorch_tanh"},
    "clip_vision_model": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                          "num_attention_heads": 12, "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu"},
}


@lru_cache(maxsize=1)
def _flags() -> dict:
    """Per model_type, the flags transformers' config class defaults to (scripts/gen_transformers_defaults.py)."""
    return json.loads(Path(__file__).with_name("transformers_defaults.json").read_text())


def with_defaults(cfg: dict) -> dict:
    """cfg with its model_type's defaults under it, and its layer_types as transformers derives them."""
    mtype = str(cfg.get("model_type", ""))
    base = {**_flags().get(mtype, {}), **DEFAULTS.get(mtype, {})}
    if not base:
        return cfg
    # a null is "not given" except for a switch size, where it switches the part off (DeepSeek-V2-Lite's
    # q_lora_rank: null, no query compression; left out, transformers' 1536 applies)
    switches = set(_flags().get("_switch_sizes", ()))
    out = {**base, **{k: v for k, v in cfg.items() if v is not None or k in switches}}
    if out.get("model_type") == "gemma3_text" and not out.get("layer_types"):
        # Gemma3TextConfig: every sliding_window_pattern-th layer attends to the full sequence
        n, pattern = int(out["num_hidden_layers"]), int(out.get("sliding_window_pattern") or 6)
        out["layer_types"] = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n)]
    return out
