"""--enable-lora: the adapters' buffers counted as vLLM's own LoRA manager allocates them (its model classes wrapped
on the meta device by tests/vllm_meta.py), the estimate's row and refusal, and LoRA settings read from the flags."""
import json

import pytest

import conformance
from conftest import ROOT

from launcher.errors import BadInput
from launcher.estimator import EngineSettings, GpuBudget, estimate
from launcher.estimator import lora
from launcher.models.config import from_config
from launcher.planning import settings_from_engine_args

TINY = json.loads((ROOT / "examples" / "tiny-llama" / "config.json").read_text())
SIZES = {"max_loras": 3, "max_lora_rank": 8}
# vLLM's own layers for these: every wrapped module counted exactly
EXACT = ["Qwen2ForCausalLM", "Qwen3ForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM",
         "MistralForCausalLM", "Glm4ForCausalLM", "Starcoder2ForCausalLM"]
# served by vLLM's Transformers backend here, whose packing is set per instance: counted as the larger layout
LARGER = ["GPTNeoXForCausalLM", "GPTBigCodeForCausalLM"]


@pytest.fixture(scope="module")
def built():
    # the worker makes each config from transformers' own class (vllm_meta.transformers_config) and returns it
    jobs = [{"id": "tiny", "config": TINY, "lora": SIZES}] + [{"id": a, "generate": a, "lora": SIZES} for a in EXACT + LARGER]
    res = conformance.run_worker(jobs)
    return {j["id"]: (j.get("config") or res[j["id"]]["config"], res[j["id"]]) for j in jobs}


def _ours(cfg: dict) -> int:
    return lora.adapter_bytes(from_config(cfg, dtype="bfloat16"), lora.LoraSettings(**SIZES))


@pytest.mark.parametrize("arch", ["tiny"] + EXACT)
def test_adapter_bytes_equal_what_vllm_allocates(built, arch):
    cfg, r = built[arch]
    assert r["ok"], r
    assert _ours(cfg) == r["lora"]["bytes"], (r["lora"], _ours(cfg))


@pytest.mark.parametrize("arch", LARGER)
def test_adapter_bytes_never_below_vllm(built, arch):
    cfg, r = built[arch]
    assert r["ok"], r
    assert r["lora"]["bytes"] <= _ours(cfg) <= 3 * r["lora"]["bytes"]


def test_tensor_parallel_split_worked_by_hand():
    """tiny-llama (hidden 256, 4 heads of 64, 2 KV heads, intermediate 512, vocabulary 512, 2 layers) on 2 GPUs,
    per slot and rank: QKV A 3x256 + B (128+64+64); o_proj A 128 + B 256; gate_up A 2x256 + B 2x256; down A 256 +
    B 256: 2,944 per layer, x2 layers, + the embedding's A 512 and B 256 = 6,656; x 3 slots x rank 8 x 2 bytes."""
    m = from_config(TINY, dtype="bfloat16")
    assert lora.adapter_bytes(m, lora.LoraSettings(**SIZES), tp=2) == 6656 * 3 * 8 * 2


def test_settings_from_flags_and_vllm_defaults():
    assert settings_from_engine_args({"max-loras": 4}).lora is None  # sizes alone: vLLM runs without adapters
    s = settings_from_engine_args({"enable-lora": True})
    assert (s.lora.max_loras, s.lora.max_lora_rank) == (1, 16)
    s = settings_from_engine_args({"enable-lora": True, "max-loras": 4, "max-lora-rank": 64})
    assert (s.lora.max_loras, s.lora.max_lora_rank) == (4, 64)
    with pytest.raises(BadInput, match="max-cpu-loras"):
        settings_from_engine_args({"enable-lora": True, "max-loras": 4, "max-cpu-loras": 2})


def test_estimate_takes_the_adapters_off_the_kv_cache():
    m = from_config(TINY)
    gpu = GpuBudget("H100-80GB", 81559 << 20)
    base = estimate(m, EngineSettings(), gpu)
    with_lora = estimate(m, EngineSettings(lora=lora.LoraSettings(max_loras=4, max_lora_rank=64)), gpu)
    assert base.lora_bytes == 0 and with_lora.lora_bytes == lora.adapter_bytes(m, lora.LoraSettings(4, 64))
    assert with_lora.kv_cache_bytes <= base.kv_cache_bytes - with_lora.lora_bytes
    assert with_lora.confidence == "extrapolated" and "LoRA" in with_lora.confidence_reason


def test_an_architecture_without_lora_is_refused_before_loading():
    no_lora = sorted(a for a, v in lora._support()["architectures"].items() if not v["lora"] and "CausalLM" in a)
    assert no_lora
    m = from_config(TINY)
    from dataclasses import replace
    with pytest.raises(BadInput, match="does not support LoRA"):
        estimate(replace(m, architecture=no_lora[0]), EngineSettings(lora=lora.LoraSettings()),
                 GpuBudget("H100-80GB", 81559 << 20))
