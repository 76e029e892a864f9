"""What `--speculative-config` adds: the proposer's weights, its KV cache layers and the rejection sampler's warm-up.

vLLM (config/speculative.py, v1/spec_decode/):
- n-gram and suffix proposers run on the host (NgramProposer, numba): no GPU memory of their own;
- a draft model (method "draft_model", or a `model` that names no EAGLE/MTP head) is a second model loaded beside
  the target: its own weights, and its attention layers get KV cache specs in the same pool as the target's;
- EAGLE / EAGLE-3 heads: a small model (usually one decoder layer, an input projection of 2 or 3 hidden widths)
  with its own config.json; its layers get KV cache too;
- MTP: the target's own next-token-prediction layers (num_nextn_predict_layers), each a decoder layer with its
  input projection (2 hidden -> hidden), norms and a head over the vocabulary, plus an embedding;
- the profile run's sampler warm-up also runs the rejection sampler on one draft token per request
  (gpu_model_runner._dummy_sampler_run): fresh logits for two rows per request in the model dtype and, for
  probabilistic drafts, float32 draft probabilities (and their softmax) for one row per request.
The draft's layers join the KV cache pool: where their page equals the target's layers' they are grouped as vLLM
groups layers of one size; otherwise each is counted as the target layers it would take the room of (rounded up).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..errors import BadInput
from ..models.caveats import Caveat, Margin
from ..models.config import ModelArch

if TYPE_CHECKING:
    from collections.abc import Callable

NGRAM_METHODS = frozenset({"ngram", "suffix", "ngram_gpu"})
EAGLE_METHODS = frozenset({"eagle", "eagle3"})
HEAD_METHODS = frozenset({"eagle", "eagle3", "medusa", "mlp_speculator", "draft_model", "dflash"})
MTP_METHODS = frozenset({"mtp", "deepseek_mtp", "qwen3_next_mtp", "glm4_moe_mtp", "ernie_mtp", "longcat_flash_mtp",
                         "mimo_mtp", "qwen3_5_mtp"})
# Where a caveat of speculative decoding stands: the parts of vLLM it names are not modelled (None: the full margin
# applies), or modelled (the smaller margin): a proposer on the host, or one measured on a GPU on that runner
CAVEAT_TOPICS = {None: "speculative decoding", "host": "speculative decoding on the host",
                 "measured": "speculative decoding as measured"}
# Proposers whose starts were measured on a GPU (H200, vLLM 0.24.0, 2026-12-05; docs/gpu.md): an EAGLE-1 head on the
# V2 runner and a draft model on the V1 runner (n-gram on V1 too: a proposer on the host); an EAGLE-3 head on the V2
# runner (H100, vLLM 0.26.0, 2026-12-06: the same speculator as EAGLE-1, with the head and aux states of eagle3_aux_bytes)
MEASURED_PROPOSERS = frozenset({("eagle", "v2"), ("eagle3", "v2"), ("draft_model", "v1")})


@dataclass(frozen=True)
class SpecSettings:
    """--speculative-config, read as vLLM reads it."""

    method: str
    num_speculative_tokens: int
    model: str | None = None
    draft_tensor_parallel_size: int | None = None
    draft_probabilistic: bool = False

    @property
    def proposer_on_gpu(self) -> bool:
        return self.method not in NGRAM_METHODS


def parse(value: dict | str | None) -> SpecSettings | None:
    """The JSON object (or its string) vLLM takes; None for nothing."""
    if value in (None, "", {}):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise BadInput(f"--speculative-config: not a JSON object: {value!r}.",
                           hint='For example \'{"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3}\'.') from None
    if not isinstance(value, dict):
        raise BadInput(f"--speculative-config: expected a JSON object, got {value!r}.")
    model = value.get("model")
    method = value.get("method") or _method_from_model(model)
    if method is None:
        raise BadInput("--speculative-config needs a \"method\" (ngram, eagle, eagle3, mtp, draft_model, ...) or a draft "
                       "\"model\".")
    method = str(method)
    known = NGRAM_METHODS | HEAD_METHODS | MTP_METHODS
    if method not in known:
        raise BadInput(f"--speculative-config: unknown method {method!r}.", hint="Known: " + ", ".join(sorted(known)) + ".")
    n = value.get("num_speculative_tokens")
    if method not in MTP_METHODS and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise BadInput(f"--speculative-config: \"num_speculative_tokens\" must be a whole number >= 1 for {method}, "
                       f"got {n!r}.")
    if method in HEAD_METHODS and not model:
        raise BadInput(f"--speculative-config: method {method} needs the draft \"model\" (a folder or a Hub id).")
    tp = value.get("draft_tensor_parallel_size")
    return SpecSettings(method=method, num_speculative_tokens=int(n or 1), model=model, draft_tensor_parallel_size=tp,
                        draft_probabilistic=value.get("draft_sample_method") == "probabilistic")


def _method_from_model(model: object) -> str | None:
    """vLLM's guess from the draft's name when no method is given (config/speculative.py)."""
    if not model:
        return None
    name = str(model).lower()
    if "eagle-3" in name or "eagle3" in name:
        return "eagle3"
    if "eagle" in name:
        return "eagle"
    if "medusa" in name:
        return "medusa"
    return "draft_model"


def mtp_arch(target: ModelArch) -> ModelArch:
    """The target's MTP layers as a model of their own: num_nextn_predict_layers decoder layers (MoE where the
    target's last layers are), with an embedding and a head over the vocabulary."""
    n = target.mtp_layers
    if n <= 0:
        raise BadInput(f"--speculative-config method mtp: {target.architecture or 'the model'} has no MTP layers "
                       "(num_nextn_predict_layers in config.json).", hint="Use ngram, eagle or a draft model.")
    windows = (None,) * n
    return replace(target, num_layers=n, layer_windows=windows, layer_plan=(), state=None, dense_layers=0,
                   moe_layers=(target.is_moe_layer(target.num_layers - 1),) * n, tie_word_embeddings=False,
                   vision_layers=0, vision_params=0, checkpoint=None)


def mtp_extra_bytes(target: ModelArch) -> int:
    """Per MTP layer beyond a decoder layer: its input projection (2 hidden -> hidden) and two norms."""
    h = target.hidden_size
    return target.mtp_layers * (2 * h * h + 2 * h) * target.dtype_bytes


def kv_equivalent_layers(target: ModelArch, draft: ModelArch, tp: int) -> int:
    """The draft's attention layers counted as target layers: equal when their page is the target's, else
    the target layers they take the room of, rounded up."""
    from .kv import token_bytes

    n = len(draft.layer_windows) if not draft.layer_plan else sum("A" in p for p in draft.layer_plan)
    t, d = token_bytes(target, tp), token_bytes(draft, tp)
    return n if t == d else -(-n * d // t)


def proposer_arch(target: ModelArch, spec: SpecSettings, draft: ModelArch | None) -> ModelArch | None:
    """The model whose weights and attention layers the proposer adds: the target's MTP layers, or the draft model
    / EAGLE head read from its config (None where it runs on the host, or its config was not read)."""
    if not spec.proposer_on_gpu:
        return None
    return mtp_arch(target) if spec.method in MTP_METHODS else draft


def eagle_head_bytes(target: ModelArch, head: ModelArch, method: str, tp: int, pp: int, own_embedding: bool | None,
                     own_lm_head: bool | None, draft_vocab: int | None,
                     layer_bytes: Callable[[ModelArch], float]) -> int:
    """An EAGLE head's weights as vLLM builds them (model_executor/models/llama_eagle.py, llama_eagle3.py)
    and then shares (0.26.0 v1/worker/gpu/spec_decode/eagle/utils.py load_eagle_model, 0.24.0
    v1/spec_decode/llm_base_proposer.py): the head's embedding and lm_head are built, then deleted and replaced by
    the target's unless the head's checkpoint loaded one of its own (has_own_embed_tokens / has_own_lm_head, set
    only by load_weights: never with --load-format dummy or a folder without weights) that differs from the target's:
    - its decoder layers (`layer_bytes(head)` each), the first without its input norm (EAGLE-1); EAGLE-3's first
      layer takes 2 hidden widths into its QKV projection and has a hidden norm;
    - fc: 2 (EAGLE-1) or 3 (EAGLE-3, the target's auxiliary hidden states) hidden widths -> hidden, no bias;
    - the embedding where the checkpoint has one (`own_embedding` True) or that is not known (None, never lower),
      always under pipeline parallelism (each rank keeps its own);
    - EAGLE-1 has no head of its own (the target's); EAGLE-3 has a final norm, the draft-to-target id map (int64
      per draft vocabulary entry, always built) and its lm_head over the draft vocabulary (config.json
      draft_vocab_size, else the whole one) where the checkpoint has one (`own_lm_head` True) or that is not known.
    """
    h, b = head.hidden_size, head.dtype_bytes
    n = sum(layer_bytes(head) for _ in range(head.num_layers))
    if method == "eagle3":
        q, kv = head.num_heads * head.head_dim, head.num_kv_heads * head.head_dim
        dv = draft_vocab or head.vocab_size
        n += (h * (q + 2 * kv) // tp + h) * b  # the first layer's wider QKV input and its hidden norm
        n += 3 * target.hidden_size * h * b + h * b + dv * 8
        if own_lm_head is not False:
            n += dv * h * b // tp
    else:
        n += 2 * h * h * b - h * b  # fc, and the first layer's input norm removed
    if own_embedding is not False or pp > 1:
        n += head.vocab_size * h * b // tp
    return int(n)


def eagle3_aux_bytes(target: ModelArch, tokens: int) -> int:
    """EAGLE-3's auxiliary hidden states in the profile run (0.26.0 v1/worker/gpu/spec_decode/autoregressive/
    speculator.py propose; the target's forward with aux_hidden_state_layers): three layers' hidden states (hidden +
    residual) kept for every token while the rest of the target's forward runs, so held at its peak (the MLP of a
    later layer). Their concatenation for the head's fc comes after the forward, when its intermediates are freed, and
    is smaller than them (3 hidden widths against 2 x intermediate): it adds nothing to the peak.
    Measured (H100, vLLM 0.26.0, 2026-12-06, Llama-3.1-8B at 32k with a one-layer EAGLE-3 head, dummy weights): vLLM's
    KV cache (439,952 tokens) left 1.95 GiB beside the weights (the head 0.55 GiB as built) for the profile's peak and
    non-torch memory, 0.10 GiB more than an EAGLE-1 head's model counts; this term is 0.19 GiB there."""
    return 3 * tokens * target.hidden_size * target.dtype_bytes


# V1 runner's rejection-sampler warm-up (gpu_model_runner._dummy_sampler_run with speculative decoding, vLLM 0.24
# v1/sample/rejection_sampler.py forward), per request and vocabulary entry: fresh logits for two rows (model dtype),
# the bonus row's copy kept as raw logits (model dtype), the target row in float32 and its clone, top-k/top-p's sort
# (float32 values, int64 indices) and the probabilities (float32). Measured on an H200 (2026-12-05, vLLM 0.24.0):
# torch's peak grew by 29.98 bytes per request and vocabulary entry between 256 and 1024 sequences (Llama-3.1-8B
# with a draft model, bf16: 3 x 2 + 24 = 30).
V1_REJECTION_FLOAT32_BYTES = 4 + 4 + 12 + 4


def v1_rejection_bytes(spec: SpecSettings, rows: int, vocab: int, logit_bytes: int) -> int:
    """The V1 runner's rejection-sampler warm-up (see V1_REJECTION_FLOAT32_BYTES), with the probabilistic drafts'
    float32 probabilities and their softmax."""
    n = rows * vocab * (3 * logit_bytes + V1_REJECTION_FLOAT32_BYTES)
    if spec.draft_probabilistic:
        n += 2 * rows * vocab * 4
    return n


def sampler_bytes(spec: SpecSettings, rows: int, vocab: int, logit_bytes: int) -> int:
    """The rejection sampler's warm-up beside the forward's hidden states: fresh logits for 2 rows per request and
    their float32 copy, and the probabilistic drafts' probabilities (float32 noise and its softmax)."""
    n = 2 * rows * vocab * (logit_bytes + 4)
    if spec.draft_probabilistic:
        n += 2 * rows * vocab * 4
    return n


def caveat(what: str, where: str | None = None) -> Caveat:
    """A caveat of speculative decoding (CAVEAT_TOPICS)."""
    return Caveat(what, topic=CAVEAT_TOPICS[where], margin=Margin.UNMODELLED if where is None else Margin.SHAPES)
