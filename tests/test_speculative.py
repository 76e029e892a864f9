"""--speculative-config: read as vLLM reads it; the proposer's weights and KV layers; the n-gram proposer costs none."""
import json

import pytest

from conftest import ROOT, TINY

from launcher.errors import BadInput
from launcher.estimator import EngineSettings, GpuBudget, estimate
from launcher.estimator import speculative as spec
from launcher.models.config import from_config
from launcher.planning import cpu_kv_cache, draft_arch, settings_from_engine_args

CFG = json.loads((ROOT / "examples" / "tiny-llama" / "config.json").read_text())
H100 = GpuBudget("H100-80GB", 81559 << 20)


@pytest.mark.parametrize("value, method", [
    ('{"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3}', "ngram"),
    ('{"model": "org/EAGLE3-LLaMA3.1-Instruct-8B", "num_speculative_tokens": 2}', "eagle3"),
    ('{"model": "org/EAGLE-LLaMA3-Instruct-8B", "num_speculative_tokens": 2}', "eagle"),
    ('{"model": "org/Qwen3-0.6B", "num_speculative_tokens": 4}', "draft_model"),
    ('{"method": "mtp"}', "mtp"),
])
def test_method_as_vllm_reads_it(value, method):
    assert spec.parse(value).method == method


@pytest.mark.parametrize("value, words", [
    ("{", "not a JSON object"), ('{"method": "magic", "num_speculative_tokens": 1}', "unknown method"),
    ('{"method": "ngram"}', "num_speculative_tokens"), ('{"method": "eagle", "num_speculative_tokens": 2}', "draft"),
    ('{"num_speculative_tokens": 2}', "method"),
])
def test_bad_configs_are_refused_with_what_to_do(value, words):
    with pytest.raises(BadInput, match=words):
        spec.parse(value)


def test_ngram_adds_no_weights_and_no_kv_layers():
    m = from_config(CFG)
    s = settings_from_engine_args({"speculative-config": '{"method": "ngram", "num_speculative_tokens": 3}'})
    e, base = estimate(m, s, H100), estimate(m, EngineSettings(), H100)
    assert (e.draft_weights_bytes, e.draft_kv_layers) == (0, 0) and e.kv_bytes_per_token == base.kv_bytes_per_token


def test_a_draft_model_adds_its_weights_and_its_layers_to_the_pool():
    m = from_config(CFG)
    s = settings_from_engine_args({"speculative-config": json.dumps(
        {"method": "draft_model", "model": str(TINY), "num_speculative_tokens": 2})})
    s = s.__class__(**{**s.__dict__, "draft": draft_arch(str(TINY), m.dtype)})
    e, base = estimate(m, s, H100), estimate(m, EngineSettings(), H100)
    assert e.draft_weights_bytes == base.weights_bytes and e.draft_kv_layers == 2
    assert e.kv_bytes_per_token == 2 * base.kv_bytes_per_token
    assert e.confidence == "extrapolated" and "draft_model" in e.confidence_reason


def test_cpu_kv_cache_with_a_draft_as_vllm_logged_it():
    """vLLM 0.32.0 (CPU build) with the tiny model as its own draft, VLLM_CPU_KVCACHE_SPACE=1, max_model_len 1024:
    "CPU KV cache size: 524,288 tokens" (without the draft: 1,048,576), logged 2026-12-05."""
    m = from_config(CFG)
    s = settings_from_engine_args({"max-model-len": 1024, "speculative-config": json.dumps(
        {"method": "draft_model", "model": str(TINY), "num_speculative_tokens": 2})})
    s = s.__class__(**{**s.__dict__, "draft": draft_arch(str(TINY), m.dtype)})
    assert cpu_kv_cache(m, s, {"VLLM_CPU_KVCACHE_SPACE": "1"})["kv_cache_tokens"] == 524_288
    assert cpu_kv_cache(m, settings_from_engine_args({"max-model-len": 1024}),
                        {"VLLM_CPU_KVCACHE_SPACE": "1"})["kv_cache_tokens"] == 1_048_576


def test_mtp_needs_the_models_own_layers():
    m = from_config(CFG)
    with pytest.raises(BadInput, match="no MTP layers"):
        estimate(m, settings_from_engine_args({"speculative-config": '{"method": "mtp"}'}), H100)
    with_mtp = from_config({**CFG, "num_nextn_predict_layers": 1})
    e = estimate(with_mtp, settings_from_engine_args({"speculative-config": '{"method": "mtp"}'}), H100)
    assert e.draft_kv_layers == 1 and e.draft_weights_bytes > 0
