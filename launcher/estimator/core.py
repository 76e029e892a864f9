"""Put the pieces together the way vLLM's Worker.determine_available_memory does."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from ..errors import BadInput
from ..models.caveats import Caveat, Margin
from ..models.config import ModelArch
from ..units import GiB
from . import activation, blocks, kv, pinned, releases, weights
from . import lora as loramod
from . import speculative as specmod

MiB = 1 << 20
# The CUDA runtime reports a little less total memory than NVML/nvidia-smi. Measured:
# H100 80GB: 81559 MiB in nvidia-smi, 81079 MiB in torch.cuda.mem_get_info (480 MiB less);
# H200: 143771 MiB in nvidia-smi, 139.80 GiB requested/0.92 in vLLM's log (about 611 MiB less).
# Other sizes: linear between (and beyond) those two points.
_RESERVED_POINTS = ((81559 * MiB, 480 * MiB), (143771 * MiB, 611 * MiB))


def cuda_reserved_bytes(nvml_total: int) -> int:
    (t0, r0), (t1, r1) = _RESERVED_POINTS
    return max(0, int(r0 + (nvml_total - t0) * (r1 - r0) / (t1 - t0)))


CUDA_RESERVED_BYTES = cuda_reserved_bytes(143771 * MiB)
# vLLM's own CUDA context, created before it reads the free memory: 0.51 GiB on an idle H200 (vLLM 0.24.0, 2026-12-02)
# and 0.51 to 0.52 GiB on an H100 (vLLM 0.26.0, 2026-12-07: NVML's free memory before each start less the
# "Initial free memory" vLLM logged, three starts, 0.5126 and 0.5132 GiB with the log's rounding of 0.005 GiB; its
# worker's snapshot "cuda_memory=0.51GiB"): at most 531 MiB. More than the H100's reserve of 480 MiB.
CUDA_CONTEXT_BYTES = 531 * MiB


def context_bytes(nvml_total: int) -> int:
    """What vLLM's process takes off NVML's free memory before it reads it: its CUDA context, at least the reserve."""
    return max(cuda_reserved_bytes(nvml_total), CUDA_CONTEXT_BYTES)


LARGE_GPU_BYTES = 70 * GiB  # vLLM's threshold for its larger batch defaults


@dataclass(frozen=True)
class GpuBudget:
    """One GPU as seen by NVML (or as described by --gpu-memory)."""

    name: str
    total_bytes: int  # NVML total
    free_bytes: int | None = None  # NVML free; None when planning for a GPU not present
    planned: bool = False  # a card described on the command line: its free memory is a bare card's, no process holds any

    @property
    def capability(self) -> tuple[int, int] | None:
        """CUDA compute capability from the name (decides vLLM's integer-weight kernel)."""
        from ..models.quant import capability
        return capability(self.name)

    @property
    def cuda_total_bytes(self) -> int:
        return self.total_bytes - cuda_reserved_bytes(self.total_bytes)

    @property
    def cuda_free_bytes(self) -> int | None:
        """Free memory as vLLM's start-up check sees it. NVML's free memory (nvmlDeviceGetMemoryInfo v1)
        already leaves out the driver's reserve; the larger of the reserve and CUDA_CONTEXT_BYTES is taken off once
        more for vLLM's own CUDA context, created before it reads the free memory (measured on an idle H200: NVML free
        139.80 GiB, vLLM's "Initial free memory" 139.29 GiB, 2026-12-02; this gives 139.20. On an H100 holding an L4's
        free memory, 2026-12-07: NVML 22.14 GiB, vLLM 21.63; this gives 21.62, the reserve alone 21.67)."""
        if self.free_bytes is None:
            return None
        return max(0, self.free_bytes - context_bytes(self.total_bytes))


@dataclass(frozen=True)
class EngineSettings:
    """The engine arguments that change memory, with vLLM's names. None means vLLM's default."""

    max_model_len: int | str | None = None  # int, "auto" or None (the derived default)
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    kv_cache_dtype: str = "auto"
    dtype: str = "auto"
    block_size: int | None = None
    enforce_eager: bool = False
    kv_cache_memory_bytes: int | None = None
    quantization: str | None = None
    enable_prefix_caching: bool | None = None  # hybrids: vLLM leaves it off unless asked
    mamba_cache_mode: str | None = None
    limit_mm_per_prompt: dict | str | None = None  # --limit-mm-per-prompt: JSON or image=N,video=M
    mm_processor_kwargs: dict | str | None = None  # --mm-processor-kwargs: not read (see estimate)
    # how the CUDA graph pool is accounted for (activation.GRAPH_MODES); None: the launcher's way where it
    # applies. Set from VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS when the user sets it (planning.plan).
    graph_memory: str | None = None
    lora: loramod.LoraSettings | None = None  # --enable-lora with its sizes
    speculative: specmod.SpecSettings | None = None  # --speculative-config
    draft: ModelArch | None = None  # the draft model or EAGLE head's architecture (read by planning)
    # whether an EAGLE head's checkpoint carries its own embedding / lm_head (None: not known, counted)
    draft_own_embedding: bool | None = None
    draft_own_lm_head: bool | None = None
    draft_vocab_size: int | None = None  # an EAGLE-3 head's draft vocabulary (config.json; None: the whole one)
    # --enable-extensible-kv-cache / --no-enable-extensible-kv-cache (None: the release's default)
    extensible_kv_cache: bool | None = None
    # --async-scheduling / --no-async-scheduling (None: vLLM's default, on where nothing rules it out)
    async_scheduling: bool | None = None
    executor: str | None = None  # --distributed-executor-backend (ray rules async scheduling out)
    # --disable-hybrid-kv-cache-manager: sliding-window and chunked layers take a full-length cache like the others
    disable_hybrid_kv_cache_manager: bool | None = None

    def mm_items_per_prompt(self, layout: str) -> int | None:
        """Items per prompt the encoder's profile may use, from --limit-mm-per-prompt: 0 when every
        modality is off (vLLM then profiles no encoder), the image limit for fixed-size images, else None."""
        limits = parse_mm_limits(self.limit_mm_per_prompt)
        if not limits:
            return None
        modalities = {"image": ("image",), "video": ("image", "video")}.get(layout)
        if not modalities:  # a tower whose inputs are not modelled: its modalities are not known either
            return None
        if all(limits.get(x) == 0 for x in modalities):
            return 0
        return limits.get("image") if layout == "image" else None

    @property
    def state_cache_mode(self) -> str:
        """How a hybrid's recurrent state is cached (config/cache.py mamba_cache_mode). With prefix caching
        asked for, vLLM picks 'all' where the model supports it, else 'align': 'all' (more pages per
        request) is assumed."""
        if self.mamba_cache_mode:
            return self.mamba_cache_mode
        return "all" if self.enable_prefix_caching else "none"


def parse_mm_limits(value: dict | str | None) -> dict[str, int]:
    """--limit-mm-per-prompt as vLLM takes it: a JSON object (a modality's value a count or {"count": n, ...})
    or the older image=2,video=1 form."""
    import json

    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            try:
                value = {k.strip(): int(v) for k, v in (p.split("=", 1) for p in value.split(",") if p.strip())}
            except ValueError:
                raise BadInput(f"--limit-mm-per-prompt: cannot read {value!r}.",
                               hint='Give a JSON object such as \'{"image": 2, "video": 0}\'.') from None
    if not isinstance(value, dict):
        raise BadInput(f"--limit-mm-per-prompt: expected a JSON object, got {value!r}.")
    out = {}
    for k, v in value.items():
        n = v.get("count") if isinstance(v, dict) else v
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise BadInput(f"--limit-mm-per-prompt: the count of {k!r} must be a whole number >= 0, got {v!r}.")
        out[str(k)] = n
    return out


def _batch_defaults(s: EngineSettings, gpu: GpuBudget, vllm_version: tuple[int, ...]) -> tuple[int, int]:
    """max_num_batched_tokens and max_num_seqs: as asked, else vLLM's defaults for the API server on this GPU
    (the larger ones on GPUs of 70 GiB or more but an A100, and from 0.33 but a GB10, DGX Spark)."""
    large = gpu.cuda_total_bytes >= LARGE_GPU_BYTES and "a100" not in gpu.name.lower() \
        and not (gpu.capability == (12, 1) and releases.since("gb10_keeps_small_batch_defaults", vllm_version))
    return (s.max_num_batched_tokens or _default_batched(gpu, large, vllm_version),
            s.max_num_seqs or (1024 if large else 256))


def _default_batched(gpu: GpuBudget, large: bool, vllm_version: tuple[int, ...]) -> int:
    """vLLM's default max_num_batched_tokens for the API server (engine/arg_utils.py get_batch_defaults): 8192 on
    GPUs of 70 GiB or more (not an A100), else 2048; from 0.28, 16384 on GPUs of 160 GiB or more."""
    if releases.since("batched_16k_on_160gib", vllm_version) and gpu.cuda_total_bytes >= 160 * GiB:
        return 16384
    return 8192 if large else 2048


def _state_cache_mode(s: EngineSettings, vllm_version: tuple[int, ...]) -> str:
    """From 0.28 prefix caching on a hybrid sets 'align' (model_executor/models/config.py MambaModelConfig), where
    earlier releases chose 'all' for the models that support it (s.state_cache_mode assumes 'all')."""
    if not s.mamba_cache_mode and s.enable_prefix_caching and releases.since("prefix_caching_aligns_state", vllm_version):
        return "align"
    return s.state_cache_mode


def extensible(s: EngineSettings, vllm_version: tuple[int, ...]) -> bool:
    """Whether vLLM sizes the KV cache from memory measured after warm-up (0.34+ on CUDA, config/vllm.py
    _resolve_extensible_kv_cache): on unless turned off or overridden by --kv-cache-memory-bytes."""
    from .releases import extensible_kv_cache

    return extensible_kv_cache(vllm_version) and s.extensible_kv_cache is not False and not s.kv_cache_memory_bytes


def _utilization(s: EngineSettings, ext: bool, vllm_version: tuple[int, ...]) -> float:
    """--gpu-memory-utilization, else the release's default: 1.0 with the extensible KV cache
    (CacheConfig.resolved_gpu_memory_utilization)."""
    if s.gpu_memory_utilization is not None:
        return s.gpu_memory_utilization
    return 1.0 if ext else default_utilization(vllm_version)


def profile_counts_consumed(vllm_version: tuple[int, ...]) -> bool:
    from .releases import profile_counts_consumed as of_release

    return of_release(vllm_version)


def default_utilization(vllm_version: tuple[int, ...]) -> float:
    from .releases import default_utilization as of_release

    return of_release(vllm_version)


@dataclass(frozen=True)
class Estimate:
    """Per-GPU prediction, in bytes, of what vLLM will reserve, and the verdict (`verdict`). Frozen: a changed
    estimate is a new one (dataclasses.replace)."""

    fits: bool
    max_model_len: int
    max_model_len_fit: int
    derived_max_model_len: int
    kv_cache_tokens: int
    kv_cache_bytes: int
    kv_blocks: int
    weights_bytes: int
    lora_bytes: int  # the adapters' stacked buffers (--enable-lora), 0 without
    draft_weights_bytes: int  # the speculative proposer's weights (draft model, EAGLE head, MTP layers), 0 without
    draft_kv_layers: int  # the proposer's attention layers in the KV cache pool, as target layers
    activation_bytes: int
    cudagraph_bytes: int
    non_torch_bytes: int
    requested_bytes: int
    total_bytes: int
    gpu_memory_utilization: float
    max_num_batched_tokens: int
    max_num_seqs: int
    block_size: int
    kv_bytes_per_token: int
    max_concurrency: float
    runner: str
    gpus: list[dict] = field(default_factory=list)
    vllm_version: str = ""
    reason: str = ""
    cause: str = ""  # why it does not fit: free_memory, weights, max_model_len, no_kv, gpus
    suggestions: list[str] = field(default_factory=list)
    auto: bool = False
    # measured: this architecture, quantization and GPU count were among vLLM's measured starts;
    # derived: modelled from vLLM's shapes, not measured as such; extrapolated: generic or unmodelled
    # parts, estimated with a margin (see docs/estimator.md)
    # what vLLM takes beyond gpu_memory_utilization x total (graph pool, per-request tables, warm-up): it
    # must be free as well on a GPU shared with other processes
    outside_budget_bytes: int = 0
    # the pinned host memory its weights (adapters and a draft included) take while it sleeps, per GPU (pinned.py:
    # one power-of-two backup per weight allocation)
    host_asleep_bytes: int = 0
    # part of cudagraph_bytes: one allocator segment per graph after the first, which vLLM's second capture
    # sometimes takes and then multiplies (activation.SEGMENT_PER_GRAPH); 0 without CUDA graph sampling
    graph_segment_bytes: int = 0
    # activation.GRAPH_MODES: "launcher" when vLLM gets VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0 and
    # vllm_gpu_memory_utilization, the share asked for less what it keeps for the graphs (cudagraph_bytes)
    graph_memory: str = "vllm"
    vllm_gpu_memory_utilization: float = 0.0
    weights_source: str = "config.json shapes"
    confidence: str = "derived"
    confidence_reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _validate(m: ModelArch, s: EngineSettings) -> None:
    u = s.gpu_memory_utilization
    if u is not None and not (0 < u <= 1):
        raise BadInput(f"--gpu-memory-utilization must be in (0, 1], got {u}.")
    tp, pp = s.tensor_parallel_size, s.pipeline_parallel_size
    if tp < 1 or pp < 1:
        raise BadInput("--tensor-parallel-size and --pipeline-parallel-size must be at least 1.")
    if m.num_heads % tp and m.layer_windows:  # a model of only recurrent layers has no attention heads
        raise BadInput(f"--tensor-parallel-size {tp} does not divide the model's {m.num_heads} attention heads.",
                       hint="Pick a tensor parallel size that divides it.")
    if pp > m.num_layers:
        raise BadInput(f"--pipeline-parallel-size {pp} is larger than the model's {m.num_layers} layers.")
    for name in ("max_num_batched_tokens", "max_num_seqs", "block_size", "kv_cache_memory_bytes"):
        v = getattr(s, name)
        if v is not None and v <= 0:
            raise BadInput(f"--{name.replace('_', '-')} must be positive, got {v}.")
    if isinstance(s.max_model_len, int) and s.max_model_len <= 0:
        raise BadInput(f"--max-model-len must be positive or 'auto', got {s.max_model_len}.")


def in_flight_tokens(s: EngineSettings, run: str, batched: int, vllm_version: tuple[int, ...]) -> int:
    """Tokens scheduled but not yet settled, which sliding-window and chunked-local layers reserve beyond their window
    (releases RULES "sliding_reserves_in_flight": VllmConfig.max_in_flight_tokens = max_concurrent_batches x
    max_num_batched_tokens): two batches with async scheduling (its default, but with pipeline parallel on the V1 runner,
    a speculative method it lacks or the Ray executor), pipeline-size batches with pipeline parallel."""
    if not releases.since("sliding_reserves_in_flight", vllm_version):
        return batched
    pp = s.pipeline_parallel_size
    on = s.async_scheduling
    if on is None:
        lacks = s.speculative is not None and s.speculative.method not in ASYNC_SPECULATIVE_METHODS
        on = not (lacks or s.executor == "ray" or (pp > 1 and run != "v2"))
    if on:
        batches = pp + 1 if run == "v2" else (2 if pp <= 1 else pp)
    else:
        batches = pp
    return batches * batched


# speculative methods async scheduling runs with (config/vllm.py: EAGLE/MTP kinds, draft models, n-gram on the GPU)
ASYNC_SPECULATIVE_METHODS = {"eagle", "eagle3", "mtp", "deepseek_mtp", "draft_model", "ngram_gpu", "dspark", "dflash"}


def as_built(m: ModelArch, vllm_version: tuple[int, ...]) -> ModelArch:
    """The model as this release builds it: through its Transformers backend (releases.TRANSFORMERS_BACKEND) no rotary
    cos/sin cache is registered, only transformers' inv_freq and original_inv_freq (rotary_dim / 2 float32 each)."""
    from .releases import builds_through_transformers

    if m.rotary and builds_through_transformers(m.architecture, vllm_version):
        return replace(m, rotary=False, inv_freq_bytes=2 * (weights.rotary_dim(m) // 2) * 4)
    return m


# speculative methods with which vLLM turns its hybrid KV cache manager off for chunked local attention (use_eagle)
EAGLE_KINDS = {"eagle", "eagle3", "mtp"}


def _windows_as_sized(m: ModelArch, s: EngineSettings, vllm_version: tuple[int, ...]) -> ModelArch:
    """The windowed layers as this launch sizes their caches: bounded where vLLM's hybrid KV cache manager runs, full
    length without it (vLLM's unify_hybrid_kv_cache_specs turns every window into full attention). It is off with
    --disable-hybrid-kv-cache-manager, and for Llama 4's chunked layers also with an EAGLE/MTP proposer
    (config/vllm.py) or in a release before releases.RULES chunked_local_hybrid."""
    from .releases import since

    if not m.layer_windows or m.state_layers:
        return m
    off = bool(s.disable_hybrid_kv_cache_manager)
    if m.chunked_local:
        eagle = s.speculative is not None and s.speculative.method in EAGLE_KINDS
        off = off or eagle or not since("chunked_local_hybrid", vllm_version)
    if not off:
        return m
    return replace(m, layer_windows=(None,) * len(m.layer_windows), chunked_local=False)


def estimate(m: ModelArch, s: EngineSettings, gpu: GpuBudget, *, vllm_version: tuple[int, ...] = (0, 24, 0),
             num_gpus_available: int | None = None, suggest: bool = True) -> Estimate:
    """Predict vLLM's memory accounting on one GPU (the most loaded one) and decide whether it fits."""
    _validate(m, s)
    tp, pp = s.tensor_parallel_size, s.pipeline_parallel_size
    ext = extensible(s, vllm_version)
    util = _utilization(s, ext, vllm_version)
    batched, seqs = _batch_defaults(s, gpu, vllm_version)
    block = s.block_size or 16
    derived = m.derived_max_len
    want_len, auto = _wanted_length(m, s)
    m = _with_launch_notes(m, s, gpu, vllm_version)
    m = as_built(m, vllm_version)
    m = _windows_as_sized(m, s, vllm_version)
    run = activation.runner(m, vllm_version, s.speculative)
    items = s.mm_items_per_prompt(m.vision_layout)
    own = weights.weights_bytes(m, tp, pp, capability=gpu.capability, vision=items != 0)
    w = own + blocks.weights_slack_bytes(m, tp, pp)  # as torch's allocator holds them (vLLM's "Model loading took")
    adapters = loramod.adapter_bytes(m, s.lora, tp=tp, pp=pp) if s.lora is not None else 0
    draft_w, draft_layers, m = _proposer(m, s, tp, gpu.capability, run)
    shape = activation.profile_shape(m, max_num_batched_tokens=batched, max_num_seqs=seqs, tp=tp, max_model_len=want_len,
                                     items_per_prompt=items)
    act = _activation(m, s, run, shape, batched)
    nt = activation.non_torch_bytes(run, tp * pp)
    requested = math.ceil(gpu.cuda_total_bytes * util)
    mode, cg, vllm_util, segment, graphs_outside = _graphs(m, s, run, gpu, util, requested, vllm_version, seqs=seqs,
                                                           batched=batched, draft_layers=draft_layers,
                                                           ext_tables_len=max(1, want_len) if ext else 0)
    pre = activation.pre_profile_buffers_bytes(m, run, max_num_seqs=seqs, max_num_batched_tokens=batched, block_size=block,
                                               max_model_len=want_len if want_len > 0 else derived) \
        if profile_counts_consumed(vllm_version) else 0  # inside the share from 0.27 (total_consumed)
    if ext:  # sized from what is free after warm-up and capture (the pool and block tables in cg, as measured)
        requested, act = extensible_budget(gpu, requested, extensible_peak(m, act, batched=batched,
                                                                            max_len=max(1, want_len)))
    avail = int(s.kv_cache_memory_bytes) if s.kv_cache_memory_bytes else \
        requested - (w + adapters + draft_w + act + nt + pre) - cg
    confidence, why = activation.confidence(m, tp * pp, vllm_version)
    if confidence == "extrapolated" and not s.kv_cache_memory_bytes:
        avail -= activation.extrapolated_margin_bytes(m, vllm_version, requested, avail)  # never guess high where nothing was measured
    lay = kv.layout(m, tp=tp, pp=pp, block_size=block, kv_cache_dtype=s.kv_cache_dtype,
                    mamba_cache_mode=_state_cache_mode(s, vllm_version), max_model_len=want_len,
                    extra_full_layers=draft_layers,
                    mla_hybrid_alignment=releases.since("mla_hybrid_block_alignment", vllm_version))
    block = lay.block_size or block  # a hybrid's attention block grows to hold one state page
    avail_pos = max(0, avail)
    # the fit answer keeps the calibrated headroom: better a little short than a failed load
    margin = 0 if s.kv_cache_memory_bytes else activation.fit_margin_bytes()
    in_flight = in_flight_tokens(s, run, batched, vllm_version)  # what a sliding window reserves beyond itself
    fit_len = lay.max_len_that_fits(max(0, avail - margin), derived, block, in_flight)
    used_len = fit_len if auto else want_len
    tokens = lay.tokens(avail_pos, max(used_len, 1), block, in_flight)
    per_req = lay.blocks_per_request(max(used_len, 1), block, in_flight)
    per_token = lay.bytes_per_block // block
    free = gpu.cuda_free_bytes
    # from 0.27 the V2 sampler's states are inside the share (pre): only the block tables stay out
    outside = 0 if ext else activation.outside_budget_bytes(
        run, enforce_eager=s.enforce_eager, graphs_outside=graphs_outside,
        request_buffers=activation.request_buffers_bytes(m, run, max_num_seqs=seqs, max_model_len=max(used_len, 1),
                                                         block_size=block, sampler_states_inside=bool(pre)))
    est = Estimate(
        fits=True, max_model_len=used_len, max_model_len_fit=fit_len, derived_max_model_len=derived,
        kv_cache_tokens=tokens, kv_cache_bytes=avail, kv_blocks=lay.num_blocks(avail_pos), weights_bytes=w,
        lora_bytes=adapters, draft_weights_bytes=draft_w, draft_kv_layers=draft_layers,
        activation_bytes=act, cudagraph_bytes=cg, non_torch_bytes=nt, requested_bytes=requested,
        total_bytes=gpu.total_bytes, gpu_memory_utilization=util, max_num_batched_tokens=batched,
        max_num_seqs=seqs, block_size=block, kv_bytes_per_token=per_token,
        max_concurrency=round(lay.num_blocks(avail_pos) / per_req, 2) if per_req else 0.0, runner=run, auto=auto,
        confidence=confidence, confidence_reason=why, graph_segment_bytes=segment, graph_memory=mode,
        vllm_gpu_memory_utilization=vllm_util, outside_budget_bytes=outside,
        host_asleep_bytes=pinned.pinned_weights_bytes(m, tp, pp, gpu.capability, total=own if items != 0 else None)
        + 2 * (adapters + draft_w),
        weights_source=(m.checkpoint.source if m.checkpoint is not None else "config.json shapes")
        + (f"; {m.weights_note}" if m.weights_note else ""),
    )
    # the extensible cache's budget is only a cap: no start-up check of the free memory (worker/utils.py request_memory)
    v = verdict(est, free_bytes=None if s.kv_cache_memory_bytes or ext else free, cuda_total_bytes=gpu.cuda_total_bytes,
                want_len=want_len, need_bytes=lay.bytes_per_request(want_len, block, in_flight),
                decode_graphs_need_blocks=bool(m.state_layers) and not s.enforce_eager, planned=gpu.planned)
    est = replace(est, fits=v.fits, cause=v.cause, reason=v.reason)
    if v.cause == "free_memory":
        advice = _shared_gpu_advice(m, s, gpu, vllm_version, free, outside)
    elif v.cause == "max_num_seqs":
        advice = _state_block_advice(m, s, gpu, vllm_version, est.kv_blocks)
    elif suggest and not v.fits:
        advice = _suggest(m, s, gpu, vllm_version, want_len, fit_len, num_gpus_available)
    else:
        advice = []
    return replace(est, suggestions=advice)


@dataclass(frozen=True)
class Verdict:
    fits: bool = True
    cause: str = ""  # free_memory, weights, max_model_len, no_kv, max_num_seqs (and gpus, from planning)
    reason: str = ""


def verdict(e: Estimate, *, free_bytes: int | None, cuda_total_bytes: int, want_len: int, need_bytes: int,
            decode_graphs_need_blocks: bool, planned: bool = False) -> Verdict:
    """Whether vLLM starts with this estimate, and if not where it would fail, in the order it would: its start-up
    check of the free memory (free_bytes None: not checked, as with --kv-cache-memory-bytes), the weights (loading,
    then the profile, fail before anything is captured), what it takes beyond its share (graph capture, after the
    KV cache is sized), the requested length, one block, and a block per decoding sequence for the decode
    CUDA graphs of a model with recurrent state (config/compilation.py; vLLM raises after sizing the KV cache)."""
    requested, outside = e.requested_bytes, e.outside_budget_bytes
    if free_bytes is not None and free_bytes < requested:
        return Verdict(False, "free_memory", (
            f"Free memory on device ({free_bytes / GiB:.2f}/{cuda_total_bytes / GiB:.2f} GiB) on startup is less than "
            f"desired GPU memory utilization ({e.gpu_memory_utilization}, {requested / GiB:.2f} GiB); vLLM would fail at once."))
    if e.kv_cache_bytes <= 0:
        w, adapters = e.weights_bytes, e.lora_bytes
        return Verdict(False, "weights", (
            f"the model does not fit at all: weights {(w + adapters) / GiB:.2f} GiB"
            + (f" (LoRA adapters {adapters / GiB:.2f} GiB)" if adapters else "") + " + activations and overhead "
            f"{(e.activation_bytes + e.non_torch_bytes + e.cudagraph_bytes) / GiB:.2f} GiB exceed the "
            f"{requested / GiB:.2f} GiB requested."))
    if free_bytes is not None and free_bytes < requested + outside:
        return Verdict(False, "free_memory", (
            f"vLLM would pass its start-up check ({free_bytes / GiB:.2f} GiB free, {requested / GiB:.2f} GiB requested) "
            f"but then needs about {outside / GiB:.2f} GiB more outside that share (CUDA graph capture, per-request "
            "tables, warm-up), " + ("which a bare card of this kind does not have beside that share" if planned
                                    else "which other processes hold")
            + ": it would fail with an out-of-memory error after loading."))
    if e.max_model_len_fit < want_len and not e.auto:
        reason = (f"max_model_len {want_len} needs {need_bytes / GiB:.2f} GiB of KV cache; only {e.kv_cache_bytes / GiB:.2f} "
                  f"GiB is available. The largest that fits is {e.max_model_len_fit}.")
        if need_bytes <= e.kv_cache_bytes + e.graph_segment_bytes:
            reason += (" It would fit if vLLM's CUDA graph estimate takes no fresh allocator segment, which depends on "
                       "the configuration and cannot be known before vLLM starts: "
                       f"{e.graph_segment_bytes / GiB:.2f} GiB are kept for it (docs/estimator.md); "
                       "--max-model-len auto lets vLLM pick the largest it finds.")
        return Verdict(False, "max_model_len", reason)
    if e.max_model_len_fit <= 0:
        return Verdict(False, "no_kv", "no KV cache is left for even one block.")
    if decode_graphs_need_blocks and e.kv_blocks < e.max_num_seqs:
        return Verdict(False, "max_num_seqs", (
            f"vLLM would fail after loading: max_num_seqs ({e.max_num_seqs}) exceeds the {e.kv_blocks:,} KV cache "
            "blocks it would have, and each decoding sequence of a model with recurrent state needs one block for "
            "CUDA graph capture."))
    return Verdict()


def _wanted_length(m: ModelArch, s: EngineSettings) -> tuple[int, bool]:
    """The max_model_len asked for (the model's maximum for none or 'auto'), and whether it was 'auto'."""
    derived = m.derived_max_len
    auto = s.max_model_len == "auto" or s.max_model_len == -1
    if isinstance(s.max_model_len, int) and not auto and s.max_model_len > derived:
        raise BadInput(f"--max-model-len {s.max_model_len} is larger than the model's maximum of {derived} "
                       "(derived from config.json); vLLM would refuse it.",
                       hint=f"Use at most {derived}, or 'auto'.")
    return (derived if (s.max_model_len is None or auto) else int(s.max_model_len)), auto


def _with_launch_notes(m: ModelArch, s: EngineSettings, gpu: GpuBudget, vllm_version: tuple[int, ...]) -> ModelArch:
    """The model with what this launch adds that is not measured (its `caveats` decide confidence and margin)."""
    refused = releases.unregistered(m.architecture, vllm_version)
    if refused:  # said, and no number moved: vLLM would not start it whatever it took
        m = replace(m, caveats=(*m.caveats, Caveat(refused, margin=Margin.SHAPES)))
    if activation.datacentre_blackwell(gpu.capability) and releases.since("blackwell_prefill_graphs", vllm_version) \
            and not s.enforce_eager:
        m = replace(m, caveats=(*m.caveats, Caveat(
            "vLLM 0.34's wider CUDA graph grids on data-centre Blackwell (prefill graphs up to 8192 tokens, "
            "config/vllm.py _split_cudagraph_capture_sizes) are not modelled")))
    if m.vision_layers and s.mm_processor_kwargs not in (None, "", {}, "{}"):
        # the processor's options decide the dummy inputs of the encoder's profile (Gemma 3's pan-and-scan crops,
        # Qwen-VL's pixel limits): not read, so the encoder is not modelled for this launch
        m = replace(m, caveats=(*m.caveats, Caveat("--mm-processor-kwargs changes the encoder's dummy inputs, which "
                                                   "are not modelled with it")))
    if s.lora is not None:
        loramod.check_supported(m)
        m = replace(m, caveats=(*m.caveats, *loramod.caveats(m)))
    return m


def _activation(m: ModelArch, s: EngineSettings, run: str, shape: activation.ProfileShape, batched: int) -> int:
    """The profile run's peak, with the rejection sampler's warm-up (speculative decoding) and LoRA's buffers."""
    act = activation.peak_activation_bytes(shape, run)
    if s.speculative is not None:  # the rejection sampler's warm-up beside the forward's hidden states
        warmup = specmod.v1_rejection_bytes if run == "v1" else specmod.sampler_bytes
        act = max(act, warmup(s.speculative, shape.rows, m.vocab_size, m.dtype_bytes) + 2 * shape.hidden
                  + activation.coefficients()["activation"][run]["const"])
        if s.speculative.method == "eagle3" and s.speculative.proposer_on_gpu:
            act += specmod.eagle3_aux_bytes(m, batched)
    if s.lora is not None:
        act += loramod.activation_bytes(s.lora, batched)
    return act


def extensible_peak(m: ModelArch, act: int, *, batched: int, max_len: int) -> int:
    """The transient peak the extensible KV cache keeps free (vLLM 0.34 gpu_worker._compile_or_warm_up_model: the
    larger of the profile's and the sizing warm-up's): taken as the profile's plus one chunk of prompt logits, which
    the warm-up computes and the profile does not (sample/prompt_logprob.py: 1024 tokens x vocabulary, the logits and
    their float32 log-probabilities). Read from the source, an upper bound, not measured."""
    return act + min(activation.PROMPT_LOGPROB_CHUNK, batched, max_len) * m.vocab_size * (m.dtype_bytes + 4)


def extensible_budget(gpu: GpuBudget, requested: int, peak: int) -> tuple[int, int]:
    """vLLM 0.34's extensible KV cache (v1/worker/extensible_kv_cache.py measure_kv_cache_bytes): KV =
    min(requested - non_kv, free at start - non_kv - margin) - peak, margin = max(1 GiB, 0.75 x peak). Returned as
    (min(requested, free at start), peak plus the part of the margin that cuts into that), so that the KV cache is
    that budget less the held terms (non_kv) and the second value."""
    free = gpu.cuda_free_bytes
    if free is None:  # an idle GPU: the total less the driver's reserve and vLLM's CUDA context
        free = gpu.cuda_total_bytes - context_bytes(gpu.total_bytes)
    margin = max(activation.EXTENSIBLE_MARGIN_FLOOR, int(peak * activation.EXTENSIBLE_MARGIN_FRACTION))
    return min(requested, free), peak + max(0, margin - max(0, free - requested))


def _graphs(m: ModelArch, s: EngineSettings, run: str, gpu: GpuBudget, util: float, requested: int, vllm_version: tuple[int, ...],
            *, seqs: int, batched: int, draft_layers: int, ext_tables_len: int = 0
            ) -> tuple[str, int, float, int, int | None]:
    """The CUDA graphs' terms: (mode, bytes kept inside the share, the utilization vLLM gets, the fresh segment
    kept for vLLM's own estimate, what the pool takes beyond the share or None for the measured allowance).
    ext_tables_len (the extensible KV cache, sized after capture: max_model_len of the block tables, 0 without it):
    "measured", the V2 pool and the block tables vLLM holds by then inside, nothing beyond."""
    tp, pp = s.tensor_parallel_size, s.pipeline_parallel_size
    graph_cases = loramod.GRAPH_CASES if s.lora is not None else 1  # each graph captured with and without adapters
    if draft_layers:  # the proposer's graphs beside the target's, as large per layer
        graph_cases *= 1 + draft_layers / max(1, m.num_layers)
    if ext_tables_len:
        pool = 0 if s.enforce_eager else int(activation.v2_graphs_outside_bytes(m, pp) * graph_cases)
        tables = activation.request_buffers_bytes(m, run, max_num_seqs=seqs, max_model_len=ext_tables_len,
                                                  block_size=s.block_size or 16, sampler_states_inside=True)
        return "measured", pool + tables, util, 0, 0
    mode = activation.graph_memory_mode(s.graph_memory, run, enforce_eager=s.enforce_eager, vllm_version=vllm_version,
                                        kv_cache_memory_bytes=s.kv_cache_memory_bytes)
    grid = activation.capture_grid(gpu.capability, vllm_version,
                                   s.speculative.num_speculative_tokens if s.speculative is not None else 0)
    sample = activation.graph_sample_bytes(m, run, enforce_eager=s.enforce_eager, tp=tp, max_num_seqs=seqs,
                                           max_num_batched_tokens=batched, grid=grid)
    sample = int(sample * graph_cases)
    vllm_util, segment, graphs_outside = util, 0, None
    if mode == "launcher":  # vLLM is given the share asked for less its graph estimate without the fresh segment
        vllm_util = max(1e-4, math.floor((requested - sample) / gpu.cuda_total_bytes * 1e4) / 1e4)
        cg = requested - math.ceil(gpu.cuda_total_bytes * vllm_util)
        graphs_outside = max(activation.GRAPHS_OUTSIDE_BUDGET[run], activation.graph_pool_bytes(m, sample) - cg)
    elif mode == "off":  # nothing subtracted: the whole pool is taken beyond the share
        cg, graphs_outside = 0, activation.graph_pool_bytes(m, sample)
    else:  # vLLM's own estimate: the sample and, as its second capture may take, a fresh segment per graph
        segment = activation.graph_segment_bytes(run, enforce_eager=s.enforce_eager, max_num_seqs=seqs,
                                                 max_num_batched_tokens=batched, grid=grid)
        cg = sample + segment
    if run == "v2" and graphs_outside is None:
        graphs_outside = int(activation.v2_graphs_outside_bytes(m, pp) * graph_cases)
    return mode, cg, vllm_util, segment, graphs_outside


def _proposer(m: ModelArch, s: EngineSettings, tp: int, cap: tuple[int, int] | None, run: str) -> tuple[int, int, ModelArch]:
    """The speculative proposer's weights and KV layers (as target layers), and the model with its notes."""
    spec = s.speculative
    if spec is None:
        return 0, 0, m
    if m.state_layers:  # mamba_utils.py: conv states take num_spec more rows (GDN, Mamba2; KDA from 0.27)
        m = replace(m, caveats=(*m.caveats, specmod.caveat("the recurrent layers' conv states grow by the draft "
                                                           "tokens; not counted")))
    if not spec.proposer_on_gpu:
        return 0, 0, replace(m, caveats=(*m.caveats, specmod.caveat(
            f"the {spec.method} proposer runs on the host; the rejection sampler's warm-up is counted"
            + ("" if run == "v1" else "; not measured on the V2 runner"), where="host")))
    draft = specmod.proposer_arch(m, spec, s.draft)
    if draft is None:
        raise BadInput(f"--speculative-config method {spec.method}: the draft model's config.json was not read.")
    extra = specmod.mtp_extra_bytes(m) // tp if spec.method in specmod.MTP_METHODS else 0
    dtp = spec.draft_tensor_parallel_size or tp
    if spec.method in specmod.EAGLE_METHODS:
        w = specmod.eagle_head_bytes(m, draft, spec.method, dtp, s.pipeline_parallel_size, s.draft_own_embedding,
                                     s.draft_own_lm_head, s.draft_vocab_size,
                                     lambda a: weights.layer_bytes(a, 0, dtp, cap))
    else:
        w = weights.weights_bytes(draft, dtp, 1, capability=cap) + extra
    if (spec.method, run) in specmod.MEASURED_PROPOSERS:
        note = specmod.caveat(f"the {spec.method} proposer's weights, KV layers and warm-up counted", where="measured")
    else:
        note = specmod.caveat(f"{spec.method} proposer: its weights and KV layers counted from its config; its "
                              "profile and CUDA graphs were not measured on a GPU")
    return w, specmod.kv_equivalent_layers(m, draft, tp), replace(m, caveats=(*m.caveats, note))


def _shared_gpu_advice(m: ModelArch, s: EngineSettings, gpu: GpuBudget, vv: tuple[int, ...], free: int,
                       outside: int) -> list[str]:
    """The largest utilization that starts beside what other processes hold, checked with the same model."""
    u = math.floor((free - outside) / gpu.cuda_total_bytes * 100) / 100
    if gpu.planned:  # nothing else runs on a planned card: the share itself must leave vLLM its room beside it
        e = estimate(m, replace(s, gpu_memory_utilization=u), gpu, vllm_version=vv, suggest=False) if u > 0 else None
        if e is not None and e.fits:
            return [f"--gpu-memory-utilization {u:.2f} (the largest that leaves the {outside / GiB:.2f} GiB vLLM "
                    "needs beyond its share on this card)"]
        if e is not None and e.cause == "max_model_len" and e.max_model_len_fit > 0:
            return [f"--gpu-memory-utilization {u:.2f} with --max-model-len {e.max_model_len_fit} (the largest "
                    f"utilization that leaves the {outside / GiB:.2f} GiB vLLM needs beyond its share on this card)"]
        return [f"a larger GPU or more of them: at --gpu-memory-utilization {u:.2f} the model does not fit"
                + (f" ({e.reason})" if e is not None else "")]
    tip = "or free the memory other processes hold."
    if u <= 0:
        return [f"free the memory other processes hold: {free / GiB:.2f} GiB free is not enough to start at all."]
    e = estimate(m, replace(s, gpu_memory_utilization=u), gpu, vllm_version=vv, suggest=False)
    if e.fits:
        return [f"--gpu-memory-utilization {u:.2f} (what is free now, less {outside / GiB:.2f} GiB vLLM needs "
                f"beyond that share), {tip}"]
    if e.cause == "max_model_len" and e.max_model_len_fit > 0:
        return [f"--gpu-memory-utilization {u:.2f} with --max-model-len {e.max_model_len_fit} (what is free now, less "
                f"{outside / GiB:.2f} GiB vLLM needs beyond that share), {tip}"]
    return [f"free the memory other processes hold: at --gpu-memory-utilization {u:.2f} (what is free now) "
            f"the model does not fit ({e.reason})"]


def _fits_with(m: ModelArch, s: EngineSettings, gpu: GpuBudget, vv: tuple[int, ...], **changes: object) -> bool:
    """Whether the launch fits with these settings changed (an advice is only given once re-checked)."""
    try:
        return estimate(m, replace(s, **changes), gpu, vllm_version=vv, suggest=False).fits
    except BadInput:
        return False


def _state_block_advice(m: ModelArch, s: EngineSettings, gpu: GpuBudget, vv: tuple[int, ...], blocks: int) -> list[str]:
    """Settings under which a hybrid's decode graphs find a block per sequence, each re-checked."""
    out = []
    for seqs in (blocks, blocks * 9 // 10, blocks // 2):
        if seqs >= 1 and _fits_with(m, s, gpu, vv, max_num_seqs=seqs):
            out.append(f"--max-num-seqs {seqs}")
            break
    out.append("--enforce-eager (no CUDA graphs: slower decoding)")
    return out


def _suggest(m: ModelArch, s: EngineSettings, gpu: GpuBudget, vv: tuple[int, ...], want_len: int, fit_len: int,
             num_gpus: int | None) -> list[str]:
    """Other settings that would make want_len fit, each checked with the same model."""
    out: list[str] = []
    if fit_len > 0:
        out.append(f"--max-model-len {fit_len} (or 'auto')")

    def fits(**kw) -> bool:
        return _fits_with(m, s, gpu, vv, max_model_len=want_len, **kw)

    free_share = 1.0 if gpu.cuda_free_bytes is None else gpu.cuda_free_bytes / gpu.cuda_total_bytes
    for u in (0.93, 0.94, 0.95, 0.96, 0.97, 0.98):
        cur = s.gpu_memory_utilization or default_utilization(vv)
        if u > cur and u <= free_share and fits(gpu_memory_utilization=u):
            out.append(f"--gpu-memory-utilization {u:.2f}")
            break
    if not s.kv_cache_dtype.startswith("fp8") and fits(kv_cache_dtype="fp8"):
        out.append("--kv-cache-dtype fp8")
    for tp in (2, 4, 8):
        if tp <= s.tensor_parallel_size or m.num_heads % tp:
            continue
        have = f" (you have {num_gpus})" if num_gpus is not None and num_gpus < tp else ""
        if fits(tensor_parallel_size=tp):
            out.append(f"--tensor-parallel-size {tp} on {tp} GPUs{have}")
            break
        util = _utilization_fix(m, s, gpu, vv, max_model_len=want_len, tensor_parallel_size=tp)
        if util:  # it fits split this way once the share leaves vLLM its room beside it
            out.append(f"--tensor-parallel-size {tp} {util} on {tp} GPUs{have}")
            break
    return out


def _utilization_fix(m: ModelArch, s: EngineSettings, gpu: GpuBudget, vv: tuple[int, ...], **changes: object) -> str:
    """'--gpu-memory-utilization U' where these settings fail only for the room vLLM needs beside its share and
    that utilization fits (re-checked by the shared-GPU advice), else ''."""
    try:
        e = estimate(m, replace(s, **changes), gpu, vllm_version=vv, suggest=False)
    except BadInput:
        return ""
    first = advice_flags(e.suggestions[0]) if e.suggestions else ""
    if e.fits or e.cause != "free_memory" or not first.startswith("--gpu-memory-utilization"):
        return ""
    return first


def advice_flags(suggestion: str) -> str:
    """The flags of one suggestion, without its explanation in parentheses ('--x 1 (why)' -> '--x 1')."""
    return suggestion.split(" (")[0]
