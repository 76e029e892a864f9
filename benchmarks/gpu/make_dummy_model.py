"""Write a model folder for dummy-weight GPU runs: config.json from the catalog and a word-level
tokenizer that covers the whole vocabulary (so any sampled id decodes to text), with a chat template.

usage: python3 benchmarks/gpu/make_dummy_model.py MODEL SIZE OUT_DIR
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from launcher.models import catalog  # noqa: E402

name, size, out = sys.argv[1:4]
os.makedirs(out, exist_ok=True)
cfg = catalog.lookup(name, size).config
cfg.update(bos_token_id=1, eos_token_id=2)
json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=1)
vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
for i in range(3, cfg["vocab_size"]):
    vocab[f"w{i}"] = i
tok = {"version": "1.0", "truncation": None, "padding": None,
       "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                         "normalized": False, "special": True} for t, i in (("<unk>", 0), ("<s>", 1), ("</s>", 2))],
       "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None,
       "decoder": None, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}}
json.dump(tok, open(os.path.join(out, "tokenizer.json"), "w"))
json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
           "model_max_length": 1000000,
           "chat_template": "{% for m in messages %}{{ m['role'] + ' ' + m['content'] + ' ' }}{% endfor %}"
                            "{% if add_generation_prompt %}{{ 'assistant ' }}{% endif %}"},
          open(os.path.join(out, "tokenizer_config.json"), "w"))
print("wrote", out)
