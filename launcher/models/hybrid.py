"""Hybrid attention/state-space models: which layers keep a per-request state, and how large it is.

vLLM 0.24 keeps each recurrent layer's state in the KV cache pool as one "page" per request
(vllm/v1/kv_cache_interface.py MambaSpec): the conv state plus the temporal (SSM / delta-rule) state,
with the shapes each model class returns from get_mamba_state_shape_from_config
(model_executor/layers/mamba/mamba_utils.py MambaStateShapeCalculator):
  mamba2 (Mamba2, Granite-4.0-H, NemotronH, Bamba, Falcon-H1, Zamba2):
      conv (intermediate + 2 n_groups d_state) x (d_conv - 1); temporal heads x head_dim x d_state
  gated delta net (Qwen3-Next, Qwen3.5): conv (2 k_heads k_dim + v_heads v_dim) x (kernel - 1);
      temporal v_heads x v_dim x k_dim
  mamba1 (Jamba, Mamba): conv d_inner x (d_conv - 1); temporal d_inner x d_state
  short conv (LFM2): conv hidden x (L_cache - 1)
Both states are held in the model's dtype unless --mamba-ssm-cache-dtype says otherwise (NemotronH
defaults its temporal state to float32). Layers are described as strings of parts: A attention,
S state mixer, F feed-forward (MLP or MoE).
"""
from __future__ import annotations

from dataclasses import dataclass

STATE_TYPES = {"mamba", "mamba2", "linear_attention", "conv", "short_conv", "linear"}
# vLLM's model classes that keep a per-request recurrent state: those implementing IsHybrid, and the attention-free
# Mamba ones (IsAttentionFree). What a model is comes from its class, never from a part of its name (a name with
# "minimax" in it took MiniMax-M2, full attention in every layer, for a linear-attention hybrid). Read from vLLM
# 0.32.0's model_executor/models and vllm/models by scripts/scan_vllm_state_archs.py (tests/test_hybrid_archs.py holds
# it equal to the installed vLLM), plus EARLIER_STATE_ARCHS.
STATE_ARCHS = frozenset({
    "BailingMoeV2_5ForCausalLM", "BailingMoeV3ForCausalLM", "BailingMoeV3VLForConditionalGeneration", "ColBERTLfm2Model",
    "ColQwen3_5", "FalconH1ForCausalLM", "Glm5NextForCausalLM", "Glm5NextForConditionalGeneration",
    "GraniteMoeHybridForCausalLM", "InternS2MobiusForConditionalGeneration", "InternS2PreviewForConditionalGeneration",
    "JambaForCausalLM", "JambaForSequenceClassification", "KimiK3ForConditionalGeneration", "KimiLinearForCausalLM",
    "Lfm2ForCausalLM", "Lfm2MoeForCausalLM", "Lfm2VlForConditionalGeneration", "MiniCPMV4_6ForConditionalGeneration",
    "MiniCPMV4_7ForConditionalGeneration", "NemotronHForCausalLM", "NemotronHPuzzleForCausalLM",
    "NemotronH_Nano_Omni_Reasoning_V3", "NemotronH_Nano_VL_V2", "NemotronH_Omni_Reasoning_V3",
    "NemotronH_Super_Omni_Reasoning_V3", "OlmoHybridForCausalLM", "Qwen3NextForCausalLM", "Qwen3_5ForCausalLM",
    "Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForCausalLM", "Qwen3_5MoeForConditionalGeneration",
    "Qwen4ExpForCausalLM", "Qwen4ExpForConditionalGeneration", "Zamba2ForCausalLM",
    # IsAttentionFree
    "FalconMambaForCausalLM", "Mamba2ForCausalLM", "MambaForCausalLM",
})
# Hybrid classes of earlier releases the estimator plans for, gone from vLLM 0.32.0 (each `class X(..., IsHybrid...)`
# in that release's model_executor/models): bamba.py, minimax_text_01.py (MiniMax-Text-01 and -M1), plamo2.py
EARLIER_STATE_ARCHS = frozenset({"BambaForCausalLM", "MiniMaxText01ForCausalLM", "MiniMaxM1ForCausalLM",
                                 "Plamo2ForCausalLM"})


@dataclass(frozen=True)
class StateShape:
    kind: str  # mamba2 | gdn | mamba1 | short_conv | unknown
    conv: int  # elements of the conv state at tensor parallel 1
    temporal: int  # elements of the temporal state at tensor parallel 1
    temporal_fp32: bool = False
    mixer_params: int = 0  # parameters of one state mixer (projections, conv, norm)
    mixer_fp32: int = 0  # of those, the ones vLLM keeps in float32 whatever the model's dtype (A, A_log)
    chunk: int = 256  # the mamba kernels' chunk size (prefix caching of the state aligns blocks to it)

    def page_bytes(self, dtype_bytes: int, tp: int = 1) -> int:
        t_bytes = 4 if self.temporal_fp32 else dtype_bytes
        return (self.conv // tp) * dtype_bytes + (self.temporal // tp) * t_bytes


def _get(cfg: dict, *keys: str, default: object = None) -> object:
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return default


def is_hybrid(cfg: dict, arch: str, mtype: str) -> bool:
    """Whether the model keeps a recurrent state: its vLLM class says so, or its config's layer types name one."""
    types = cfg.get("layer_types") or cfg.get("layers_block_type") or []
    return arch in STATE_ARCHS or arch in EARLIER_STATE_ARCHS or any(str(t).lower() in STATE_TYPES for t in types)


def layer_plan(cfg: dict, mtype: str, layers: int) -> tuple[str, ...]:
    """Each decoder layer as its parts (A, S, F)."""
    pattern = cfg.get("hybrid_override_pattern")
    if isinstance(pattern, str) and pattern:  # NemotronH: M mamba, * attention, - MLP, E MoE; one part each
        return tuple({"M": "S", "*": "A", "-": "F", "E": "F"}.get(c, "F") for c in pattern)
    types = cfg.get("layer_types") or cfg.get("layers_block_type")
    if isinstance(types, list) and types:
        return tuple(("S" if str(t).lower() in STATE_TYPES else "A") + "F" for t in types[:layers])
    interval = cfg.get("full_attention_interval")
    if isinstance(interval, int) and interval > 0:  # Qwen3-Next: full attention in every interval-th layer
        # (its config's layer_types: "full_attention" where (i + 1) % interval == 0, else "linear_attention")
        return tuple(("A" if (i + 1) % interval == 0 else "S") + "F" for i in range(layers))
    if mtype.startswith("lfm2") and "full_attn_idxs" in cfg:  # LFM2: transformers' Lfm2Config builds layer_types
        # from it ("full_attention" at those indices, "conv" elsewhere; every layer attention when it is null)
        idx = cfg.get("full_attn_idxs")
        idx = set(range(layers)) if idx is None else set(idx)
        return tuple(("A" if i in idx else "S") + "F" for i in range(layers))
    if "attn_layer_indices" in cfg:  # Bamba
        idx = set(cfg.get("attn_layer_indices") or [])
        return tuple(("A" if i in idx else "S") + "F" for i in range(layers))
    if "attn_layer_period" in cfg:  # Jamba
        period, offset = int(cfg["attn_layer_period"]), int(cfg.get("attn_layer_offset") or 0)
        return tuple(("A" if i % period == offset else "S") + "F" for i in range(layers))
    if mtype.startswith("falcon_h1"):  # attention and the SSM side by side in every layer
        return ("ASF",) * layers
    if mtype in ("mamba", "mamba2", "falcon_mamba"):
        return ("S",) * layers
    return ("SF",) * layers  # unknown layout: every layer a state mixer (noted as extrapolated)


def state_shape(cfg: dict, mtype: str, hidden: int) -> StateShape:
    """The per-layer state of one request, as vLLM's model class computes it."""
    if cfg.get("linear_num_value_heads"):  # gated delta net
        nk, nv = int(cfg["linear_num_key_heads"]), int(cfg["linear_num_value_heads"])
        dk, dv = int(cfg["linear_key_head_dim"]), int(cfg["linear_value_head_dim"])
        k = int(_get(cfg, "linear_conv_kernel_dim", default=4))
        conv_dim = 2 * nk * dk + nv * dv
        params = hidden * (2 * nk * dk + 2 * nv * dv) + hidden * 2 * nv + conv_dim * k + 2 * nv + dv + nv * dv * hidden
        return StateShape("gdn", conv_dim * (k - 1), nv * dv * dk, mixer_params=params, mixer_fp32=nv)
    heads = _get(cfg, "mamba_n_heads", "mamba_num_heads")
    if heads is None and mtype == "mamba2":
        heads = cfg.get("num_heads")
    if heads:  # mamba2
        heads = int(heads)
        hd = int(_get(cfg, "mamba_d_head", "mamba_head_dim", "head_dim", default=64))
        ds = int(_get(cfg, "mamba_d_state", "ssm_state_size", "state_size", default=128))
        ng = int(_get(cfg, "mamba_n_groups", "n_groups", "mamba_num_groups", default=1))
        k = int(_get(cfg, "mamba_d_conv", "conv_kernel", default=4))
        inter = int(_get(cfg, "mamba_d_ssm", default=0) or heads * hd)
        conv_dim = inter + 2 * ng * ds
        params = hidden * (inter + conv_dim + heads) + conv_dim * (k + 1) + 3 * heads + inter + inter * hidden
        fp32 = mtype == "nemotron_h" and str(cfg.get("mamba_ssm_cache_dtype", "float32")) == "float32"
        return StateShape("mamba2", conv_dim * (k - 1), heads * hd * ds, temporal_fp32=fp32, mixer_params=params,
                          mixer_fp32=heads, chunk=int(_get(cfg, "mamba_chunk_size", "chunk_size", default=256)))
    if mtype in ("mamba", "jamba", "falcon_mamba") or cfg.get("mamba_d_state") or cfg.get("state_size"):  # mamba1
        expand = int(_get(cfg, "mamba_expand", "expand", default=2))
        di = int(_get(cfg, "mamba_d_inner", default=0)
                 or (cfg.get("intermediate_size") if mtype in ("mamba", "falcon_mamba") else 0)
                 or expand * hidden)
        ds = int(_get(cfg, "mamba_d_state", "state_size", default=16))
        k = int(_get(cfg, "mamba_d_conv", "conv_kernel", default=4))
        rank = int(_get(cfg, "mamba_dt_rank", "time_step_rank", default=0) or -(-hidden // 16))
        params = hidden * 2 * di + di * (k + 1) + di * (rank + 2 * ds) + rank * di + di + di * ds + di + di * hidden
        if mtype == "jamba":  # RMSNorms with weights on dt, B and C (FalconMamba's have none)
            params += rank + 2 * ds
        return StateShape("mamba1", di * (k - 1), di * ds, mixer_params=params, mixer_fp32=di * ds)
    if cfg.get("conv_L_cache"):  # LFM2 short convolution
        k = int(cfg["conv_L_cache"])
        return StateShape("short_conv", hidden * (k - 1), 0, mixer_params=hidden * 3 * hidden + hidden * k + hidden * hidden)
    # a linear-attention or other recurrent layer this module does not know: a head_dim x head_dim
    # state per head in float32 plus a conv state, deliberately large
    return StateShape("unknown", 3 * hidden * 3, hidden * 256, temporal_fp32=True, mixer_params=4 * hidden * hidden)
