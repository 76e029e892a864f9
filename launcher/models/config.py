"""Read a Hugging Face config.json into the few numbers the estimator needs.

Only config.json is read, never weights. The numbers follow how vLLM builds the
model: per-layer attention type (full, sliding window, MLA), MoE experts, tied
embeddings, quantization_config.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..errors import ModelConfigError
from . import hybrid as hybrid_mod
from . import quant as quant_mod
from .layouts import FULL_QK_NORM, PER_LAYER_INPUT, UNGATED_MLP, layout
from .caveats import Caveat, Margin, texts
from .defaults import with_defaults
from .hybrid import StateShape
from .quant import Quant

# Architectures whose weights and KV cache the estimator models.
DENSE = {
    "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
    "Gemma2ForCausalLM", "GemmaForCausalLM", "Phi3ForCausalLM", "GraniteForCausalLM",
}
MOE = {"MixtralForCausalLM", "Qwen3MoeForCausalLM", "Qwen2MoeForCausalLM"}
MLA = {"DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM"}
SUPPORTED = DENSE | MOE | MLA
# Activations whose MLP shapes are read here (a gated MLP: gate, up, down; the model types above: up, down). Another
# one, where the model type's class is not known to be ungated, may come with a different MLP (Arcee's non-gated
# relu2 once did): the gated reading, the larger, is kept and the estimate marked extrapolated.
KNOWN_ACTIVATIONS = {"silu", "swish", "gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "gelu_python", "gelu_10",
                     "gelu_accurate", "quick_gelu", "relu", "relu2", "relu6", "leaky_relu", "tanh", "sigmoid", "mish",
                     "swiglu", "geglu"}
# Model types vLLM runs with multi-head latent attention when the config has kv_lora_rank (its
# ModelArchConfigConvertor.is_deepseek_mla, transformers_utils/model_arch_config_convertor.py). Others with
# MLA-like fields (MiniCPM3) cache full K and V of qk_nope + qk_rope per head.
MLA_MODEL_TYPES = {"axk1", "deepseek_v2", "deepseek_v3", "deepseek_v32", "deepseek_v4", "deepseek_v41", "dots3_note",
                   "deepseek_mtp", "k3_dspark", "glm5_next", "glm5_next_text", "glm_moe_dsa", "glm4_moe_lite",
                   "glm4_moe_lite_mtp", "kimi_k2", "kimi_linear", "longcat_flash", "pangu_ultra_moe",
                   "pangu_ultra_moe_mtp", "bailing_hybrid", "bailing_hybrid_mtp", "bailing_hybrid_v3_mtp", "hy_v4",
                   "hy_v4_mtp"}
# KV-head keys in the order vLLM reads them (get_total_num_kv_heads); none of them: one KV head per query head
KV_HEAD_KEYS = ("n_head_kv", "num_kv_heads", "num_key_value_heads", "multi_query_group_num", "num_attention_groups")
# Models whose every layer keeps vLLM's sliding window (no per-layer list in their config)
ALL_LAYERS_SLIDING = ("mistral", "mixtral", "phi3", "starcoder2")


# Multimodal architectures whose encoder profile (vLLM's dummy inputs for it) is modelled: activation.encoder_patches
VISION_LAYOUTS = {"Qwen2VLForConditionalGeneration": "video", "Qwen2_5_VLForConditionalGeneration": "video",
                  "Gemma3ForConditionalGeneration": "image", "LlavaForConditionalGeneration": "image"}

# Keys of a multimodal config.json that describe the whole checkpoint, the language model's included
CARRIED_KEYS = ("torch_dtype", "dtype", "quantization_config", "tie_word_embeddings")

# Keys vLLM takes the minimum of to derive the default max_model_len.
MAX_LEN_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length",
                "model_max_length", "max_sequence_length", "max_seq_length", "seq_len")

DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2, "fp8": 1, "float8": 1}


@dataclass(frozen=True)
class ModelArch:
    """What the estimator needs to know of one model."""

    architecture: str
    model_type: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    dtype: str
    derived_max_len: int
    layer_windows: tuple[int | None, ...]  # sliding window per layer, None for full attention
    attention_bias: bool = False
    gated_mlp: bool = True  # gate+up+down (SwiGLU/GeGLU); False: up+down only (GPT-2/NeoX/StarCoder style)
    qk_norm: bool = False  # a norm of head_dim on each query and key head (Qwen3)
    # a norm over all query heads' width and one over all key heads' (OLMo 2/3, OLMoE: q_norm, k_norm), whole on
    # every rank
    full_qk_norm: bool = False
    extra_norms_per_layer: int = 0
    # attention and MLP side by side after one norm (GPT-J's ln_1, Cohere's input_layernorm, Falcon-7B's)
    one_norm_per_layer: bool = False
    # the query projection also gives a gate per query dimension (Qwen3-Next's attn_output_gate, HRM's gqkv)
    query_gate: bool = False
    # biases on every linear layer (qkv, output, MLP) and LayerNorms with a bias (GPT-2, OPT, GPT-BigCode)
    linear_bias: bool = False
    norm_bias: bool = False
    norm_weights: bool = True  # False: vLLM's norms have no weight (HRM)
    final_norm: bool = True  # False: no norm after the last layer (OPT with do_layer_norm_before false)
    learned_positions: int = 0  # rows of a learned position-embedding table (GPT-2, OPT: max positions + 2)
    # bytes of buffers the model keeps besides the rotary cache: the causal mask of transformers' GPT-BigCode
    # (max_positions² booleans), which vLLM builds through its Transformers backend (registry: 0.26, 0.32)
    mask_buffer_bytes: int = 0
    # the rotary embedding as transformers' modules keep it where vLLM builds the model through its Transformers
    # backend: inv_freq and original_inv_freq, rotary_dim / 2 float32 each, in place of vLLM's cos/sin cache
    inv_freq_bytes: int = 0
    rotary: bool = True  # False: vLLM builds no rotary cache (learned positions, ALiBi, Jamba's attention)
    embed_dim: int = 0  # the token embedding's width where it differs from hidden_size (OPT's word_embed_proj_dim)
    weight_layers: int = 0  # decoder layers with their own weights, where fewer than the cache's layers (HRM)
    extra_params: int = 0  # parameters outside the layers not counted otherwise (HRM's z_L_init)
    # Gemma 3n and 4: the per-layer input embedding (vocab x layers x hidden_size_per_layer_input, split over TP as
    # vLLM's VocabParallelEmbedding is), and what each decoder layer holds beyond attention, MLP and its norms
    per_layer_embed_params: int = 0
    layer_extra_params: int = 0
    # Gemma 4: its full-attention layers' own head size and KV heads (global_head_dim, num_global_key_value_heads)
    full_head_dim: int = 0
    full_kv_heads: int = 0
    # Gemma 3n/4: the last num_kv_shared_layers layers read an earlier layer's KV cache: no K/V projection, no cache
    kv_shared_layers: int = 0
    # Llama 4: its windowed layers attend within chunks (attention_chunk_size), sized as windows only where vLLM's
    # hybrid KV cache manager runs (estimator.core.as_built)
    chunked_local: bool = False
    # MoE
    num_experts: int = 0
    # the router in float32 (vLLM's Glm4MoE gate: GLM-4.5, GLM-4.7-Flash) and its float32 score correction bias (those
    # and DeepSeek-V3's noaux_tc routing)
    router_fp32: bool = False
    router_bias: bool = False
    experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    shared_experts: int = 0
    shared_expert_intermediate: int = 0  # Qwen2-MoE style shared expert's own size (0: intermediate_size)
    dense_layers: int = 0  # leading dense layers of an MoE model (DeepSeek first_k_dense_replace)
    moe_layers: tuple[bool, ...] = ()  # which layers have experts, where the config says (empty: all past dense_layers)
    # MLA
    mla: bool = False
    kv_lora_rank: int = 0
    q_lora_rank: int | None = None
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    rope_max_pos: int = 0
    rotary_fraction: float = 1.0  # partial_rotary_factor: the share of head_dim the rotary caches cover
    quant: Quant = field(default_factory=lambda: Quant("none"))
    # what this estimate does not model (generic shapes, an unmodelled quantization): empty when modelled
    caveats: tuple[Caveat, ...] = ()
    # what the checkpoint's safetensors headers say it holds (models.checkpoint.CheckpointWeights), if read
    checkpoint: object | None = None
    # how vLLM's loading changes what the config says about the weights (said in weights_source)
    weights_note: str = ""
    # hybrid attention/state-space models: each layer's parts (A attention, S state mixer, F MLP/MoE) and
    # the per-request state of one S layer (models/hybrid.py); empty for attention-only models
    layer_plan: tuple[str, ...] = ()
    state: StateShape | None = None
    # multimodal: the vision tower (vision_config), 0 layers for text-only models
    vision_hidden: int = 0
    vision_layers: int = 0
    vision_intermediate: int = 0
    vision_gated: bool = False  # SwiGLU vision MLP (gate_up output 2 I, then I) instead of fc1 -> act
    vision_merge: int = 1  # tokens given to the language model are merge^2 patches each
    vision_pixels: int = 0  # input values per patch (3 x temporal x patch^2)
    vision_params: int = 0  # the tower plus its projector into the language model
    # how vLLM's profile run sizes the encoder's dummy batch (activation.encoder_patches): "video" (one item
    # as long as max_model_len: Qwen2-VL, Qwen2.5-VL), "image" (fixed-size images, as many as the encoder
    # budget holds: Gemma 3, LLaVA), "" (this architecture's dummy inputs are not modelled)
    vision_layout: str = ""
    vision_item_tokens: int = 0  # "image": language-model tokens per image
    vision_item_patches: int = 0  # "image": patches the tower runs per image
    # next-token-prediction layers the checkpoint carries for speculative decoding (method mtp); vLLM builds them
    # only when asked to
    mtp_layers: int = 0

    @property
    def notes(self) -> tuple[str, ...]:
        """The caveats as users read them."""
        return texts(self.caveats)

    @property
    def state_layers(self) -> int:
        return sum("S" in p for p in self.layer_plan)

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def is_moe_layer(self, index: int) -> bool:
        if not self.is_moe:
            return False
        if self.moe_layers:
            return self.moe_layers[index] if index < len(self.moe_layers) else False
        return index >= self.dense_layers

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES.get(self.dtype, 2)


# Other names that architectures without a specific model here give the same shapes (GPT-2, Falcon,
# ChatGLM, MPT, ... style configs).
ALIASES = {
    "hidden_size": ("d_model", "n_embd", "n_embed", "model_dim", "dim"),  # n_embed: BLOOM (BloomConfig pops it)
    "num_hidden_layers": ("n_layer", "num_layers", "n_layers"),
    "num_attention_heads": ("n_head", "num_heads", "n_heads"),
    "num_key_value_heads": ("num_kv_heads", "n_head_kv", "multi_query_group_num", "n_kv_heads"),
    "intermediate_size": ("ffn_hidden_size", "n_inner", "ffn_dim", "d_ff"),
    "vocab_size": ("padded_vocab_size", "n_vocab"),
}


# Blocks in which a config nests its shapes (DBRX: attn_config with kv_n_heads, ffn_config with the experts; MPT:
# attn_config). A generic reading that missed them counted DBRX-132B as a 13B dense model (weights about 5x low).
NESTED_SHAPE_BLOCKS = ("attn_config", "ffn_config")
# vLLM reads DBRX's and MPT's KV heads from attn_config.kv_n_heads (ModelConfig.get_total_num_kv_heads)
NESTED_NAMES = {"moe_top_k": "num_experts_per_tok", "moe_num_experts": "num_local_experts",
                "kv_n_heads": "num_key_value_heads"}


def _hoisted(cfg: dict, notes: list[Caveat]) -> dict:
    """The shapes of the nested blocks taken up to the top level (where it does not already say them)."""
    blocks = [k for k in NESTED_SHAPE_BLOCKS if isinstance(cfg.get(k), dict)]
    if not blocks:
        return cfg
    out = dict(cfg)
    for b in blocks:
        for k, v in cfg[b].items():
            k = NESTED_NAMES.get(k, k)
            if k != "model_type" and out.get(k) is None:
                out[k] = v
    notes.append(Caveat("shapes read from the nested " + ", ".join(blocks) + " of config.json"))
    return out


def _need(cfg: dict, key: str, source: str):
    if cfg.get(key) is None:
        for alt in ALIASES.get(key, ()):
            if cfg.get(alt) is not None:
                key = alt
                break
    if key not in cfg or cfg[key] is None:
        raise ModelConfigError(f"{source}: config.json has no '{key}'.", hint="Is this a Hugging Face causal-LM config?")
    v = cfg[key]
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
        raise ModelConfigError(f"{source}: '{key}' must be a positive number, got {v!r}.")
    return int(v)


def derive_max_len(cfg: dict) -> int:
    """The default max_model_len as vLLM derives it (config/model.py _get_and_verify_max_len)."""
    lens = [int(cfg[k]) for k in MAX_LEN_KEYS if isinstance(cfg.get(k), (int, float)) and not isinstance(cfg.get(k), bool)]
    derived = min(lens) if lens else 2048
    rope = cfg.get("rope_scaling") or cfg.get("rope_parameters")
    if isinstance(rope, dict) and "gemma3" not in str(cfg.get("model_type", "")):
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("su", "longrope", "llama3"):
            factor = rope.get("factor") or 1.0
            if rope_type == "yarn" and rope.get("original_max_position_embeddings"):
                derived = int(rope["original_max_position_embeddings"])
            derived = int(derived * factor)
    return derived


def _opt(cfg: dict, key: str):
    for k in (key, *ALIASES.get(key, ())):
        if cfg.get(k) is not None:
            return cfg[k]
    return None


def _quant(cfg: dict, override: str | None, notes: list[Caveat]) -> Quant:
    q, note = quant_mod.from_config(cfg.get("quantization_config") or {}, override)
    if note:
        notes.append(Caveat(note))
    return q


def from_config(cfg: dict, *, source: str = "config.json", dtype: str | None = None,
                quantization: str | None = None) -> ModelArch:
    """Build a ModelArch from a parsed config.json dict."""
    if not isinstance(cfg, dict):
        raise ModelConfigError(f"{source}: expected a JSON object.")
    cfg = with_defaults(cfg)
    nested = isinstance(cfg.get("text_config"), dict) and "hidden_size" not in cfg
    text = with_defaults(cfg["text_config"]) if nested else cfg
    vision = _vision(cfg, text.get("hidden_size"))
    # towers whose shapes are not read here (Gemma 3n's MobileNetV5 vision and its audio encoder): not counted, said
    uncounted = [k.split("_")[0] for k in ("vision_config", "audio_config")
                 if isinstance(cfg.get(k), dict) and not (k == "vision_config" and vision)]
    if nested:
        # the language model's config, with what the outer one says of the whole checkpoint (its dtype,
        # quantization) where the inner one is silent
        outer = {k: cfg[k] for k in CARRIED_KEYS if k in cfg}
        cfg = {**outer, **text, "architectures": cfg.get("architectures")}
    archs = cfg.get("architectures") or []
    arch = archs[0] if archs else ""
    mtype = str(cfg.get("model_type", ""))
    layer_types = cfg.get("layer_types") or cfg.get("layers_block_type") or []
    notes: list[Caveat] = []
    hybrid = hybrid_mod.is_hybrid(cfg, arch, mtype)
    if arch not in SUPPORTED:
        cfg = _hoisted(cfg, notes)
    if arch not in SUPPORTED and arch not in conformance_matched():
        # every term still derived from the shapes given; lifted once starts of the architecture were measured
        notes.append(Caveat(f"architecture '{arch or mtype or '(none)'}' has no specific model here: generic decoder "
                            "shapes from config.json (attention, MLP, experts and MLA fields as given)",
                            margin=Margin.SHAPES, until_measured=True))
    low = _conformance_note(arch)
    if low:
        notes.append(low)
    if uncounted:
        notes.append(Caveat(f"its {' and '.join(uncounted)} tower{'s' if len(uncounted) > 1 else ''} (config.json's "
                            f"{', '.join(u + '_config' for u in uncounted)}) not counted: their shapes are not read "
                            "here; the estimate keeps the large margin"))
    if vision and not vision.get("vision_layout"):
        notes.append(Caveat(f"multimodal '{arch or mtype}': the dummy inputs of its encoder's profile run are not "
                            "modelled here; the tower is assumed to run max_model_len tokens' worth of patches"))
    act = next((cfg[k] for k in ("hidden_act", "activation_function", "hidden_activation") if cfg.get(k)), None)
    if isinstance(act, str) and act.lower() not in KNOWN_ACTIVATIONS and mtype.replace("-", "_") not in UNGATED_MLP:
        notes.append(Caveat(f"activation '{act}' is not one read here: its MLP is counted with a gate, the larger "
                            "reading"))
    h = _need(cfg, "hidden_size", source)
    plan: tuple[str, ...] = ()
    state = None
    if hybrid:
        plan = hybrid_mod.layer_plan(cfg, mtype, int(_opt(cfg, "num_hidden_layers") or 0))
        state = hybrid_mod.state_shape(cfg, mtype, h)
        if state.kind == "unknown" or not any("S" in p for p in plan):
            notes.append(Caveat(f"hybrid '{arch or mtype}': its recurrent state is not one vLLM's shapes here "
                                "describe; a large state per layer is assumed"))
    layers = len(plan) if plan else _need(cfg, "num_hidden_layers", source)
    heads = int(_opt(cfg, "num_attention_heads") or 1) if hybrid else _need(cfg, "num_attention_heads", source)
    kv = _kv_heads(cfg, heads)
    head_dim = _head_size(cfg, h, heads)
    vocab = _need(cfg, "vocab_size", source)
    inter = _opt(cfg, "intermediate_size") or 4 * h
    inter = int(max(inter) if isinstance(inter, list) and inter else inter)  # per-layer sizes (Gemma 3n): the largest
    tdtype = dtype if dtype not in (None, "auto") else str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
    if tdtype == "float32":
        tdtype = "bfloat16"  # vLLM serves float32 checkpoints in bfloat16 by default
    windows = _layer_windows(cfg, mtype, layers, plan, layer_types)
    common = dict(
        architecture=arch, model_type=mtype, hidden_size=h, num_layers=layers, num_heads=heads, num_kv_heads=kv,
        head_dim=head_dim, intermediate_size=inter, vocab_size=vocab,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", mtype.startswith("gemma"))),
        dtype=tdtype, derived_max_len=derive_max_len(cfg), layer_windows=tuple(windows),
        attention_bias=bool(cfg.get("attention_bias", mtype == "qwen2")) or mtype in ("qwen2", "qwen2_moe"),
        # a norm of head_dim on each query and key head: always in these types' vLLM classes (lfm2.py's q_layernorm
        # and k_layernorm too), by the config's switch in GLM-4.5's (glm4_moe.py use_qk_norm) and Qwen2's (qwen2.py
        # qk_norm)
        qk_norm=mtype in ("qwen3", "qwen3_moe", "qwen3_next", "gemma3", "gemma3_text", "exaone4", "exaone_moe",
                          "apertus", "afmoe", "lfm2", "lfm2_moe", *PER_LAYER_INPUT)
        or bool(cfg.get("use_qk_norm") and mtype == "glm4_moe")
        or bool(cfg.get("qk_norm") is True and mtype == "qwen2"),
        full_qk_norm=mtype in FULL_QK_NORM,
        # post-attention and post-MLP norms (Gemma 3's pre- and post-feedforward beside its two)
        extra_norms_per_layer=2 if mtype in ("gemma2", "glm4", "gemma3", "gemma3_text", *PER_LAYER_INPUT) else 0,
        rotary_fraction=_rotary_fraction(cfg, layer_types),
        rope_max_pos=_rope_positions(cfg),
        quant=_quant(cfg, quantization, notes),
        mtp_layers=int(cfg.get("num_nextn_predict_layers") or cfg.get("mtp_num_hidden_layers") or 0),
        chunked_local=mtype in ("llama4", "llama4_text") and bool(cfg.get("attention_chunk_size"))
        and isinstance(cfg.get("no_rope_layers"), list),
        router_fp32=mtype in ("glm4_moe", "glm4_moe_lite"),
        router_bias=mtype in ("glm4_moe", "glm4_moe_lite") or cfg.get("topk_method") == "noaux_tc",
    )
    common.update(layout(cfg, mtype, h, plan))
    if common.get("full_head_dim", 0) > head_dim:
        notes.append(Caveat(f"its full-attention layers have heads of {common['full_head_dim']} against {head_dim}: "
                            "the sliding layers' blocks are grown to the same page, as vLLM's "
                            "unify_kv_cache_spec_page_size does (read from its source, not measured on a GPU)",
                            topic="KV cache", margin=Margin.SHAPES))
    common["caveats"] = tuple(notes)  # _quant may have added one
    common.update(layer_plan=plan, state=state, **vision)
    return _with_experts_or_latents(cfg, common, arch, mtype, layers, inter, source)


def _rotary_fraction(cfg: dict, layer_types: list | None) -> float:
    """The share of head_dim the rotary cache covers: partial_rotary_factor, at the top level or (transformers 5)
    in rope_parameters, which may give one per layer type (the largest of the types present is kept); ChatGLM's
    half (vLLM's chatglm.py sets 0.5) and GPT-J's rotary_dim (gpt_j.py: rotary_dim / head_size)."""
    if cfg.get("model_type") == "chatglm":
        return 0.5
    if cfg.get("model_type") == "gptj" and cfg.get("rotary_dim"):
        heads = int(cfg.get("n_head") or cfg.get("num_attention_heads") or 1)
        return int(cfg["rotary_dim"]) / (int(cfg.get("n_embd") or cfg.get("hidden_size")) // heads)
    if cfg.get("partial_rotary_factor"):
        return float(cfg["partial_rotary_factor"])
    rope = cfg.get("rope_parameters")
    if not isinstance(rope, dict):
        return 1.0
    if rope.get("partial_rotary_factor"):
        return float(rope["partial_rotary_factor"])
    present = {str(t) for t in layer_types or ()} or {"full_attention"}
    per_type = [float(v.get("partial_rotary_factor") or 1.0) for k, v in rope.items()
                if isinstance(v, dict) and k in present]
    return max(per_type) if per_type else 1.0


def _layer_windows(cfg: dict, mtype: str, layers: int, plan: tuple[str, ...],
                   layer_types: list | None) -> list[int | None]:
    """Each attention layer's sliding window (None: full attention), as vLLM's model classes set them."""
    sw = cfg.get("sliding_window")
    if plan:  # a hybrid: the attention layers only (full attention in every hybrid vLLM serves)
        return [None] * sum("A" in p for p in plan)
    chunk, nope = cfg.get("attention_chunk_size"), cfg.get("no_rope_layers")
    if mtype in ("llama4", "llama4_text") and chunk and isinstance(nope, list):
        # vLLM's llama4.py: a layer with RoPE (no_rope_layers[i] != 0) attends within chunks of attention_chunk_size
        # (ChunkedLocalAttention), the NoPE ones to the whole sequence. A request holds at most a chunk and the tokens
        # in flight of a chunked layer (ChunkedLocalAttentionSpec): counted as a window of chunk + 1, which holds one
        # block more (never fewer)
        return [int(chunk) + 1 if i < len(nope) and nope[i] != 0 else None for i in range(layers)]
    if layer_types:
        # Cohere2's sliding layers see [pos - window, pos]: vLLM gives them window + 1 (commandr.py, cohere2_moe.py)
        sw_vllm = int(sw) + 1 if sw and mtype in ("cohere2", "cohere2_moe") else sw
        return [int(sw_vllm) if str(t) == "sliding_attention" and sw else None for t in layer_types][:layers]
    if mtype == "gemma2" and sw:
        return [int(sw) if i % 2 == 0 else None for i in range(layers)]
    pattern = cfg.get("sliding_window_pattern", cfg.get("_sliding_window_pattern", 4 if mtype == "exaone4" else None))
    if mtype in ("cohere2", "cohere2_moe") and sw and pattern:
        # transformers' Cohere2Config derives layer_types from it: every pattern-th layer full, the others sliding
        # (seen with window + 1 in vLLM's build of Command R7B's published config, as above)
        return [None if (i + 1) % int(pattern) == 0 else int(sw) + 1 for i in range(layers)]
    if mtype == "exaone4" and sw and pattern:
        # transformers' Exaone4Config: every pattern-th layer full ("LLLG" is 4: L local, G global), the rest sliding
        if isinstance(pattern, str):
            return [None if pattern[i % len(pattern)].upper() == "G" else int(sw) for i in range(layers)]
        return [None if (i + 1) % int(pattern) == 0 else int(sw) for i in range(layers)]
    if mtype in ("qwen2", "qwen3", "qwen2_moe", "qwen3_moe"):
        use = cfg.get("use_sliding_window", False) and sw
        mwl = int(cfg.get("max_window_layers") or layers)
        return [int(sw) if use and i >= mwl else None for i in range(layers)]
    if sw and mtype in ALL_LAYERS_SLIDING:
        return [int(sw)] * layers
    return [None] * layers


def _with_experts_or_latents(cfg: dict, common: dict, arch: str, mtype: str, layers: int, inter: int,
                             source: str) -> ModelArch:
    """The ModelArch with its experts (MoE), its MLA latent cache, or MiniCPM3's latent projections, as the
    architecture (or, for a generic one, its config's fields) says."""
    experts_any = _num_experts(cfg)
    generic = arch not in SUPPORTED
    if arch in MOE or (generic and experts_any and not cfg.get("kv_lora_rank")):
        moe_i = int(cfg.get("moe_intermediate_size") or inter)
        # a shared expert of its own size (Qwen2-MoE), or n shared experts of the experts' size (Ernie 4.5, EXAONE)
        n_shared = int(cfg.get("moe_num_shared_experts") or cfg.get("num_shared_experts")
                       or cfg.get("n_shared_experts") or 0)
        if mtype in ("llama4", "llama4_text"):  # vLLM's Llama4MoE: one shared expert of intermediate_size, always
            n_shared = 1
        shared_i = int(cfg.get("shared_expert_intermediate_size") or cfg.get("shared_intermediate_size") or 0) \
            or n_shared * moe_i
        return ModelArch(**common, num_experts=experts_any,
                         experts_per_tok=int(cfg.get("num_experts_per_tok") or cfg.get("moe_k") or 2),
                         moe_intermediate_size=moe_i, shared_experts=1 if shared_i else 0,
                         shared_expert_intermediate=shared_i, moe_layers=_moe_layers(cfg, layers),
                         dense_layers=int(cfg.get("first_k_dense_replace") or 0))
    if arch in MLA or (generic and cfg.get("kv_lora_rank") and mtype in MLA_MODEL_TYPES):
        return ModelArch(**common, mla=True, kv_lora_rank=_need(cfg, "kv_lora_rank", source),
                         q_lora_rank=cfg.get("q_lora_rank"), qk_nope_head_dim=_need(cfg, "qk_nope_head_dim", source),
                         qk_rope_head_dim=_need(cfg, "qk_rope_head_dim", source), v_head_dim=_need(cfg, "v_head_dim", source),
                         num_experts=int(cfg.get("n_routed_experts") or 0), experts_per_tok=int(cfg.get("num_experts_per_tok") or 0),
                         moe_intermediate_size=int(cfg.get("moe_intermediate_size") or 0),
                         shared_experts=int(cfg.get("n_shared_experts") or 0),
                         dense_layers=int(cfg.get("first_k_dense_replace") or 0))
    if generic and cfg.get("kv_lora_rank") and cfg.get("qk_nope_head_dim"):
        # MiniCPM3: DeepSeek's latent projections, but vLLM caches full K and V per head (not MLA)
        return ModelArch(**common, kv_lora_rank=int(cfg["kv_lora_rank"]), q_lora_rank=cfg.get("q_lora_rank"),
                         qk_nope_head_dim=int(cfg["qk_nope_head_dim"]), qk_rope_head_dim=int(cfg.get("qk_rope_head_dim") or 0),
                         v_head_dim=int(cfg.get("v_head_dim") or cfg["qk_nope_head_dim"]))
    return ModelArch(**common)


@lru_cache(maxsize=1)
def conformance_rows() -> dict[str, dict]:
    """Per architecture, how the estimator compared with vLLM's own model construction (the conformance run,
    tests/conformance.py; written by scripts/gen_arch_table.py)."""
    path = Path(__file__).with_name("conformance.json")
    return json.loads(path.read_text())["architectures"] if path.is_file() else {}


def conformance_matched() -> frozenset[str]:
    """Architectures whose weights and per-layer KV cache the estimator counts as vLLM allocates them."""
    return frozenset(a for a, row in conformance_rows().items() if row["status"] == "matched")


def _conformance_note(arch: str) -> Caveat | None:
    """Where the conformance run found this architecture counted below what vLLM allocates: said, and the
    estimate keeps the large margin of what is not modelled."""
    row = conformance_rows().get(arch)
    if not row or row["status"] != "differs":
        return None
    low = []
    if row["kv_estimate"] < row["kv_vllm"]:
        low.append(f"KV cache {row['kv_estimate']} B per token against vLLM's {row['kv_vllm']}")
    if row["weights_error"] < -0.001:
        low.append(f"weights {row['weights_error']:+.2%}")
    if not low:
        return None
    # the full margin always; no longer lowers confidence once starts of the architecture were measured
    return Caveat(f"'{arch}' counted below what vLLM's own model construction allocates at transformers' default "
                  "config (" + ", ".join(low) + "; docs/architectures.md): the estimate may be optimistic",
                  topic="conformance", until_measured=True)


def _num_experts(cfg: dict) -> int:
    """Routed experts, under the names vLLM reads (ModelArchConfigConvertor.get_num_experts)."""
    for k in ("num_experts", "moe_num_experts", "n_routed_experts", "num_local_experts"):
        v = cfg.get(k)
        if isinstance(v, list):  # a per-layer list: the largest
            v = max(v) if v else 0
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return 0


def _moe_layers(cfg: dict, n: int) -> tuple[bool, ...]:
    """Which decoder layers have experts, by the rule each family's vLLM model code applies."""
    types = cfg.get("mlp_layer_types")
    if isinstance(types, list) and types:  # EXAONE-MoE: "dense" / "sparse" per layer
        return tuple(str(t) in ("sparse", "moe") for t in types[:n])
    if cfg.get("moe_layer_start_index") is not None or cfg.get("moe_layer_interval") is not None:  # Ernie 4.5
        start, end = int(cfg.get("moe_layer_start_index") or 0), cfg.get("moe_layer_end_index")
        end = n - 1 if end is None else int(end)
        step = int(cfg.get("moe_layer_interval") or 1)
        return tuple((i + 1) % step == 0 and start <= i <= end for i in range(n))
    if cfg.get("expert_layer_period"):  # Jamba: experts every period-th layer from the offset
        period, offset = int(cfg["expert_layer_period"]), int(cfg.get("expert_layer_offset") or 0)
        return tuple(i % period == offset for i in range(n))
    if cfg.get("decoder_sparse_step") or cfg.get("mlp_only_layers"):  # Qwen2-MoE / Qwen3-MoE
        step, dense = int(cfg.get("decoder_sparse_step") or 1), set(cfg.get("mlp_only_layers") or ())
        return tuple(i not in dense and (i + 1) % step == 0 for i in range(n))
    return ()


def _kv_heads(cfg: dict, heads: int) -> int:
    """Total KV heads as vLLM reads them: Falcon-style `multi_query` (without the new decoder architecture)
    and GPT-BigCode's is one head; else the first of KV_HEAD_KEYS; else one per query head."""
    if cfg.get("multi_query") and not cfg.get("new_decoder_architecture"):
        return 1
    for k in KV_HEAD_KEYS:
        if isinstance(cfg.get(k), int) and not isinstance(cfg.get(k), bool) and cfg[k] > 0:
            return int(cfg[k])
    return heads


def _head_size(cfg: dict, hidden: int, heads: int) -> int:
    """The attention head size vLLM uses: head_dim when positive, hidden_size_per_head, MiniCPM3-style
    qk_nope + qk_rope where MLA-like fields come without MLA, else hidden / heads."""
    if cfg.get("qk_nope_head_dim") and cfg.get("qk_rope_head_dim") and str(cfg.get("model_type")) not in MLA_MODEL_TYPES:
        return int(cfg["qk_nope_head_dim"]) + int(cfg["qk_rope_head_dim"])  # its attention runs on q/k heads
    if isinstance(cfg.get("head_dim"), int) and cfg["head_dim"] > 0:
        return int(cfg["head_dim"])
    if cfg.get("hidden_size_per_head"):
        return int(cfg["hidden_size_per_head"])
    return hidden // heads


def _rope_positions(cfg: dict) -> int:
    """Positions held by vLLM's rotary cos/sin caches: linear and dynamic scaling build theirs for
    max_position x factor, YaRN for original_max_position x factor, Phi-3's LongRoPE for max_position plus
    original_max_position (rotary_embedding/*.py); Gemma 3's
    sliding layers keep a second, unscaled cache (rope_local_base_freq)."""
    # DBRX's max_seq_len (dbrx.py), ChatGLM's seq_length (chatglm.py), GPT-J's n_positions (its config's alias)
    pos = int(cfg.get("max_position_embeddings") or cfg.get("max_seq_len") or cfg.get("seq_length")
              or cfg.get("n_positions") or 0)
    rope = cfg.get("rope_scaling") or {}
    n = pos
    if isinstance(rope, dict):
        kind = rope.get("rope_type", rope.get("type"))
        factor = float(rope.get("factor") or 1.0)
        if kind in ("linear", "dynamic"):
            n = int(pos * factor)
        elif kind in ("longrope", "su"):  # Phi-3: a short cache (original positions) and a long one, concatenated
            n = pos + int(rope.get("original_max_position_embeddings") or cfg.get("original_max_position_embeddings")
                          or pos)
        elif kind == "yarn":
            n = int(int(rope.get("original_max_position_embeddings") or pos) * factor)
    kinds = {str(t) for t in cfg.get("layer_types") or ()}
    per_type = isinstance(cfg.get("rope_parameters"), dict) and "sliding_attention" in cfg["rope_parameters"]
    if (cfg.get("rope_local_base_freq") or per_type) and {"sliding_attention", "full_attention"} <= kinds \
            and not str(cfg.get("model_type", "")).startswith("gemma4"):  # Gemma 4's two: weights._rope
        n += pos  # a second cache for the sliding layers (only where both kinds of layer are built)
    return n


def _vision(cfg: dict, text_hidden: int | None) -> dict:
    """The vision tower's shapes from vision_config (ViT blocks: attention 4 d^2, MLP 2 d I), with the
    projector into the language model (merged patches d m^2 -> d m^2 -> hidden), the patch embedding and
    learned position embeddings, and how vLLM's profile run sizes the tower's dummy batch (vision_layout)."""
    vc = cfg.get("vision_config")
    if not isinstance(vc, dict):
        return {}
    vc = with_defaults(vc)
    d = int(vc.get("embed_dim") or vc.get("hidden_size") or vc.get("width") or 0)
    depth = int(vc.get("depth") or vc.get("num_hidden_layers") or vc.get("layers") or 0)
    if not d or not depth:
        return {}
    inter = int(vc.get("intermediate_size") or (vc.get("mlp_ratio") or 4) * d)
    merge = int(vc.get("spatial_merge_size") or 1)
    h = int(text_hidden or d)
    patch = int(vc.get("patch_size") or 14)
    side = int(vc.get("image_size") or 0) // patch  # patches per side of a fixed-size image (none: any size)
    dm = d * merge * merge
    gated = str(vc.get("hidden_act", "")).lower() in ("silu", "swish")  # SwiGLU MLP (Qwen2.5-VL): gate, up, down
    mlp = (3 if gated else 2) * d * inter
    params = (depth * (4 * d * d + mlp) + dm * dm + dm * h + 3 * patch * patch * int(vc.get("temporal_patch_size") or 1) * d
              + side * side * d)
    out = dict(vision_hidden=d, vision_layers=depth, vision_intermediate=inter, vision_gated=gated,
               vision_merge=merge, vision_params=params,
               vision_pixels=3 * patch * patch * int(vc.get("temporal_patch_size") or 1))
    return {**out, **_vision_layout(cfg, side)}


def _vision_layout(cfg: dict, side: int) -> dict:
    """How vLLM 0.24's dummy inputs for the encoder's profile run look, per architecture (models/*.py, the
    DummyInputsBuilder and get_num_image_tokens of each): Qwen2-VL and Qwen2.5-VL profile videos, whose
    tokens grow with max_model_len; Gemma 3 images are resized to image_size and pooled to
    mm_tokens_per_image tokens (pan-and-scan off, vLLM's default); LLaVA-1.5 images are image_size
    squares of (image_size / patch)^2 tokens, the tower running one class patch more."""
    arch = (cfg.get("architectures") or [""])[0]
    if VISION_LAYOUTS.get(arch) == "video":
        return dict(vision_layout="video")
    if arch == "Gemma3ForConditionalGeneration" and side:
        return dict(vision_layout="image", vision_item_tokens=int(cfg.get("mm_tokens_per_image") or 256),
                    vision_item_patches=side * side)
    if arch == "LlavaForConditionalGeneration" and side:
        default = cfg.get("vision_feature_select_strategy", "default") == "default"
        return dict(vision_layout="image", vision_item_tokens=side * side + (0 if default else 1),
                    vision_item_patches=side * side + 1)
    return {}


def load_config_dir(path: str | Path) -> dict:
    """Read DIR/config.json (or a config.json path) with clear errors."""
    p = Path(path)
    f = p / "config.json" if p.is_dir() else p
    if not p.exists():
        raise ModelConfigError(f"model path '{path}' does not exist.", hint="Give a Hugging Face model folder with a config.json.")
    if not f.is_file():
        raise ModelConfigError(f"'{p}' has no config.json.", hint="Give a Hugging Face model folder with a config.json.")
    try:
        return json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelConfigError(f"{f}: malformed JSON ({e}).") from None
