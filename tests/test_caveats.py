"""What an estimate does not model is data (launcher/models/caveats.py): the confidence and the KV cache margin follow
a caveat's fields, never its words."""
import ast
from dataclasses import replace

from conftest import ROOT

from launcher.estimator import EngineSettings, GpuBudget, activation, estimate
from launcher.models.caveats import Caveat, Margin
from launcher.models.config import from_config

H100 = GpuBudget("NVIDIA H100 80GB HBM3", 85520809984, planned=True)
# An architecture nothing here models: the generic decoder path, one caveat (shapes as given)
UNKNOWN = from_config({"architectures": ["FooForCausalLM"], "model_type": "foo", "hidden_size": 2048,
                       "num_hidden_layers": 8, "num_attention_heads": 16, "vocab_size": 32000,
                       "intermediate_size": 5632, "max_position_embeddings": 8192})
# Aya-23-8B's shapes (Cohere), an architecture with measured starts
COHERE = from_config({"architectures": ["CohereForCausalLM"], "model_type": "cohere", "hidden_size": 4096,
                      "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
                      "num_hidden_layers": 32, "vocab_size": 256000, "max_position_embeddings": 8192,
                      "torch_dtype": "float16", "logit_scale": 0.125, "use_qk_norm": False})


def _kv(m, **kw):
    return estimate(m, EngineSettings(max_model_len=4096, **kw), H100, vllm_version=(0, 24, 0))


def test_an_unknown_architecture_carries_one_generic_caveat():
    (c,) = UNKNOWN.caveats
    assert (c.margin, c.until_measured) == (Margin.SHAPES, True)
    assert str(c).startswith("architecture 'FooForCausalLM' has no specific model here")


def test_rewording_a_caveat_changes_no_number():
    """The same caveat in other words: the same KV cache, the same confidence (a `startswith` on the sentence, as
    before, would have taken the reworded one for an unmodelled part and kept 3% of the request off)."""
    reworded = replace(UNKNOWN, caveats=(replace(UNKNOWN.caveats[0], what="shapes only"),))
    a, b = _kv(UNKNOWN), _kv(reworded)
    assert (a.kv_cache_tokens, a.confidence) == (b.kv_cache_tokens, b.confidence)
    assert b.confidence_reason == "shapes only"


def test_the_margin_follows_the_caveat():
    """Margin.SHAPES keeps 0.5% of the KV cache (at least 256 MiB) off; Margin.UNMODELLED 3% of the requested memory
    (activation.DERIVED_MARGIN, EXTRAPOLATED_MARGIN): on an 80 GB card at utilization 0.9 the difference is
    3% of 0.9 x 79.6 GiB, about 2.15 GiB, minus the small margin."""
    unmodelled = replace(UNKNOWN, caveats=(replace(UNKNOWN.caveats[0], margin=Margin.UNMODELLED),))
    small, large = _kv(UNKNOWN), _kv(unmodelled)
    requested = small.requested_bytes
    taken = activation.EXTRAPOLATED_MARGIN * requested - max(activation.DERIVED_MARGIN * (
        small.kv_cache_bytes + activation.DERIVED_MARGIN_MIN_BYTES), activation.DERIVED_MARGIN_MIN_BYTES)
    assert small.kv_cache_bytes - large.kv_cache_bytes > 0.9 * taken
    assert (small.confidence, large.confidence) == ("extrapolated", "extrapolated")


def test_measured_starts_lift_only_the_caveats_that_say_so():
    """Cohere's starts were measured (vLLM 0.24.0, H200): a caveat marked `until_measured` (as the generic decoder
    path's is) no longer lowers its confidence; the same caveat not so marked does. An unmeasured architecture keeps
    it either way."""
    generic = Caveat("generic decoder shapes", margin=Margin.SHAPES, until_measured=True)
    assert _kv(COHERE).confidence == "measured"
    assert _kv(replace(COHERE, caveats=(generic,))).confidence == "measured"
    assert _kv(replace(COHERE, caveats=(replace(generic, until_measured=False),))).confidence == "extrapolated"
    assert _kv(replace(UNKNOWN, caveats=(generic,))).confidence == "extrapolated"


def test_launch_caveats_are_data_too():
    """LoRA's caveats keep the small margin (its buffers are vLLM's own count); a speculative proposer not measured
    asks for the large one, a proposer on the host for the small one."""
    from launcher.estimator import lora, speculative
    loras = lora.caveats(UNKNOWN)
    assert loras and all(c.topic == "LoRA" and c.margin is Margin.SHAPES for c in loras)
    assert speculative.caveat("x").margin is Margin.UNMODELLED
    assert speculative.caveat("x", where="host").margin is Margin.SHAPES
    assert str(speculative.caveat("x", where="host")) == "speculative decoding on the host: x"


def test_no_note_is_read_by_its_words():
    """No `startswith`/`in`-test on a note or caveat text, and no note prefix constant left in the package: what
    decides a number is a caveat's fields."""
    found = []
    for p in sorted((ROOT / "launcher").rglob("*.py")):
        src = p.read_text()
        if "NOTE_START" in src:
            found.append(f"{p.name}: NOTE_START")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("startswith", "endswith"):
                receiver = ast.unparse(node.func.value).lower()
                if "note" in receiver or "caveat" in receiver:
                    found.append(f"{p.name}:{node.lineno} {ast.unparse(node)}")
    assert not found, found
    assert Caveat("a").margin is Margin.UNMODELLED  # unknown parts default to the larger margin
