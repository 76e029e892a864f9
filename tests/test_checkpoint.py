"""Weight bytes from safetensors headers: what vLLM holds, read from the headers only."""
import json
import struct
from dataclasses import replace

from launcher.estimator import weights
from launcher.models import checkpoint
from launcher.models.config import from_config
from launcher.planning import resolve_model


def _write(path, tensors: dict, data: bool = False):
    """A safetensors file; without data only the header is written (the loader must not need the rest)."""
    head, off = {"__metadata__": {"format": "pt"}}, 0
    for name, (dtype, shape) in tensors.items():
        n = 1
        for d in shape:
            n *= d
        size = n * checkpoint.SIZES[dtype]
        head[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + size]}
        off += size
    raw = json.dumps(head).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + (b"\0" * off if data else b""))


CFG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2,
       "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 512, "vocab_size": 1000,
       "max_position_embeddings": 2048, "torch_dtype": "bfloat16"}


def test_floats_count_in_the_served_dtype_and_packed_tensors_as_stored(tmp_path):
    _write(tmp_path / "model.safetensors", {"embed": ("F32", [1000, 256]), "qweight": ("I32", [256, 64]),
                                            "scales": ("F16", [2, 512]), "w8": ("F8_E4M3", [100, 10])})
    ck = checkpoint.from_folder(tmp_path)
    assert ck.float_params == 1000 * 256 + 2 * 512 and ck.other_bytes == 256 * 64 * 4 + 1000
    assert ck.bytes(2) == (1000 * 256 + 1024) * 2 + 65536 + 1000  # an fp32 checkpoint served in bf16: half
    assert ck.files == 1 and ck.source == "safetensors headers (1 file)"


def test_sharded_checkpoints_follow_the_index_and_a_missing_shard_falls_back(tmp_path):
    _write(tmp_path / "model-00001-of-00002.safetensors", {"a": ("BF16", [10, 10])})
    _write(tmp_path / "model-00002-of-00002.safetensors", {"b": ("BF16", [5])})
    _write(tmp_path / "consolidated.safetensors", {"c": ("BF16", [1000])})  # not read next to the model files
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 210}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                                         "b": "model-00002-of-00002.safetensors"}}))
    ck = checkpoint.from_folder(tmp_path)
    assert ck.float_params == 105 and ck.files == 2
    (tmp_path / "model-00002-of-00002.safetensors").unlink()  # a partial download: the formula is used instead
    assert checkpoint.from_folder(tmp_path) is None
    (tmp_path / "model.safetensors.index.json").unlink()
    assert checkpoint.from_folder(tmp_path).float_params == 100


def test_a_quantized_checkpoint_larger_than_the_formula_sets_the_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CFG | {"quantization_config": {"quant_method": "awq", "bits": 4,
                                                                                    "group_size": 128}}))
    formula = weights.weights_bytes(resolve_model(str(tmp_path), None, None, None, None).arch)  # no safetensors yet
    # unquantized embeddings and head, packed layers, and per-group scales/zeros the formula may not know of
    _write(tmp_path / "model.safetensors", {"embed": ("BF16", [1000, 256]), "head": ("BF16", [1000, 256]),
                                            "layers.qweight": ("I32", [2 * 256, 4000]),
                                            "layers.scales": ("F16", [64, 4000])})
    ref = resolve_model(str(tmp_path), None, None, None, None)
    ck = ref.arch.checkpoint
    assert ck is not None
    w1 = weights.weights_bytes(ref.arch)
    rope = ref.arch.rope_max_pos * ref.arch.head_dim * 2
    scales = 2 * 4 * 4  # no checkpoint holds them: each attention layer's four float32 scales (vLLM's Attention)
    assert w1 == ck.bytes(2) + rope + scales and w1 > formula  # the headers, not the formula
    w2 = weights.weights_bytes(ref.arch, tp=2)
    assert 0.45 * w1 < w2 < 0.6 * w1  # split over GPUs as the formula splits it


def test_online_quantization_of_a_16_bit_checkpoint_keeps_the_formula(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CFG))
    _write(tmp_path / "model.safetensors", {"embed": ("BF16", [1000, 256])})
    assert resolve_model(str(tmp_path), None, None, None, None).arch.checkpoint is not None
    assert resolve_model(str(tmp_path), None, None, None, "fp8").arch.checkpoint is None


def test_the_estimate_says_where_its_weights_come_from(tmp_path):
    from launcher.estimator import EngineSettings, estimate
    from launcher.gpu import planned_gpus

    (tmp_path / "config.json").write_text(json.dumps(CFG))
    _write(tmp_path / "model.safetensors", {"embed": ("BF16", [1000, 256])})
    a = resolve_model(str(tmp_path), None, None, None, None).arch
    g = planned_gpus(None, "H100-80GB", 1)[0]
    e = estimate(a, EngineSettings(max_model_len=2048), g.budget(), vllm_version=(0, 24, 0))
    assert e.weights_source == "safetensors headers (1 file)"
    plain = estimate(replace(a, checkpoint=None), EngineSettings(max_model_len=2048), g.budget(), vllm_version=(0, 24, 0))
    assert plain.weights_source == "config.json shapes"
    assert from_config(CFG).checkpoint is None
