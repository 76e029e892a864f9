"""Generate examples/tiny-llama/: a 2-layer Llama with random weights and a locally trained
byte-level BPE tokenizer. No model hub involved. Deterministic (fixed seeds).

usage: .venv/bin/python examples/make_tiny_llama.py [OUT_DIR]
Sizes follow what the CPU build of vLLM accepts: head_dim 64 (16 is rejected).
"""
import json
import os
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny-llama")
TEXT = """The launcher starts a vLLM server, waits until it is healthy, and keeps it running.
It estimates GPU memory before loading: weights, activations, CUDA graphs and the KV cache.
Hello world. How are you? I am fine, thank you. What is the capital of France? Paris.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000. Tokens, blocks, pages, layers, heads, experts.
"""


def main() -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM

    os.makedirs(OUT, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<s>", "</s>", "<pad>"]
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([TEXT] * 20, trainer=trainer)
    tok.save(os.path.join(OUT, "tokenizer.json"))
    vocab = tok.get_vocab_size()
    template = ("{% for m in messages %}{{ '<s>' + m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<s>assistant: ' }}{% endif %}")
    json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
               "model_max_length": 2048, "chat_template": template, "clean_up_tokenization_spaces": False},
              open(os.path.join(OUT, "tokenizer_config.json"), "w"), indent=1)
    json.dump({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
              open(os.path.join(OUT, "special_tokens_map.json"), "w"), indent=1)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=64, max_position_embeddings=2048, tie_word_embeddings=False,
                      bos_token_id=tok.token_to_id("<s>"), eos_token_id=tok.token_to_id("</s>"),
                      pad_token_id=tok.token_to_id("<pad>"), torch_dtype="float32")
    assert vocab <= 512, vocab
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(OUT, safe_serialization=True)
    json.dump({"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id, "max_new_tokens": 32},
              open(os.path.join(OUT, "generation_config.json"), "w"), indent=1)
    print(f"wrote {OUT} (vocab {vocab})")


if __name__ == "__main__":
    main()
