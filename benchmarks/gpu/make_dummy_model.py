"""Write a model folder for dummy-weight GPU runs: config.json from the catalog and a word-level
tokenizer that covers the whole vocabulary (so any sampled id decodes to text), with a chat template.
For a multimodal config (a case's "tokenizer": llava, qwen2_vl or gemma3) it also writes the image
processor files and gives the image placeholders their ids, so that vLLM can build its dummy images for
the encoder's profile run.

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


def write_qwen2_vl_processor(out: str, cfg: dict) -> None:
    """Qwen2-VL image/video processor files as Qwen2-VL-7B-Instruct publishes them (pixel limits included:
    they decide the largest image, hence the encoder's profile run)."""
    vc = cfg["vision_config"]
    common = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": vc.get("patch_size", 14),
              "temporal_patch_size": vc.get("temporal_patch_size", 2), "merge_size": vc.get("spatial_merge_size", 2),
              "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
              "processor_class": "Qwen2VLProcessor"}
    json.dump({**common, "image_processor_type": "Qwen2VLImageProcessor"}, open(os.path.join(out, "preprocessor_config.json"), "w"))
    json.dump({**common, "video_processor_type": "Qwen2VLVideoProcessor"}, open(os.path.join(out, "video_preprocessor_config.json"), "w"))


def write_gemma3_processor(out: str, cfg: dict) -> None:
    """Gemma 3 image processor and processor files as google/gemma-3-4b-it publishes them (images resized to
    vision_config.image_size, pan-and-scan off, mm_tokens_per_image tokens each), and the tokenizer's names
    for the image tokens, which Gemma3Processor reads from the tokenizer."""
    size = cfg["vision_config"].get("image_size", 896)
    seq = cfg.get("mm_tokens_per_image", 256)
    json.dump({"image_processor_type": "Gemma3ImageProcessor", "processor_class": "Gemma3Processor",
               "do_normalize": True, "do_rescale": True, "do_resize": True, "do_pan_and_scan": None,
               "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "image_seq_length": seq, "resample": 2,
               "rescale_factor": 0.00392156862745098, "size": {"height": size, "width": size}},
              open(os.path.join(out, "preprocessor_config.json"), "w"))
    json.dump({"image_seq_length": seq, "processor_class": "Gemma3Processor"}, open(os.path.join(out, "processor_config.json"), "w"))
    tc_path = os.path.join(out, "tokenizer_config.json")
    tc = json.load(open(tc_path))
    tc.update(processor_class="Gemma3Processor", boi_token="<start_of_image>", eoi_token="<end_of_image>",
              image_token="<image_soft_token>",
              extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                    "image_token": "<image_soft_token>"})
    json.dump(tc, open(tc_path, "w"))


def gemma3_specials(cfg: dict) -> dict:
    """The image tokens at the config's ids, and the newline tokens vLLM's Gemma 3 processor looks up."""
    return {"<start_of_image>": cfg.get("boi_token_index", 255999), "<end_of_image>": cfg.get("eoi_token_index", 256000),
            "<image_soft_token>": cfg.get("image_token_index", 262144),
            "\n": 107, "\n\n": 108, "\n\n\n": 109, "\n\n\n\n": 110}


QWEN2_VL_SPECIALS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|vision_start|>": 151652,
                     "<|vision_end|>": 151653, "<|vision_pad|>": 151654, "<|image_pad|>": 151655, "<|video_pad|>": 151656}


def write_gptq_headers(out: str, cfg: dict) -> None:
    """model.safetensors holding only its header: the tensors of a 4-bit GPTQ Llama/Qwen2-style checkpoint
    (qweight I32 [K/8, N], qzeros I32 [K/g, N/8], scales F16 [K/g, N], g_idx I32 [K]; norms, embeddings
    and lm_head in F16), as AutoGPTQ writes them. vLLM reads only this header (to learn which layers are
    quantized) when it loads dummy weights; the launcher reads it to count the weights."""
    import struct
    q = cfg["quantization_config"]
    g, bits = q["group_size"], q["bits"]
    pack = 32 // bits
    h, inter, vocab, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hd = cfg.get("head_dim") or h // heads
    tensors: dict[str, tuple[str, list[int]]] = {"model.embed_tokens.weight": ("F16", [vocab, h]),
                                                 "model.norm.weight": ("F16", [h])}
    if not cfg.get("tie_word_embeddings"):
        tensors["lm_head.weight"] = ("F16", [vocab, h])
    linears = {"self_attn.q_proj": (h, heads * hd), "self_attn.k_proj": (h, kv * hd), "self_attn.v_proj": (h, kv * hd),
               "self_attn.o_proj": (heads * hd, h), "mlp.gate_proj": (h, inter), "mlp.up_proj": (h, inter),
               "mlp.down_proj": (inter, h)}
    for i in range(layers):
        pre = f"model.layers.{i}."
        tensors[pre + "input_layernorm.weight"] = ("F16", [h])
        tensors[pre + "post_attention_layernorm.weight"] = ("F16", [h])
        for name, (k, n) in linears.items():
            tensors[pre + name + ".qweight"] = ("I32", [k // pack, n])
            tensors[pre + name + ".qzeros"] = ("I32", [k // g, n // pack])
            tensors[pre + name + ".scales"] = ("F16", [k // g, n])
            tensors[pre + name + ".g_idx"] = ("I32", [k])
            if cfg.get("model_type") == "qwen2" and name.startswith("self_attn.") and name != "self_attn.o_proj":
                tensors[pre + name + ".bias"] = ("F16", [n])
    header, off = {"__metadata__": {"format": "pt"}}, 0
    size = {"F16": 2, "I32": 4}
    for name, (dt, shape) in tensors.items():
        n = size[dt]
        for d in shape:
            n *= d
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)


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
    elif tokenizer == "gemma3":
        write_tokenizer(out, text.get("vocab_size", 262208), gemma3_specials(cfg))
        write_gemma3_processor(out, cfg)
    elif tokenizer == "qwen2_vl":
        write_tokenizer(out, text["vocab_size"], QWEN2_VL_SPECIALS)
        write_qwen2_vl_processor(out, cfg)
    else:
        write_tokenizer(out, text["vocab_size"])


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    from launcher.models import catalog  # noqa: E402
    name, size, out = sys.argv[1:4]
    write_model(out, catalog.lookup(name, size).config)
    print("wrote", out)
