"""From what the user gave (model, GPUs, engine arguments) to an Estimate. No torch, no vLLM import."""
from __future__ import annotations

import os
from functools import lru_cache
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import hostcpu
from .engines import vllm as vllm_engine
from .errors import BadInput
from .estimator import EngineSettings, Estimate, GpuBudget, activation, estimate
from .estimator import kv as kvmod
from .gpu import GpuInfo, GpuSource, NvmlSource, planned_gpus
from .models import catalog
from .models.config import ModelArch, from_config, load_config_dir
from .units import GiB, parse_bytes


@dataclass(frozen=True)
class ModelRef:
    """The model to load: what vLLM gets as --model, and its architecture."""

    load: str  # local folder or repository id
    arch: ModelArch | None  # None when launching without pre-flight
    label: str
    repo: str | None = None  # Hub repository to download before starting (catalog and Hub models)
    revision: str | None = None


@dataclass(frozen=True)
class ModelOptions:
    """--model-format and --quantization, read once and the same way by launch, estimate, smoke, bench, tune and
    planning (they used to normalise them three ways and a launch and its estimate could differ)."""

    model_format: str = "pytorch"
    quantization: str | None = None  # None: 'none' or not given

    @classmethod
    def of(cls, model_format: str | None, quantization: str | None) -> ModelOptions:
        q = None if quantization in (None, "", "none") else str(quantization)
        return cls((model_format or "pytorch").lower(), q)

    @property
    def online(self) -> str | None:
        """The method vLLM applies while loading a full-precision checkpoint (--quantization of a pytorch model);
        a quantized build (awq, gptq, fp8) says its own in its config."""
        return self.quantization if self.model_format == "pytorch" else None

    def engine_args(self, engine_args: dict) -> dict:
        """The engine arguments with --quantization where the launch quantizes online and does not name it."""
        if self.online and "quantization" not in engine_args:
            return {**engine_args, "quantization": self.online}
        return dict(engine_args)


def planned_version(vllm_version: str | None, gpu_target: bool) -> str:
    """The vLLM release a plan is for: as asked, else the installed one; the CPU build's version says nothing of the
    GPU build that will run on described GPUs, so those (and a machine with no vLLM) plan for the newest release the
    estimator tracks, the one a user installs today (its confidence says whether it was measured or derived)."""
    inst = vllm_engine.installed()
    return vllm_version or (inst.version if inst and not (inst.cpu_build and gpu_target) else vllm_engine.newest_known())


def resolve_model(model_path: str | None, model_name: str | None, size: str | None, model_format: str | None,
                  quantization: str | None, dtype: str | None = None, parse_arch: bool = True,
                  model_repo: str | None = None, revision: str | None = None) -> ModelRef:
    """What vLLM should load and, unless parse_arch is False (no pre-flight), its architecture.

    The three ways to name a model: a local folder (model_path), a Hub repository id (model_repo, at
    revision; config.json and the safetensors index are fetched, a few KB, nothing else), or the
    catalog's name/size/format (its repository id; the architecture is in the catalog)."""
    if sum(bool(x) for x in (model_path, model_name, model_repo)) > 1:
        raise BadInput("give one of --model (Hub id), --model-path or --model-name, not several.")
    opts = ModelOptions.of(model_format, quantization)
    q = opts.quantization
    if model_repo:
        if not parse_arch:
            return ModelRef(model_repo, None, model_repo, repo=model_repo, revision=revision)
        from .models import hub

        meta = hub.fetch_metadata(model_repo, revision)
        arch = from_config(meta.config, source=f"hub:{model_repo}", dtype=dtype, quantization=q)
        if meta.weights_total_bytes and _checkpoint_as_served(meta.config, arch, q):
            from .models.checkpoint import from_index_total
            arch = replace(arch, checkpoint=from_index_total(meta.weights_total_bytes))
        return ModelRef(model_repo, arch, f"{model_repo}@{meta.commit[:10]}", repo=model_repo, revision=meta.commit)
    if model_path and not parse_arch:
        if not Path(model_path).exists():
            raise BadInput(f"model path '{model_path}' does not exist.")
        return ModelRef(str(model_path), None, str(model_path))
    if model_path:
        cfg = load_config_dir(model_path)
        arch = from_config(cfg, source=str(model_path), dtype=dtype, quantization=q)
        if Path(model_path).is_dir() and (cfg.get("quantization_config") or not q):
            from .models.checkpoint import as_vllm_quantizes, from_folder
            arch = as_vllm_quantizes(arch, model_path)
            ck = from_folder(model_path)  # an online --quantization of a 16-bit checkpoint: the formula's bytes
            if ck is not None:
                arch = replace(arch, checkpoint=ck)
        return ModelRef(str(model_path), arch, str(model_path))
    if not model_name:
        raise BadInput("no model given.", hint="Use --model-path DIR, or --model-name NAME --size-in-billions N.")
    entry = catalog.lookup(model_name, size, opts.model_format, quantization)
    if not parse_arch:
        return ModelRef(entry.repo, None, entry.name, repo=entry.repo)
    arch = from_config(entry.config, source=f"catalog:{entry.name}", dtype=dtype, quantization=opts.online)
    return ModelRef(entry.repo, arch, f"{entry.name} {entry.size.replace('_', '.')}B {entry.model_format}", repo=entry.repo)


def _checkpoint_as_served(cfg: dict, arch: ModelArch, q: str | None) -> bool:
    """Whether a repository's stored total is what vLLM will hold: a quantized checkpoint (kept as stored),
    or floating weights stored in the dtype they are served in (no online quantization)."""
    if cfg.get("quantization_config"):
        return True
    stored = str(cfg.get("torch_dtype") or cfg.get("dtype") or "")
    return not q and stored.replace("torch.", "") == arch.dtype


SETTINGS_KEYS = {
    "max-model-len": "max_model_len", "gpu-memory-utilization": "gpu_memory_utilization",
    "tensor-parallel-size": "tensor_parallel_size", "pipeline-parallel-size": "pipeline_parallel_size",
    "max-num-batched-tokens": "max_num_batched_tokens", "max-num-seqs": "max_num_seqs",
    "kv-cache-dtype": "kv_cache_dtype", "dtype": "dtype", "block-size": "block_size",
    "enforce-eager": "enforce_eager", "kv-cache-memory-bytes": "kv_cache_memory_bytes", "quantization": "quantization",
    "enable-prefix-caching": "enable_prefix_caching", "mamba-cache-mode": "mamba_cache_mode",
    "limit-mm-per-prompt": "limit_mm_per_prompt", "mm-processor-kwargs": "mm_processor_kwargs",
    "enable-extensible-kv-cache": "extensible_kv_cache", "async-scheduling": "async_scheduling",
    "distributed-executor-backend": "executor",
    "disable-hybrid-kv-cache-manager": "disable_hybrid_kv_cache_manager",
}


LORA_KEYS = {"max-loras": "max_loras", "max-lora-rank": "max_lora_rank", "lora-dtype": "lora_dtype",
             "max-cpu-loras": "max_cpu_loras"}


def lora_settings(args: dict):
    """--enable-lora and its sizes (None without --enable-lora; the sizes alone change nothing in vLLM)."""
    from .estimator.lora import LoraSettings

    if not args.get("enable-lora"):
        return None
    return LoraSettings(**{attr: args[k] for k, attr in LORA_KEYS.items() if args.get(k) is not None})


@lru_cache(maxsize=8)
def draft_arch(ref: str, dtype: str) -> ModelArch:
    """The speculative proposer's architecture from its config.json: a local folder or a Hub repository id. Read
    once per process (`estimate --gpu all` plans the same launch for every cell)."""
    return from_config(_draft_config(ref), source=f"draft {ref}", dtype=dtype)


@lru_cache(maxsize=8)
def _draft_config(ref: str) -> dict:
    from .models import hub

    if Path(ref).expanduser().exists():
        cfg = load_config_dir(str(Path(ref).expanduser()))
    elif hub.looks_like_repo_id(ref):
        cfg = hub.fetch_metadata(ref, None).config
    else:
        raise BadInput(f"--speculative-config: the draft model '{ref}' was not found: no such folder here, and not a "
                       "Hub repository id (org/name).",
                       hint="Give the draft's folder (with its config.json) or its Hub id in the \"model\" key.")
    return cfg


def settings_from_engine_args(args: dict) -> EngineSettings:
    from .estimator import speculative

    kw = {"lora": lora_settings(args), "speculative": speculative.parse(args.get("speculative-config"))}
    for k, attr in SETTINGS_KEYS.items():
        if k in args and args[k] is not None:
            v = args[k]
            if attr == "kv_cache_memory_bytes":
                v = parse_bytes(v, what="--kv-cache-memory-bytes")
            kw[attr] = v
    return EngineSettings(**kw)


@dataclass
class Plan:
    model: ModelRef
    settings: EngineSettings
    gpus: list[GpuInfo]
    vllm_version: str
    source: str  # "nvml", "planned", "cpu"
    estimate: Estimate | None = None
    notes: list[str] = field(default_factory=list)
    cpu_kv: dict | None = None
    cluster: object | None = None  # a cluster.plan.ClusterPlan for launches across Ray nodes
    chosen_gpus: list[int] | None = None  # NVML indices the server is to run on (its CUDA_VISIBLE_DEVICES)
    gpu_choice: str = ""  # which GPUs and why, in words
    beside: list = field(default_factory=list)  # neighbours.Neighbour: our launches already on these devices
    beside_note: str = ""  # what they hold, in words (also among the notes; the launch's own note repeats it)


def plan(model: ModelRef, engine_args: dict, *, gpu_memory: str | None = None, gpu_preset: str | None = None,
         num_gpus: int | None = None, vllm_version: str | None = None, gpu_source: GpuSource | None = None,
         device: str = "auto", env: dict | None = None, cluster_nodes: list | None = None,
         placement: list[str] | None = None, cluster_source: str = "ray", gpus_sel: str | None = None,
         name: str | None = None, gpu_memory_budget: str | None = None, suggest: bool = True) -> Plan:
    """Run the estimator for this model, these engine arguments and these GPUs. name: the launch being planned
    (left out of the launches already running beside it). gpu_memory_budget: bytes per GPU (budget_settings)."""
    parse_gpus_selector(gpus_sel)  # refused on any host, not only where NVML lists GPUs
    inst = vllm_engine.installed()
    version = planned_version(vllm_version, gpu_target=bool(gpu_memory or gpu_preset or cluster_nodes is not None))
    model, settings = _settings(model, engine_args, env, across_nodes=cluster_nodes is not None)
    if cluster_nodes is not None:  # the cluster's GPUs, not this host's
        return _plan_across(model, settings, version, cluster_nodes, placement, cluster_source)
    gpus, source = _gpus(gpu_memory, gpu_preset, num_gpus, gpu_source)
    p = Plan(model, settings, gpus, version, source)
    cpu = device == "cpu" or (device == "auto" and not gpus and inst is not None and inst.cpu_build)
    if not gpus or cpu:
        if source == "nvml" and parse_gpus_selector(gpus_sel):
            raise BadInput(f"--gpus {gpus_sel.strip()}: no GPU is visible here (NVML lists none).",
                           hint="Drop --gpus on a host without GPUs, or plan for one with --gpu/--gpu-memory.")
        p.source = "cpu" if cpu else "none"
        if cpu:
            _plan_cpu(p, env, name, gpu_memory_budget)
        return p
    _plan_gpus(p, gpus_sel, name, gpu_memory_budget, suggest)
    return p


def _settings(model: ModelRef, engine_args: dict, env: dict | None, *, across_nodes: bool) -> tuple[ModelRef, EngineSettings]:
    """The engine settings, the graph method asked for by VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS (left to vLLM and
    modelled as set; launches across Ray nodes keep vLLM's own estimate, as measured there), --dtype applied to the
    model, and a speculative draft's architecture read."""
    settings = settings_from_engine_args(engine_args)
    asked = activation.graph_mode_from_env(os.environ if env is None else env)
    if asked or across_nodes:
        settings = replace(settings, graph_memory=asked or "vllm")
    if settings.dtype not in ("auto", None) and settings.dtype != model.arch.dtype:
        model = ModelRef(model.load, replace(model.arch, dtype=settings.dtype), model.label)
    return model, with_draft(settings, model.arch.dtype)


def with_draft(settings: EngineSettings, dtype: str) -> EngineSettings:
    """The settings with the speculative proposer's model read (its config.json and which weights its checkpoint
    carries), where it runs on the GPU."""
    spec = settings.speculative
    if spec is None or not spec.model or not spec.proposer_on_gpu:
        return settings
    names = draft_weight_names(spec.model)
    return replace(settings, draft=draft_arch(spec.model, dtype), draft_vocab_size=draft_vocab_size(spec.model),
                   draft_own_embedding=_carries(names, "embed_tokens"), draft_own_lm_head=_carries(names, "lm_head"))


def draft_weight_names(ref: str) -> frozenset[str] | None:
    """The tensors a draft folder's checkpoint carries (its safetensors headers; a folder with no weight files
    carries none: vLLM's dummy load, where an EAGLE head keeps neither embedding nor lm_head of its own);
    None where that is not known (a Hub id, .bin files)."""
    from .models.checkpoint import read_header, weight_files

    folder = Path(ref)
    if not folder.is_dir():
        return None
    files = weight_files(folder)
    if files is None:
        return None if any(folder.glob("*.bin")) or any(folder.glob("*.pt")) else frozenset()
    try:
        return frozenset(name for f in files for name in read_header(f))
    except (OSError, ValueError):
        return None


def draft_has_embedding(ref: str) -> bool | None:
    """Whether a draft folder's checkpoint carries an embedding (see draft_weight_names)."""
    return _carries(draft_weight_names(ref), "embed_tokens")


def _carries(names: frozenset[str] | None, part: str) -> bool | None:
    """Whether a checkpoint's tensors name `part` (None: not known)."""
    return None if names is None else any(part in n for n in names)


def draft_vocab_size(ref: str) -> int | None:
    """An EAGLE-3 head's draft vocabulary (config.json draft_vocab_size: its lm_head's rows and the draft-to-target
    id map, model_executor/models/llama_eagle3.py), None where the config has none (the whole vocabulary)."""
    v = _draft_config(ref).get("draft_vocab_size")
    return int(v) if isinstance(v, int) and v > 0 else None


def _plan_across(model: ModelRef, settings: EngineSettings, version: str, cluster_nodes: list,
                 placement: list[str] | None,
                 cluster_source: str) -> Plan:
    from .cluster.plan import plan_across

    p = Plan(model, settings, [g for n in cluster_nodes for g in n.gpus], version, cluster_source)
    p.estimate, p.cluster = plan_across(model.arch, settings, cluster_nodes,
                                        vllm_version=vllm_engine.parse_version(version), placement=placement)
    p.notes += p.cluster.notes
    if p.estimate is not None:
        p.estimate = replace(p.estimate, vllm_version=version)
    return p


def _gpus(gpu_memory: str | None, gpu_preset: str | None, num_gpus: int | None,
          gpu_source: GpuSource | None) -> tuple[list[GpuInfo], str]:
    """The GPUs planned for: described (--gpu-memory, --gpu) or NVML's, the first --num-gpus of them."""
    if gpu_memory or gpu_preset:
        return planned_gpus(gpu_memory, gpu_preset, num_gpus), "planned"
    gpus = (gpu_source or NvmlSource()).list()
    if num_gpus is not None and gpus:
        if num_gpus > len(gpus):
            raise BadInput(f"--num-gpus {num_gpus} but only {len(gpus)} GPU(s) are visible.")
        gpus = gpus[:num_gpus]
    return gpus, "nvml"


def _plan_cpu(p: Plan, env: dict | None, name: str | None, gpu_memory_budget: str | None) -> None:
    """The CPU build: its KV cache, checked against the host's available memory, beside our running launches."""
    import psutil

    from .neighbours import running

    if gpu_memory_budget:
        p.settings = budget_settings(p.model.arch, p.settings, gpu_memory_budget, None)
    from .engines.vllm import CPU_KVCACHE_DEFAULT_GIB

    env = dict(os.environ if env is None else env)
    if not env.get("VLLM_CPU_KVCACHE_SPACE") and p.settings.kv_cache_memory_bytes is None:
        # what launch and smoke start the server with (engines/vllm.server_env): the plan is of that launch
        env["VLLM_CPU_KVCACHE_SPACE"] = CPU_KVCACHE_DEFAULT_GIB
        p.notes.append(f"VLLM_CPU_KVCACHE_SPACE is not set: the launcher starts the CPU build with "
                       f"{CPU_KVCACHE_DEFAULT_GIB} GiB of KV cache (set it, or --kv-cache-memory-bytes, for another size).")
    p.cpu_kv = cpu_kv_cache(p.model.arch, p.settings, env, available_bytes=psutil.virtual_memory().available)
    _note_beside(p, [n for n in running(exclude=name) if not n.gpus],
                 f"; host memory available now {p.cpu_kv['host_available_bytes'] / GiB:.2f} GiB (what is left beside them).")


def _note_beside(p: Plan, beside: list, tail: str) -> None:
    """Record our launches running on the same devices, and say what they hold."""
    p.beside = beside
    if beside:
        p.beside_note = "Beside " + "; ".join(n.describe() for n in beside) + tail
        p.notes.append(p.beside_note)


def _plan_gpus(p: Plan, gpus_sel: str | None, name: str | None, gpu_memory_budget: str | None, suggest: bool) -> None:
    """The GPUs the launch runs on, our launches already there, and the estimate for the least free of them."""
    gpus, source, settings = p.gpus, p.source, p.settings
    need = settings.tensor_parallel_size * settings.pipeline_parallel_size
    if need > len(gpus):
        p.notes.append(f"tensor x pipeline parallel needs {need} GPUs; {len(gpus)} {'given' if source == 'planned' else 'visible'}.")
    used = gpus[:need] if need <= len(gpus) else gpus
    if source == "nvml" and need <= len(gpus):
        used, p.gpu_choice = choose_gpus(gpus, need, gpus_sel)
        p.chosen_gpus = [g.index for g in used]
    if source == "nvml":
        from .neighbours import on_gpus, running

        _note_beside(p, on_gpus(running(exclude=name), [g.index for g in used]),
                     ". NVML's free memory, which vLLM reads at start-up, already leaves them out (a launch plans once "
                     "the others are READY).")
    worst = min(used, key=lambda g: (g.free_bytes, g.total_bytes))
    if gpu_memory_budget:
        p.settings = settings = budget_settings(p.model.arch, settings, gpu_memory_budget, worst.budget())
    e = estimate(p.model.arch, settings, worst.budget(), vllm_version=vllm_engine.parse_version(p.vllm_version),
                 num_gpus_available=len(gpus), suggest=suggest)
    e = replace(e, gpus=[g.__dict__ | {"pids": list(g.pids)} for g in used], vllm_version=p.vllm_version)
    if need > len(gpus):
        e = replace(e, fits=False, cause="gpus", reason=p.notes[-1] + " " + e.reason)
    elif not e.fits and p.chosen_gpus is not None and len(gpus) > 1:
        e = replace(e, reason=e.reason + " Free memory per GPU: " + free_list(gpus) + ".")
    p.estimate = e
    if e.graph_memory == "launcher":
        p.notes.append("as `launcher launch` starts vLLM (it keeps the CUDA graphs' share itself); for `vllm serve` "
                       "with its own graph estimate, set VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1.")


def budget_settings(m: ModelArch, s: EngineSettings, budget: str, gpu: GpuBudget | None) -> EngineSettings:
    """--gpu-memory-budget as the installed vLLM takes it. A GPU: the utilization whose share (utilization x the
    total CUDA reports, as vLLM computes it) is the budget, rounded down to vLLM's 4 decimals. The CPU build
    (gpu None): --kv-cache-memory-bytes, the budget less the weights (adapters and a draft's included)."""
    if s.gpu_memory_utilization is not None or s.kv_cache_memory_bytes is not None:
        raise BadInput("give --gpu-memory-budget or --gpu-memory-utilization/--kv-cache-memory-bytes, not both.")
    want = parse_bytes(budget, what="--gpu-memory-budget")
    if want <= 0:
        raise BadInput(f"--gpu-memory-budget must be positive, got {budget}.")
    if gpu is None:
        held = host_weights_bytes(m, s)
        if want <= held:
            raise BadInput(f"--gpu-memory-budget {budget} is not more than the weights ({held / GiB:.2f} GiB).")
        return replace(s, kv_cache_memory_bytes=want - held)
    total = gpu.cuda_total_bytes
    if want > total:
        raise BadInput(f"--gpu-memory-budget {budget} is more than the GPU's {total / GiB:.2f} GiB.")
    import math

    return replace(s, gpu_memory_utilization=math.floor(want / total * 1e4) / 1e4)


def budget_engine_args(s: EngineSettings) -> dict:
    """The engine arguments a --gpu-memory-budget became (budget_settings)."""
    if s.kv_cache_memory_bytes is not None:
        return {"kv-cache-memory-bytes": str(s.kv_cache_memory_bytes)}
    return {"gpu-memory-utilization": f"{s.gpu_memory_utilization:.4f}"}


def free_list(gpus: list[GpuInfo]) -> str:
    return ", ".join(f"GPU {g.index} {g.free_bytes / GiB:.1f}/{g.total_bytes / GiB:.1f} GiB free" for g in gpus)


def parse_gpus_selector(sel: str | None) -> list[int] | None:
    """--gpus: None for 'auto' (or nothing), else distinct NVML indices; anything else is refused."""
    sel = (sel or "auto").strip()
    if sel == "auto":
        return None
    parts = [x.strip() for x in sel.split(",")]
    if not all(x.isdigit() for x in parts):
        raise BadInput(f"--gpus must be 'auto' or GPU indices like 0,3; got '{sel}'.")
    if len({int(x) for x in parts}) != len(parts):
        raise BadInput(f"--gpus {sel}: give each GPU once.")
    return [int(x) for x in parts]


def choose_gpus(gpus: list[GpuInfo], need: int, sel: str | None) -> tuple[list[GpuInfo], str]:
    """The GPUs a launch runs on. 'auto' (or nothing given): the `need` visible GPUs with the most free
    memory (ties: lowest index), so the estimate is made for the best set there is. '0,3': those NVML
    indices, in that order (they must be visible)."""
    def named(chosen: list[GpuInfo], why: str) -> tuple[list[GpuInfo], str]:
        return chosen, f"GPU{'s' * (len(chosen) > 1)} {','.join(str(g.index) for g in chosen)} ({why})"

    sel = (sel or "auto").strip()
    if sel == "auto":
        chosen = sorted(gpus, key=lambda g: (-g.free_bytes, g.index))[:need]
        if len(gpus) == need:
            return named(chosen, "all visible")
        others = [g for g in gpus if g not in chosen]
        return named(chosen, "auto: the most free memory; " + ", ".join(
            f"GPU {g.index} has {g.free_bytes / GiB:.1f} GiB free" for g in others[:4]))
    want = parse_gpus_selector(sel)
    by_index = {g.index: g for g in gpus}
    missing = [i for i in want if i not in by_index]
    if missing or len(set(want)) != len(want) or not want:
        raise BadInput(f"--gpus {sel}: " + (f"GPU {', '.join(map(str, missing))} is not visible" if missing else
                                             "give each GPU once") + ".",
                       hint="Visible GPUs: " + free_list(gpus) + ".")
    if len(want) < need:
        raise BadInput(f"--gpus {sel} gives {len(want)} GPU(s); tensor x pipeline parallel needs {need}.")
    return named([by_index[i] for i in want[:need]], "given with --gpus")


def cpu_kvcache_space(raw: str) -> int:
    """VLLM_CPU_KVCACHE_SPACE as vLLM reads it (`int(...)` GiB, 0 for its default), refused here otherwise."""
    try:
        gib = int(raw.strip())
    except ValueError:
        gib = -1
    if gib < 0:
        raise BadInput(f"VLLM_CPU_KVCACHE_SPACE must be a whole number of GiB (0 for vLLM's default), got '{raw}'.",
                       hint="For example VLLM_CPU_KVCACHE_SPACE=4.")
    return gib


def host_weights_bytes(m: ModelArch, s: EngineSettings) -> int:
    """What the CPU build holds in host memory beside its KV cache: the weights, the LoRA adapters' stacks and a
    draft model's weights."""
    from .estimator import weights as wmod

    held = wmod.weights_bytes(m, s.tensor_parallel_size)
    if s.lora is not None:
        from .estimator.lora import adapter_bytes, check_supported

        check_supported(m)
        held += adapter_bytes(m, s.lora, tp=s.tensor_parallel_size)
    if s.draft is not None:
        held += wmod.weights_bytes(s.draft, s.tensor_parallel_size)
    return held


def cpu_state_layout(m: ModelArch, avx512_bf16: bool | None = None) -> ModelArch:
    """The model as vLLM's CPU build lays out its recurrent state on this host: on a CPU with AVX-512 BF16 the CPU
    platform stores the temporal state in float32 for its accelerated backend (platforms/cpu.py
    check_and_update_config, --mamba-ssm-cache-dtype left at auto); elsewhere in the model's dtype, as on a GPU."""
    on = hostcpu.has_avx512_bf16() if avx512_bf16 is None else avx512_bf16
    if m.state is None or m.state.temporal_fp32 or not on:
        return m
    return replace(m, state=replace(m.state, temporal_fp32=True))


def cpu_held_bytes(cpu_kv: dict) -> int:
    """What a launch on the CPU build holds, as planned (cpu_kv_cache's answer, or launch.json's `cpu_kv`): its
    weights and its KV cache (the Python runtime of its server not counted)."""
    return int(cpu_kv.get("weights_bytes") or 0) + int(cpu_kv.get("kv_cache_bytes") or 0)


def cpu_kv_cache(m: ModelArch, s: EngineSettings, env: dict | None = None, available_bytes: int | None = None,
                 avx512_bf16: bool | None = None) -> dict:
    """The CPU build sizes its KV cache from VLLM_CPU_KVCACHE_SPACE (GiB) or --kv-cache-memory-bytes.
    available_bytes: the host's available memory now; the CPU worker refuses a KV cache larger than what is
    available when it allocates it, after loading the weights (cpu_worker.determine_available_memory).
    avx512_bf16: whether the host CPU has AVX-512 BF16 (None: read from this host), which sets the state's dtype."""
    env = os.environ if env is None else env
    m = cpu_state_layout(m, avx512_bf16)
    space = s.kv_cache_memory_bytes
    src = "--kv-cache-memory-bytes"
    if space is None and env.get("VLLM_CPU_KVCACHE_SPACE"):
        space, src = cpu_kvcache_space(env["VLLM_CPU_KVCACHE_SPACE"]) * GiB, "VLLM_CPU_KVCACHE_SPACE"
    block = s.block_size or 128  # the CPU backend's default block size
    extra = 0
    if s.speculative is not None:  # the proposer's layers share the pool
        from .estimator import speculative

        draft = speculative.proposer_arch(m, s.speculative, s.draft)
        extra = speculative.kv_equivalent_layers(m, draft, s.tensor_parallel_size) if draft is not None else 0
    lay = kvmod.layout(m, tp=s.tensor_parallel_size, pp=1, block_size=block, kv_cache_dtype=s.kv_cache_dtype,
                       extra_full_layers=extra)
    want = m.derived_max_len if s.max_model_len in (None, "auto") else int(s.max_model_len)
    batched = s.max_num_batched_tokens or 4096
    out = {"kv_cache_bytes": space, "source": src if space else None, "max_model_len": want,
           "kv_bytes_per_token": lay.bytes_per_block // block}
    if s.lora is not None:
        from .estimator.lora import adapter_bytes

        out["lora_bytes"] = adapter_bytes(m, s.lora, tp=s.tensor_parallel_size)
    held = out["weights_bytes"] = host_weights_bytes(m, s)
    if space:
        fit = lay.max_len_that_fits(space, m.derived_max_len, block, batched)
        out.update(kv_cache_tokens=lay.tokens(space, want, block, batched), max_model_len_fit=fit,
                   fits=fit >= want or s.max_model_len == "auto")
    if available_bytes is not None:
        out["host_available_bytes"] = available_bytes
        if space and held + space > available_bytes:
            out["fits"] = False
            out["reason"] = (f"the host has {available_bytes / GiB:.2f} GiB available; the weights ({held / GiB:.2f} GiB) "
                             f"and the KV cache ({space / GiB:.2f} GiB, {src}) need more: vLLM's CPU worker would refuse "
                             "the KV cache after loading.")
    return out
