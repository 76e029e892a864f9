"""Write a model folder for dummy-weight GPU runs: config.json from the catalog and a word-level
tokenizer that covers the whole vocabulary (so any sampled id decodes to text), with a chat template.
For a LLaVA-style multimodal config (`--llava`) it also writes the image processor files and gives
the image placeholder its id, so that vLLM can build its dummy images for the encoder's profile run.

usage: python3 benchmarks/gpu/make_dummy_model.py MODEL SIZE OUT_DIR
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_tokenizer(out: str, vocab_size: int, specials: dict | None = None) -> None:
    """tokenizer.json + tokenizer_config.json: w3 ... w{vocab-1}, with `specials` (token -> id) as added tokens."""
    specials = {"<unk>": 0, "<s>": 1, "</s>": 2, **(specials or {})}
    taken = set(specials.values())
    vocab = dict(specials)
    for i in range(3, vocab_size):
        if i not in taken:
            vocab[f"w{i}"] = i
    tok = {"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                             "normalized": False, "special": True} for t, i in specials.items()],
           "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None,
           "decoder": None, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}}
    json.dump(tok, open(os.path.join(out, "tokenizer.json"), "w"))
    json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
               "model_max_length": 1000000,
               "chat_template": "{% for m in messages %}{{ m['role'] + ' ' + m['content'] + ' ' }}{% endfor %}"
                                "{% if add_generation_prompt %}{{ 'assistant ' }}{% endif %}"},
              open(os.path.join(out, "tokenizer_config.json"), "w"))


def write_llava_processor(out: str, cfg: dict) -> None:
    """CLIP image processor + LLaVA processor files for a LLaVA config (image size from vision_config)."""
    size = cfg["vision_config"]["image_size"]
    json.dump({"image_processor_type": "CLIPImageProcessor", "processor_class": "LlavaProcessor",
               "crop_size": {"height": size, "width": size}, "size": {"shortest_edge": size},
               "do_center_crop": True, "do_normalize": True, "do_resize": True, "do_rescale": True,
               "do_convert_rgb": True, "rescale_factor": 0.00392156862745098, "resample": 3,
               "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]},
              open(os.path.join(out, "preprocessor_config.json"), "w"))
    json.dump({"processor_class": "LlavaProcessor", "image_token": "<image>",
               "patch_size": cfg["vision_config"]["patch_size"], "num_additional_image_tokens": 1,
               "vision_feature_select_strategy": cfg.get("vision_feature_select_strategy", "default")},
              open(os.path.join(out, "processor_config.json"), "w"))


def write_model(out: str, cfg: dict, tokenizer: str | None = None) -> None:
    os.makedirs(out, exist_ok=True)
    cfg = dict(cfg)
    cfg.setdefault("bos_token_id", 1)
    cfg.setdefault("eos_token_id", 2)
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=1)
    text = cfg.get("text_config") or cfg
    if tokenizer == "llava":
        write_tokenizer(out, text["vocab_size"], {"<image>": cfg["image_token_index"], "<pad>": text.get("pad_token_id", 32001)})
        write_llava_processor(out, cfg)
    else:
        write_tokenizer(out, text["vocab_size"])


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    from launcher.models import catalog  # noqa: E402
    name, size, out = sys.argv[1:4]
    write_model(out, catalog.lookup(name, size).config)
    print("wrote", out)
