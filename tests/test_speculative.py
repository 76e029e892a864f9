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


# Llama-3.1-8B and its EAGLE-1 head as published (yuhuili/EAGLE-LLaMA3.1-Instruct-8B: one Llama decoder layer)
LLAMA8B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
           "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
           "max_position_embeddings": 131072, "torch_dtype": "bfloat16", "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
           "hidden_act": "silu", "tie_word_embeddings": False}
EAGLE1 = {**LLAMA8B, "num_hidden_layers": 1, "max_position_embeddings": 2048, "torch_dtype": "float16"}


def _with_draft(spec_value: dict, draft_cfg: dict, own_embedding=None):
    s = settings_from_engine_args({"speculative-config": json.dumps(spec_value)})
    return s.__class__(**{**s.__dict__, "draft": from_config(draft_cfg, dtype="bfloat16"),
                          "draft_own_embedding": own_embedding})


def test_eagle_head_weights_as_vllm_builds_them():
    """vLLM 0.24.0 llama_eagle.py: the head's embedding is the target's when the head has no copy of its own
    (spec_decode/eagle/utils.load_eagle_model deletes the head's and shares), no final norm, no lm_head (the
    target's), the first layer without its input norm, and fc (2 x 4096 -> 4096, no bias). Worked by hand:
    attention 4096 x (4096 + 2 x 1024) + 4096 x 4096, MLP 3 x 4096 x 14336, one norm 4096, fc 2 x 4096 x 4096;
    and the attention's four float32 scales (16 bytes)."""
    layer = 4096 * (4096 + 2 * 1024) + 4096 * 4096 + 3 * 4096 * 14336 + 4096
    fc = 2 * 4096 * 4096
    s = _with_draft({"method": "eagle", "model": "org/EAGLE-LLaMA3.1-Instruct-8B", "num_speculative_tokens": 3},
                    EAGLE1, own_embedding=False)
    e = estimate(from_config(LLAMA8B), s, H100)
    assert e.draft_weights_bytes == (layer + fc) * 2 + 16
    assert e.draft_kv_layers == 1
    # a head whose checkpoint carries its own embedding (or one not read) keeps it: counted, never lower
    s_own = _with_draft({"method": "eagle", "model": "org/EAGLE-LLaMA3.1-Instruct-8B", "num_speculative_tokens": 3},
                        EAGLE1, own_embedding=None)
    assert estimate(from_config(LLAMA8B), s_own, H100).draft_weights_bytes == (layer + fc + 128256 * 4096) * 2 + 16


@pytest.mark.parametrize("method, runner", [("eagle", "v2"), ("eagle3", "v2"), ("mtp", "v2"), ("ngram", "v1"),
                                            ("draft_model", "v1"), ("suffix", "v1")])
def test_the_runner_vllm_picks_with_a_proposer(method, runner):
    """vLLM 0.24.0 config/vllm.py _get_v2_model_runner_unsupported_features: the V2 runner takes eagle, eagle3, mtp
    and dflash; any other method sends a V2 architecture (Llama here) back to the V1 runner."""
    from launcher.estimator import activation

    value = {"method": method, "num_speculative_tokens": 2, **({"model": "org/draft"} if method in spec.HEAD_METHODS else {})}
    s = settings_from_engine_args({"speculative-config": json.dumps(value)})
    assert activation.runner(from_config(LLAMA8B), (0, 24, 0), s.speculative) == runner


def test_whether_an_eagle_heads_folder_carries_an_embedding(tmp_path):
    """The folder decides it: safetensors headers naming embed_tokens (own), none (shared), no weights at all
    (vLLM's dummy load: shared), .bin files (not read: None, counted)."""
    import struct

    from launcher.planning import draft_has_embedding

    def write(folder, names):
        folder.mkdir()
        header = json.dumps({n: {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 8]} for n in names}).encode()
        (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
        return str(folder)

    assert draft_has_embedding(write(tmp_path / "own", ["model.embed_tokens.weight", "fc.weight"])) is True
    assert draft_has_embedding(write(tmp_path / "shared", ["fc.weight", "layers.0.mlp.up_proj.weight"])) is False
    (tmp_path / "bare").mkdir()
    assert draft_has_embedding(str(tmp_path / "bare")) is False
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"x")
    assert draft_has_embedding(str(tmp_path / "bin")) is None
    assert draft_has_embedding("org/EAGLE-LLaMA3.1-Instruct-8B") is None


def test_without_a_v1_runner_every_proposer_runs_on_v2():
    """vLLM 0.34.0 ships no v1/worker/gpu_model_runner.py: n-gram and draft models run on the V2 runner too."""
    from launcher.estimator import activation

    s = settings_from_engine_args({"speculative-config": json.dumps({"method": "ngram", "num_speculative_tokens": 2})})
    assert activation.runner(from_config(LLAMA8B), (0, 34, 0), s.speculative) == "v2"
    assert activation.runner(from_config(LLAMA8B), (0, 33, 0), s.speculative) == "v1"


EAGLE3 = {**LLAMA8B, "architectures": ["LlamaForCausalLMEagle3"], "num_hidden_layers": 1, "draft_vocab_size": 32000,
          "max_position_embeddings": 2048}


def _eagle3_settings(tmp_path, names, extra=None):
    """An EAGLE-3 head's folder as planning reads it: config.json and safetensors headers naming `names`."""
    import struct

    from launcher.planning import with_draft

    head = tmp_path / "head"
    head.mkdir(parents=True)
    (head / "config.json").write_text(json.dumps(EAGLE3))
    if names:
        header = json.dumps({n: {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]} for n in names}).encode()
        (head / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    args = {"max-model-len": 32768, "speculative-config": json.dumps(
        {"method": "eagle3", "model": str(head), "num_speculative_tokens": 3}), **(extra or {})}
    return with_draft(settings_from_engine_args(args), "bfloat16")


def test_eagle3_head_weights_as_vllm_builds_them(tmp_path):
    """vLLM 0.26.0 llama_eagle3.py and spec_decode/eagle/utils.load_eagle_model, worked by hand for a one-layer head
    of Llama-3.1-8B's width with a 32,000-token draft vocabulary: the decoder layer (attention 4096 x (4096 + 2 x
    1024) + 4096 x 4096, MLP 3 x 4096 x 14336, two norms), its QKV's second hidden width 4096 x 6144 and hidden norm,
    fc 3 x 4096 -> 4096, the final norm, the attention's four float32 scales and the draft-to-target map (32,000
    int64). The embedding and lm_head are
    the target's unless the checkpoint loads its own (has_own_*: dummy weights never do); an own lm_head has the
    draft vocabulary's 32,000 rows, not 128,256."""
    layer = 4096 * (4096 + 2 * 1024) + 4096 * 4096 + 3 * 4096 * 14336 + 2 * 4096
    eagle3 = 4096 * 6144 + 4096 + 3 * 4096 * 4096 + 4096
    built = (layer + eagle3) * 2 + 16 + 32000 * 8
    m = from_config(LLAMA8B)
    dummy = estimate(m, _eagle3_settings(tmp_path / "a", []), H100)
    assert dummy.draft_weights_bytes == built
    own_head = estimate(m, _eagle3_settings(tmp_path / "b", ["lm_head.weight", "d2t", "fc.weight"]), H100)
    assert own_head.draft_weights_bytes == built + 32000 * 4096 * 2
    both = estimate(m, _eagle3_settings(tmp_path / "c", ["lm_head.weight", "embed_tokens.weight"]), H100)
    assert both.draft_weights_bytes == built + 32000 * 4096 * 2 + 128256 * 4096 * 2


def test_eagle3_on_vllm_026_within_one_percent_and_never_above(tmp_path):
    """H100 80GB, vLLM 0.26.0, 2026-12-06 (the launch of docs/gpu.md's EAGLE-3 row): Llama-3.1-8B at 32k with a
    one-layer EAGLE-3 head (draft vocabulary 32,000), 3 speculative tokens, dummy weights: vLLM logged a KV cache of
    439,952 tokens. The estimate counted the head's embedding and a 128,256-row lm_head, and kept the 3% margin of an
    unmeasured proposer: 415,408 (-5.58%)."""
    from launcher.estimator.core import GpuBudget

    m = from_config(LLAMA8B)
    gpu = GpuBudget("NVIDIA H100 80GB HBM3", 81559 * 2**20, None, planned=True)
    e = estimate(m, _eagle3_settings(tmp_path, []), gpu, vllm_version=(0, 26, 0))
    assert e.fits and -0.01 <= (e.kv_cache_tokens - 439_952) / 439_952 <= 0
