"""The estimator's static terms against vLLM's own model construction (tests/vllm_meta.py builds each model on the
meta device in a worker that imports vLLM once).

For each architecture: parameter and buffer bytes (vLLM) against `weights_bytes` (estimator), and the per-layer
KV cache (bytes per token and sliding window of every attention layer that has its own cache; vLLM's
KVCacheSpec) against the estimator's per-layer layout. Used by tests/test_conformance.py and by
scripts/gen_arch_table.py, which writes docs/architectures.md from the same run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("vllm_meta.py")
WEIGHT_TOLERANCE = 0.001  # 0.1%
# a chunked local layer (Llama 4) is compared as the estimate counts it: a window of attention_chunk_size + 1
KV_SPECS = ("FullAttentionSpec", "SlidingWindowSpec", "MLAAttentionSpec", "ChunkedLocalAttentionSpec")
STATE_SPECS = ("MambaSpec",)

# Configs of dialects the generic path once read wrong (GPU starts, 2026-12): each must match vLLM exactly.
DIALECTS = {
    # multi-query attention spelled `multi_query` (Falcon-7B's config; GPT-BigCode's is the same flag)
    "falcon-multi-query": {"architectures": ["FalconForCausalLM"], "model_type": "falcon", "hidden_size": 4544,
                           "num_attention_heads": 71, "num_hidden_layers": 4, "multi_query": True,
                           "new_decoder_architecture": False, "parallel_attn": True, "bias": False,
                           "vocab_size": 65024, "alibi": False, "dtype": "bfloat16", "max_position_embeddings": 2048},
    # a non-gated MLP with relu2 (Nemotron-4 / Minitron)
    "nemotron-relu2": {"architectures": ["NemotronForCausalLM"], "model_type": "nemotron", "hidden_size": 3072,
                       "intermediate_size": 9216, "num_attention_heads": 24, "num_key_value_heads": 8,
                       "head_dim": 128, "num_hidden_layers": 4, "hidden_act": "relu2", "vocab_size": 256000,
                       "max_position_embeddings": 4096, "partial_rotary_factor": 0.5, "tie_word_embeddings": False,
                       "dtype": "bfloat16", "norm_eps": 1e-5, "rope_theta": 10000},
    # MiniMax-M2 (shapes of its published config): full attention in every layer; a name with "minimax" in it was
    # taken for MiniMax-Text-01's linear-attention hybrid (KV 62% low)
    "minimax-m2-full-attention": {"architectures": ["MiniMaxM2ForCausalLM"], "model_type": "minimax_m2",
                                  "vocab_size": 200064, "hidden_size": 3072, "intermediate_size": 1536,
                                  "num_hidden_layers": 4, "num_attention_heads": 48, "num_key_value_heads": 8,
                                  "head_dim": 128, "rotary_dim": 64, "num_local_experts": 256, "num_experts_per_tok": 8,
                                  "max_position_embeddings": 196608, "shared_intermediate_size": 0,
                                  "hidden_act": "silu", "qk_norm_type": "per_layer", "use_qk_norm": True,
                                  "scoring_func": "sigmoid", "use_routing_bias": True, "rope_theta": 5000000,
                                  "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "dtype": "bfloat16"},
    # Arcee AFM-4.5B's shapes: up and down projections with relu2, no gate (weights were +18%); vLLM 0.32 builds it
    # through its Transformers backend (no rotary cos/sin cache)
    "arcee-relu2": {"architectures": ["ArceeForCausalLM"], "model_type": "arcee", "hidden_size": 2560,
                    "intermediate_size": 18432, "num_attention_heads": 20, "num_key_value_heads": 4, "head_dim": 128,
                    "num_hidden_layers": 4, "hidden_act": "relu2", "vocab_size": 128004,
                    "max_position_embeddings": 65536, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                    "tie_word_embeddings": False, "dtype": "bfloat16", "attention_bias": False, "mlp_bias": False},
    # Qwen3-Next's shapes with full_attention_interval and no layer_types: one full-attention layer in four (every
    # layer was taken for linear attention: weights 0.22% low, no KV cache)
    "qwen3-next-interval": {"architectures": ["Qwen3NextForCausalLM"], "model_type": "qwen3_next", "hidden_size": 2048,
                            "intermediate_size": 5120, "num_hidden_layers": 8, "num_attention_heads": 16,
                            "num_key_value_heads": 2, "head_dim": 256, "full_attention_interval": 4,
                            "linear_num_value_heads": 32, "linear_num_key_heads": 16, "linear_key_head_dim": 128,
                            "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4, "num_experts": 32,
                            "num_experts_per_tok": 10, "moe_intermediate_size": 512,
                            "shared_expert_intermediate_size": 512, "decoder_sparse_step": 1, "norm_topk_prob": True,
                            "partial_rotary_factor": 0.25, "vocab_size": 151936, "max_position_embeddings": 262144,
                            "rope_theta": 10000000, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
                            "dtype": "bfloat16", "mlp_only_layers": [], "hidden_act": "silu"},
    # Nemotron-H 8B's shapes: its MLP layers ('-') are up and down with relu2 (counted with a gate: +7%)
    "nemotron-h-relu2-mlp": {"architectures": ["NemotronHForCausalLM"], "model_type": "nemotron_h", "hidden_size": 4096,
                             "intermediate_size": 21504, "num_hidden_layers": 8, "hybrid_override_pattern": "M-M-M*-M",
                             "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                             "mamba_num_heads": 128, "mamba_head_dim": 64, "ssm_state_size": 128, "n_groups": 8,
                             "conv_kernel": 4, "chunk_size": 128, "mamba_hidden_act": "silu", "mlp_hidden_act": "relu2",
                             "vocab_size": 131072, "max_position_embeddings": 8192, "layer_norm_epsilon": 1e-5,
                             "tie_word_embeddings": False, "dtype": "bfloat16", "attention_bias": False,
                             "mlp_bias": False, "use_bias": False, "use_conv_bias": True},
    # GPT-2's published config (model_type gpt2, n_* names): learned positions, biases everywhere, LayerNorm biases
    "gpt2-learned-positions": {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 768,
                               "n_head": 12, "n_layer": 4, "n_positions": 1024, "n_ctx": 1024, "n_inner": None,
                               "activation_function": "gelu_new", "vocab_size": 50257, "dtype": "float32",
                               "layer_norm_epsilon": 1e-5},
    # OPT-350m's published config: a 512-wide embedding projected in and out of the 1024-wide layers, the
    # LayerNorm after each block (do_layer_norm_before false) and so no final norm
    "opt-350m-projections": {"architectures": ["OPTForCausalLM"], "model_type": "opt", "hidden_size": 1024,
                             "word_embed_proj_dim": 512, "ffn_dim": 4096, "num_attention_heads": 16,
                             "num_hidden_layers": 4, "max_position_embeddings": 2048, "vocab_size": 50272,
                             "do_layer_norm_before": False, "activation_function": "relu", "enable_bias": True,
                             "dtype": "float16"},
}


@dataclass
class Row:
    """One architecture's comparison."""

    id: str
    architecture: str
    status: str  # matched | differs | not built | no config
    reason: str = ""
    weights_vllm: int = 0
    weights_estimate: int = 0
    kv_vllm: int = 0  # bytes per token summed over the layers with their own cache
    kv_estimate: int = 0
    layers_match: bool = False
    state_layers: int = 0
    state_match: bool | None = None  # recurrent-state layers only: the state bytes per layer and their count

    @property
    def weights_error(self) -> float:
        return (self.weights_estimate - self.weights_vllm) / self.weights_vllm if self.weights_vllm else 0.0


def run_worker(jobs: list[dict], python: str | None = None, timeout_s: float = 600,
               env_extra: dict | None = None) -> dict[str, dict]:
    """Results by job id, from one worker process (vLLM imported once). env_extra: e.g.
    {"CONFORMANCE_AVX512_BF16": "1"} to have the worker answer as a CPU with AVX-512 BF16 would."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_TARGET_DEVICE="cpu", **(env_extra or {}))
    out = subprocess.run([python or sys.executable, str(WORKER)], input="".join(json.dumps(j) + "\n" for j in jobs),
                         capture_output=True, text=True, timeout=timeout_s, env=env, cwd=str(ROOT))
    res = {}
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            res[r["id"]] = r
    if not res:
        raise RuntimeError(f"the vLLM worker gave nothing: {out.stderr[-2000:]}")
    return res


def registry(python: str | None = None) -> dict:
    return run_worker([{"id": "_registry", "registry": True}], python)["_registry"]


def all_jobs(archs: list[str]) -> list[dict]:
    jobs = [{"id": a, "generate": a} for a in archs]
    jobs += [{"id": k, "config": v} for k, v in DIALECTS.items()]
    return jobs


def estimator_layers(m) -> list[tuple[int, int]]:
    """(bytes per token, sliding window or 0) of each attention layer with its own cache, as the estimator counts."""
    from launcher.estimator.kv import layer_token_bytes, own_cache_windows

    return sorted((layer_token_bytes(m, 1, window=w), w or 0) for w in own_cache_windows(m))


def _state_bytes(layer: dict) -> int:
    """Bytes of one recurrent-state layer's per-request state, from vLLM's MambaSpec shapes and dtypes."""
    sizes = {"torch.float32": 4, "torch.bfloat16": 2, "torch.float16": 2, "torch.float8_e4m3fn": 1}
    total = 0
    for shape, dtype in zip(layer["state_shapes"], layer["state_dtypes"]):
        n = 1
        for d in shape:
            n *= d
        total += n * sizes.get(dtype, 2)
    return total


def _installed_version() -> tuple[int, ...]:
    """The release the worker builds with: the installed vLLM (its version read without importing it)."""
    from launcher.engines import vllm as vllm_engine

    inst = vllm_engine.installed()
    return vllm_engine.parse_version(inst.version) if inst else (0, 32, 0)


def compare(job_id: str, r: dict) -> Row:
    """The comparison for one worker result (the estimator imported here, never vLLM)."""
    from launcher.errors import LauncherError
    from launcher.estimator.core import as_built
    from launcher.estimator.weights import weights_bytes
    from launcher.models.config import from_config

    arch = (r.get("config") or {}).get("architectures", [job_id])[0] if r.get("config") else job_id
    if not r.get("ok"):
        status = "no config" if r.get("stage") == "no-config" else "not built"
        return Row(job_id, arch, status, r.get("error", ""))
    cfg = r.get("config") or DIALECTS.get(job_id)
    vllm_layers = sorted((x["bytes_per_token"], x.get("spec_sliding_window") or
                          (x["spec_chunk"] + 1 if x.get("spec_chunk") else 0)) for x in r["layers"]
                         if x.get("spec") in KV_SPECS and not x.get("kv_sharing_target_layer_name"))
    state = [x for x in r["layers"] if x.get("spec") in STATE_SPECS]
    other = sorted({x.get("spec") or x.get("spec_error", "?") for x in r["layers"]
                    if x.get("spec") not in KV_SPECS + STATE_SPECS})
    row = Row(job_id, arch, "differs", weights_vllm=r["param_bytes"] + r["buffer_bytes"],
              kv_vllm=sum(b for b, _ in vllm_layers), state_layers=len(state))
    try:
        m = from_config(cfg)
    except LauncherError as e:
        row.reason = f"the estimator refuses its config: {e}"
        return row
    except Exception as e:  # noqa: BLE001 - a crash of the estimator on a valid config is a finding
        row.reason = f"the estimator fails on its config: {type(e).__name__}: {e}"
        return row
    row.weights_estimate = weights_bytes(as_built(m, _installed_version()))  # as the release that built it
    mine = estimator_layers(m)
    row.kv_estimate = sum(b for b, _ in mine)
    row.layers_match = mine == vllm_layers
    why = []
    if abs(row.weights_error) > WEIGHT_TOLERANCE:
        why.append(f"weights {row.weights_error:+.2%}")
    if not row.layers_match:
        why.append(f"KV per token {row.kv_estimate} vs vLLM {row.kv_vllm}" if row.kv_estimate != row.kv_vllm
                   else "KV per-layer layout (sliding windows) differs")
    if other:
        why.append("cache specs not compared: " + ", ".join(other))
    if state:
        vllm_state = sorted({_state_bytes(x) for x in state})
        mine_state = m.state.page_bytes(m.dtype_bytes) if m.state is not None else 0
        row.state_match = vllm_state == [mine_state] and len(state) == m.state_layers
        if not row.state_match:
            why.append(f"recurrent state per layer {mine_state} B x {m.state_layers} vs vLLM "
                       f"{'/'.join(map(str, vllm_state))} B x {len(state)}")
    row.status = "matched" if not why else "differs"
    row.reason = "; ".join(why)
    return row


def run_all(python: str | None = None, raw: dict | None = None) -> tuple[dict, list[Row]]:
    """The registry and every comparison, in one worker run (vLLM imported once). raw: filled with the worker's
    results by id (each generated config included)."""
    jobs = [{"id": "_registry", "registry": True, "build_text": True}]
    jobs += [{"id": k, "config": v} for k, v in DIALECTS.items()]
    res = run_worker(jobs, python)
    reg = {k: res["_registry"][k] for k in ("text", "multimodal")}
    if raw is not None:
        raw.update(res)
    rows = [compare(j["id"], res.get(j["id"], {"ok": False, "stage": "build", "error": "no result"}))
            for j in all_jobs(reg["text"])]
    return reg, rows


def to_json(rows: list[Row]) -> list[dict]:
    return [asdict(r) | {"weights_error": r.weights_error} for r in rows]


# ---- published configs ------------------------------------------------------------------------------------------
# config.json files as their publishers wrote them (tests/published_configs/*.json, each naming its source), shrunk in
# layer count only: both vLLM and the estimator read the same shrunk config.
PUBLISHED = ROOT / "tests" / "published_configs"
LAYER_KEYS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers")
SHRUNK_LAYERS = 8  # keeps a full period of every layer pattern here (Gemma 3's 6, Jamba's 8, Qwen3-Next's 4)


def published() -> dict[str, dict]:
    """Every fixture by id (its file name): {"source", "config", ...}."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(PUBLISHED.glob("*.json"))}


def shrink(cfg: dict, layers: int = SHRUNK_LAYERS) -> dict:
    """The config with its first `layers` layers: the layer count lowered, every per-layer list or pattern string
    (a value as long as the layer count: layer_types, a hybrid pattern) cut to the same length, lists of layer
    indices kept below it; every other key as published. Nested text_config too."""
    out = dict(cfg)
    if isinstance(out.get("text_config"), dict):
        out["text_config"] = shrink(out["text_config"], layers)
    key = next((k for k in LAYER_KEYS if isinstance(out.get(k), int) and not isinstance(out.get(k), bool)), None)
    if key is None or out[key] <= layers:
        return out
    n = out[key]
    out[key] = layers
    for k, v in cfg.items():
        if k == key or k == "text_config":
            continue
        per_layer = isinstance(v, list) or (isinstance(v, str) and k.endswith("pattern"))  # a hybrid's "M-M*..."
        if per_layer and len(v) == n:
            out[k] = v[:layers]
        elif isinstance(v, list) and "layer" in k and v and all(isinstance(i, int) and not isinstance(i, bool)
                                                                and 0 <= i < n for i in v):
            out[k] = [i for i in v if i < layers]
    return out


def run_published(python: str | None = None, ids: list[str] | None = None) -> list[Row]:
    """Each published fixture, shrunk, built by vLLM on the meta device and compared (one worker run)."""
    fixtures = published()
    jobs = [{"id": k, "config": shrink(v["config"])} for k, v in fixtures.items() if ids is None or k in ids]
    res = run_worker(jobs, python, timeout_s=1200)
    return [compare(j["id"], res.get(j["id"], {"ok": False, "stage": "build", "error": "no result"})
                    | ({"config": j["config"]} if res.get(j["id"], {}).get("ok") else {})) for j in jobs]
