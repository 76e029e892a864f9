"""The CPU build's layout on this host: what vLLM's CPU platform does by instruction set, and nothing in the
estimate for a GPU that depends on it."""
from launcher import hostcpu
from launcher.estimator import EngineSettings
from launcher.models.config import from_config
from launcher.planning import cpu_kv_cache

# A 2-layer Mamba2: conv state (8 heads x 32 + 2 x 16) x (4 - 1) = 864 elements, temporal 8 x 32 x 16 = 4096.
MAMBA2 = {"architectures": ["Mamba2ForCausalLM"], "model_type": "mamba2", "hidden_size": 256, "num_heads": 8,
          "head_dim": 32, "state_size": 16, "n_groups": 1, "conv_kernel": 4, "num_hidden_layers": 2,
          "vocab_size": 512, "expand": 1, "dtype": "bfloat16", "max_position_embeddings": 4096}


def test_the_flag_read_is_the_one_torch_and_so_vllm_read():
    import torch

    assert hostcpu.has_avx512_bf16() == torch.cpu._is_avx512_bf16_supported()


def test_flags_line_parsed(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu avx512f avx512_bf16 amx_tile amx_bf16\n")
    b.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_vnni amx_tile\n")
    assert hostcpu.has_avx512_bf16(str(a)) is True and hostcpu.has_amx_tiles(str(a)) is True
    assert hostcpu.has_avx512_bf16(str(b)) is False and hostcpu.has_amx_tiles(str(b)) is False
    assert hostcpu.missing_amx_flags(str(b)) == ["amx_bf16"]
    assert hostcpu.summary(str(a)) == "Some Xeon; avx512f avx512_bf16 amx_tile amx_bf16"
    assert hostcpu.has_avx512_bf16(str(tmp_path / "none")) is False


def test_the_amx_answer_is_the_one_torch_and_so_vllm_read():
    import torch

    assert hostcpu.has_amx_tiles() == torch.cpu._is_amx_tile_supported()


def test_cpu_build_state_in_float32_on_avx512_bf16_as_its_platform_sets_it():
    """Per layer: conv 864 x 2 B + temporal 4096 x 2 B = 9,920 B in bfloat16; with the temporal state in float32
    (platforms/cpu.py on AVX-512 BF16) 1,728 + 16,384 = 18,112 B. Two layers in a 128-token block: 155 and 283 B per
    token."""
    m = from_config(MAMBA2)
    s = EngineSettings(max_model_len=1024)
    env = {"VLLM_CPU_KVCACHE_SPACE": "1"}
    assert cpu_kv_cache(m, s, env, avx512_bf16=False)["kv_bytes_per_token"] == 155
    assert cpu_kv_cache(m, s, env, avx512_bf16=True)["kv_bytes_per_token"] == 283
    assert m.state.temporal_fp32 is False  # the GPU estimate's model is untouched
