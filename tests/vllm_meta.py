"""What vLLM itself allocates for a model: its own model class built on the meta device (no weights, no GPU),
with the CPU build of vLLM the tests install.

Run as a worker: `python tests/vllm_meta.py < jobs.jsonl > results.jsonl`, one JSON object per line in and out.
A job is {"id", "config": {...config.json...}, "max_model_len"?}; a result is
  {"id", "ok": true, "param_bytes", "buffer_bytes", "dtype", "layers": [{"name", "kind", "num_kv_heads",
   "head_size", "sliding_window", "shared_with", "bytes_per_token", "dtype"}], "seconds"}
or {"id", "ok": false, "stage": "config"|"build"|"kv", "error": "one line"}.
vLLM is imported once for all jobs (the import is most of the time). Nothing here is imported by the launcher.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
import time
import traceback

# a local config.json: never ask the Hub (read when huggingface_hub is imported, so set before anything imports it)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# what a model built in memory may take here (the meta device holds nothing): its parameters are allocated, never
# written, so the pages stay unbacked (Apertus at transformers' defaults, 4.3 GB allocated: 0.64 GB resident)
IN_MEMORY_LIMIT = 8 << 30


def _rough_bytes(config: dict) -> int:
    """An upper bound of a 16-bit model's bytes from its config: embedding and head, and 16 x hidden² a layer."""
    h = int(config.get("hidden_size") or config.get("n_embed") or config.get("n_embd") or config.get("d_model") or 0)
    layers = int(config.get("num_hidden_layers") or config.get("n_layer") or config.get("num_layers") or 0)
    vocab = int(config.get("vocab_size") or 0)
    return 2 * (2 * vocab * h + layers * 16 * h * h) if h and layers else IN_MEMORY_LIMIT + 1


def _one_line(e: BaseException) -> str:
    """The error on one line (a validation error's first complaint included)."""
    lines = [x.strip() for x in f"{type(e).__name__}: {e}".splitlines() if x.strip()]
    return " | ".join(lines[:3])[:300]


class Builder:
    """vLLM imported once; each model built under its own config on the meta device."""

    def __init__(self):
        os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        import torch
        from vllm.config import set_current_vllm_config
        from vllm.distributed import (destroy_model_parallel, init_distributed_environment,
                                      initialize_model_parallel)
        from vllm.engine.arg_utils import EngineArgs
        from vllm.model_executor.model_loader.utils import initialize_model

        from vllm.model_executor.models import registry as vllm_registry

        # vLLM inspects a model class it has not cached in a fresh interpreter (to keep CUDA out of the parent):
        # 17-20 s each here, and there is no CUDA on the meta device to keep out
        vllm_registry._run_in_subprocess = lambda fn: fn()
        _host_as_forced(torch)
        _gpu_cache_dtypes()
        self.torch, self.EngineArgs, self.initialize_model = torch, EngineArgs, initialize_model
        self.set_config = set_current_vllm_config
        self.init_dist, self.init_mp, self.destroy_mp = (init_distributed_environment, initialize_model_parallel,
                                                         destroy_model_parallel)
        self.dist_ready = False
        self.mp_ready = False

    def build(self, config: dict, max_model_len: int = 1024, lora: dict | None = None) -> dict:
        """`lora` ({"max_loras", "max_lora_rank"}): also wrap the model as --enable-lora does and report the
        bytes of the adapters' stacked buffers, per wrapped module kind."""
        torch = self.torch
        lora_args = ({"enable_lora": True, "max_loras": lora.get("max_loras", 1),
                      "max_lora_rank": lora.get("max_lora_rank", 16)} if lora else {})
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "config.json"), "w") as fh:
                json.dump(config, fh)
            try:
                vc = self.EngineArgs(model=d, load_format="dummy", skip_tokenizer_init=True, max_model_len=max_model_len,
                                     enforce_eager=True, **lora_args).create_engine_config()
            except BaseException as e:  # noqa: BLE001 - a config vLLM refuses is a result, not a crash
                return {"ok": False, "stage": "config", "error": _one_line(e)}
            old = torch.get_default_dtype()
            try:
                with self.set_config(vc):
                    if not self.dist_ready:
                        self.init_dist(world_size=1, rank=0, local_rank=0,
                                       distributed_init_method=f"tcp://127.0.0.1:{_free_port()}", backend="gloo")
                        self.dist_ready = True
                    if self.mp_ready:
                        self.destroy_mp()
                    self.init_mp(1, 1)
                    self.mp_ready = True
                    torch.set_default_dtype(vc.model_config.dtype)
                    try:
                        model = self._construct(vc, "meta")
                    except NotImplementedError as e:
                        # a class that computes a buffer from data at construction (BLOOM's ALiBi slopes) cannot be
                        # built on the meta device: a small one is built in memory instead
                        if "meta tensor" not in str(e) or _rough_bytes(config) > IN_MEMORY_LIMIT:
                            raise
                        model = self._construct(vc, "cpu")
                    layers = self._kv_layers(vc)
                    params = sum(t.numel() * t.element_size() for t in model.parameters())
                    buffers = sum(t.numel() * t.element_size() for t in _own_buffers(model))
                    adapters = self._lora_buffers(model, vc) if lora else None
            except BaseException as e:  # noqa: BLE001
                return {"ok": False, "stage": "build", "error": _one_line(e),
                        "where": traceback.format_exc().strip().splitlines()[-3][:200]}
            finally:
                torch.set_default_dtype(old)
        out = {"ok": True, "param_bytes": params, "buffer_bytes": buffers, "dtype": str(vc.model_config.dtype),
               "layers": layers, "architecture": type(model).__name__}
        if adapters is not None:
            out["lora"] = adapters
        return out

    def _construct(self, vc, device: str):
        vc.compilation_config.static_forward_context.clear()
        with self.torch.device(device):
            return self.initialize_model(vllm_config=vc)

    def _lora_buffers(self, model, vc) -> dict:
        """What vLLM's LoRA manager allocates for the adapters' slots (the model runner's own call)."""
        from vllm.v1.worker.lora_model_runner_mixin import LoRAModelRunnerMixin

        torch = self.torch
        wrapped = LoRAModelRunnerMixin().load_lora_model(model, vc, torch.device("meta"))
        total, per_kind, seen = 0, {}, set()
        for _, module in wrapped.model.named_modules():
            for attr, value in vars(module).items():
                if "lora_a_stacked" not in attr and "lora_b_stacked" not in attr:
                    continue
                tensors = [value] if isinstance(value, torch.Tensor) else list(value or ())
                # each allocation once: the MoE layer also lists views of its stacks per expert
                tensors = [t._base if t._base is not None else t for t in tensors]
                fresh = [t for t in tensors if id(t) not in seen]
                seen.update(id(t) for t in fresh)
                n = sum(t.numel() * t.element_size() for t in fresh)
                total += n
                kind = type(module).__name__
                per_kind[kind] = per_kind.get(kind, 0) + n
        return {"bytes": total, "per_kind": per_kind, "dtype": str(vc.lora_config.lora_dtype)}

    def _kv_layers(self, vc) -> list[dict]:
        out = []
        for name, layer in vc.compilation_config.static_forward_context.items():
            if not hasattr(layer, "get_kv_cache_spec"):
                continue  # MoE runners and the like: no cache
            row = {"name": name, "kind": type(layer).__name__}
            for attr in ("num_kv_heads", "head_size", "sliding_window", "kv_sharing_target_layer_name"):
                v = getattr(layer, attr, None)
                row[attr] = v if isinstance(v, (int, str, type(None))) else str(v)
            try:
                spec = layer.get_kv_cache_spec(vc)
            except BaseException as e:  # noqa: BLE001
                row["spec_error"] = _one_line(e)
                spec = None
            if spec is not None:
                row["spec"] = type(spec).__name__
                row["page_size_bytes"] = int(spec.page_size_bytes)
                bs = getattr(spec, "block_size", None)
                row["block_size"] = bs
                if type(spec).__name__ in ("FullAttentionSpec", "SlidingWindowSpec", "MLAAttentionSpec",
                                           "ChunkedLocalAttentionSpec", "SinkFullAttentionSpec",
                                           "CrossAttentionSpec", "EncoderOnlyAttentionSpec") and bs:
                    row["bytes_per_token"] = int(spec.page_size_bytes) // int(bs)
                row["spec_sliding_window"] = getattr(spec, "sliding_window", None)
                row["spec_chunk"] = getattr(spec, "attention_chunk_size", None)
                shapes = getattr(spec, "shapes", None)
                if shapes is not None:
                    row["state_shapes"] = [list(s) for s in shapes]
                    row["state_dtypes"] = [str(t) for t in getattr(spec, "dtypes", ())]
            out.append(row)
        return out


def _host_as_forced(torch) -> None:
    """CONFORMANCE_AVX512_BF16=0|1 answers torch.cpu._is_avx512_bf16_supported as that host would (the test runs the
    comparison both ways); unset, the host answers for itself."""
    forced = os.environ.get("CONFORMANCE_AVX512_BF16")
    if forced in ("0", "1"):
        torch.cpu._is_avx512_bf16_supported = lambda: forced == "1"
    # Without AMX tiles (before Sapphire Rapids) vLLM's CPU build has no kernel for MXFP4 experts or FP8 block-scaled
    # layers, so a published gpt-oss or DeepSeek-R1 config is built on one host and not on another: always answer as
    # a host without AMX, so that the table does not depend on the CPU running it.
    torch.cpu._is_amx_tile_supported = lambda: False


def _gpu_cache_dtypes() -> None:
    """Compare with vLLM on a GPU, the platform users size memory for, whatever CPU runs this.

    The CPU platform's check_and_update_config rewrites --mamba-ssm-cache-dtype to float32 on a CPU with AVX-512 BF16
    (platforms/cpu.py: the accelerated GDN backend), so the recurrent state came out twice as large as on a GPU, whose
    platform leaves the dtype as asked. The harness keeps the cache dtypes as the engine arguments and the model's own
    config rules set them, and lets the CPU platform change nothing else."""
    from vllm.platforms import current_platform

    cls = type(current_platform)
    cpu_rule = cls.check_and_update_config

    def as_on_gpu(_cls, vllm_config) -> None:
        cache = vllm_config.cache_config
        asked = (cache.cache_dtype, cache.mamba_cache_dtype, cache.mamba_ssm_cache_dtype)
        cpu_rule(vllm_config)
        cache.cache_dtype, cache.mamba_cache_dtype, cache.mamba_ssm_cache_dtype = asked

    cls.check_and_update_config = classmethod(as_on_gpu)


def _own_buffers(model) -> list:
    """The model's buffers less those that are views of a parameter (Mamba2's conv_weights is conv1d.weight
    reshaped: no memory of its own on the GPU, a separate tensor on the meta device)."""
    bases = set()
    for p in model.parameters():
        bases.add(id(p))
        if p.data._base is not None:
            bases.add(id(p.data._base))
    return [t for t in model.buffers() if t._base is None or id(t._base) not in bases]


SMALL_LAYERS = 4  # enough for every layer pattern's period here (sliding/full, dense-then-MoE, hybrids)


def registry() -> dict:
    """The installed vLLM's text-generation and multimodal architectures."""
    from vllm.model_executor.models.registry import _MULTIMODAL_MODELS, _TEXT_GENERATION_MODELS

    return {"text": sorted(_TEXT_GENERATION_MODELS), "multimodal": sorted(_MULTIMODAL_MODELS)}


def lora_support() -> dict:
    """Per registered architecture: whether its class supports LoRA and whether the input embedding is wrapped
    (its `embedding_modules` names embed_tokens), from the classes themselves."""
    import vllm
    from vllm.model_executor.models import ModelRegistry
    from vllm.model_executor.models.interfaces import supports_lora

    out = {}
    for arch in sorted(ModelRegistry.get_supported_archs()):
        try:
            cls = ModelRegistry._try_load_model_cls(arch)
        except BaseException:  # noqa: BLE001 - a class that does not import here
            cls = None
        if cls is None:
            continue
        packed = getattr(cls, "packed_modules_mapping", None) or {}
        sizes = [len(v) for v in packed.values() if isinstance(v, (list, tuple))]
        out[arch] = {"lora": bool(supports_lora(cls)),
                     "embedding": "embed_tokens" in (getattr(cls, "embedding_modules", None) or {}),
                     # the packed modules' slices: 3 for q/k/v merged from three checkpoint tensors, 2 for gate/up
                     # (None: the class declares no packing, it is set per instance)
                     "qkv_slices": (3 if 3 in sizes else 1) if sizes else None,
                     "mlp_slices": (2 if 2 in sizes else 1) if sizes else None}
    return {"vllm": vllm.__version__, "architectures": out}


# Keys every published config of the architecture carries that transformers' config class leaves out at its
# defaults (vLLM's class reads them): added where the class has none. Sources: ai-dynamo/aiconfigurator's
# src/aiconfigurator/model_configs/zai-org--GLM-4.7-FP8_config.json (head_dim) and zai-org--GLM-4.7-Flash_config.json
# (first_k_dense_replace).
PUBLISHED_KEYS = {
    "Glm4MoeForCausalLM": {"head_dim": 128},
    "Glm4MoeLiteForCausalLM": {"first_k_dense_replace": 1},
}


def transformers_config(arch: str) -> tuple[dict | None, str]:
    """transformers' own config class for the architecture, at its defaults with few layers: (config, model_type),
    or (None, why)."""
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    # a causal LM several model types map to (Llama 4's wrapper and its text config): the text one, which vLLM's
    # class for it reads (Llama4ForCausalLM builds from llama4_text's fields)
    found = [t for t, cls in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items()
             if arch in (cls if isinstance(cls, (list, tuple)) else [cls])]
    mtype = next((t for t in found if t.endswith("_text")), found[0] if found else None)
    if mtype is None:
        return None, "no transformers config class (its config is vLLM's own or the model's remote code)"
    cls = CONFIG_MAPPING[mtype]
    key = getattr(cls, "attribute_map", {}).get("num_hidden_layers", "num_hidden_layers")
    try:
        default = cls()
        layers = getattr(default, "num_hidden_layers", None)
        kw = {key: min(layers, SMALL_LAYERS)} if isinstance(layers, int) and layers > SMALL_LAYERS else {}
        cfg = cls(**kw).to_dict()
    except BaseException as e:  # noqa: BLE001
        return None, f"transformers' {cls.__name__} cannot be made at its defaults: {_one_line(e)}"
    if cfg.get("num_attention_heads") and "num_key_value_heads" in cfg and cfg["num_key_value_heads"] is None:
        cfg["num_key_value_heads"] = cfg["num_attention_heads"]  # None means multi-head (transformers fills it so)
    for k, v in PUBLISHED_KEYS.get(arch, {}).items():
        if cfg.get(k) is None:
            cfg[k] = v
    cfg["architectures"] = [arch]
    cfg["model_type"] = mtype
    cfg["dtype"] = "bfloat16"
    cfg.pop("torch_dtype", None)
    return cfg, mtype


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    t0 = time.monotonic()
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        builder = Builder()
    print(json.dumps({"id": "_import", "seconds": round(time.monotonic() - t0, 2)}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        t = time.monotonic()
        if job.get("lora_support"):
            with contextlib.redirect_stdout(quiet):
                res = lora_support()
            print(json.dumps({"id": job["id"], **res}), flush=True)
            continue
        if job.get("registry"):
            reg = registry()
            print(json.dumps({"id": job["id"], **reg}), flush=True)
            if job.get("build_text"):  # and every text-generation architecture from its transformers config
                for arch in reg["text"]:
                    _build_one(builder, {"id": arch, "generate": arch}, quiet)
            continue
        _build_one(builder, job, quiet)


def _build_one(builder: "Builder", job: dict, quiet) -> None:
    if True:
        t = time.monotonic()
        config = job.get("config")
        extra = {}
        if config is None:
            config, mtype = transformers_config(job["generate"])
            if config is None:
                print(json.dumps({"id": job["id"], "ok": False, "stage": "no-config", "error": mtype}), flush=True)
                return
            extra = {"config": config, "model_type": mtype}
        with contextlib.redirect_stdout(quiet):
            # 1024 tokens, or fewer where the model has fewer positions (an encoder's 512)
            positions = config.get("max_position_embeddings") if isinstance(config, dict) else None
            length = min(1024, positions) if isinstance(positions, int) and positions > 0 else 1024
            res = builder.build(config, job.get("max_model_len", length), lora=job.get("lora"))
        res.update(id=job["id"], seconds=round(time.monotonic() - t, 2), **extra)
        print(json.dumps(res, default=str), flush=True)


if __name__ == "__main__":
    main()
