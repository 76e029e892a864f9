"""Peak activation of vLLM's profile run, non-torch memory and the CUDA graph estimate.

vLLM measures these at start-up (gpu_worker.determine_available_memory); we
count them from the shapes that drive them, as vLLM's code allocates them (a
layer's forward, the sampler's logits, the CUDA graph captures). What vLLM itself
measures rather than computes (its per-capture graph costs, non-torch memory, a
small constant over the profile count) is taken from its logged starts
(benchmarks/fit_calibration.py writes calibration.json from benchmarks/results/).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ..models.caveats import Margin
from ..models.config import ModelArch

if TYPE_CHECKING:
    from .speculative import SpecSettings

# vLLM 0.24.0 runs these architectures on its "model runner V2" (config/vllm.py
# DEFAULT_V2_MODEL_RUNNER_ARCHITECTURES). V2 does not subtract a CUDA graph
# estimate and warms its sampler up differently (peak_activation_bytes).
V2_RUNNER_ARCHS = frozenset({"Qwen3ForCausalLM", "DeepseekV2ForCausalLM", "Qwen2MoeForCausalLM",
                             "GraniteMoeForCausalLM", "LlamaForCausalLM", "MistralForCausalLM"})


@lru_cache(maxsize=1)
def coefficients() -> dict:
    return json.loads(Path(__file__).with_name("calibration.json").read_text())


# Speculative methods the V2 runner takes (vLLM 0.24.0 config/vllm.py _get_v2_model_runner_unsupported_features):
# any other proposer sends a V2 architecture back to the V1 runner.
V2_SPECULATIVE_METHODS = frozenset({"eagle", "eagle3", "mtp", "dflash"})


def runner(m: ModelArch, vllm_version: tuple[int, ...], speculative: SpecSettings | None = None) -> str:
    """The model runner vLLM picks: V2 where its release defaults to it (releases.uses_v2_runner: the listed
    architectures, or every dense one from 0.26) unless a speculative method it lacks is asked for, V1 otherwise."""
    from .releases import has_v1_runner, uses_v2_runner

    if not has_v1_runner(vllm_version):
        return "v2"
    if speculative is not None and speculative.method not in V2_SPECULATIVE_METHODS:
        return "v1"
    return "v2" if uses_v2_runner(m.architecture, vllm_version, moe=m.num_experts > 0,
                                  state=bool(m.state_layers)) else "v1"


# V1 runner's sampler warm-up (gpu_model_runner._dummy_sampler_run, sample/sampler.py, ops/topk_topp_sampler.py,
# vLLM 0.24.0): the model's logits (model dtype, still referenced by the caller), their float32 copy
# (Sampler.forward), the softmax probabilities (float32) and the exponential noise (float32,
# empty_exponential_noise_like); temperature, top-k and top-p work in place: at 8 rows or more top-k/top-p
# is the Triton kernel, which needs one float32 vocabulary row per program (programs: the GPU's SMs at most,
# TRITON_SAMPLER_PROGRAMS taken as the most of the GPUs served: L40S 142, H100/H200 132); below 8 rows it
# sorts (float32 values and int64 indices, SAMPLER_SORT_BYTES_PER_LOGIT more).
SAMPLER_FLOAT32_COPIES = 3
SAMPLER_SORT_BYTES_PER_LOGIT = 12
TRITON_SAMPLER_PROGRAMS = 144


def v1_sampler_bytes(rows: int, vocab: int, logit_bytes: int) -> int:
    """The V1 sampler warm-up's live set for `rows` x `vocab` logits (see SAMPLER_FLOAT32_COPIES)."""
    per_logit = logit_bytes + 4 * SAMPLER_FLOAT32_COPIES
    if rows >= 8:
        return rows * vocab * per_logit + min(rows, TRITON_SAMPLER_PROGRAMS) * vocab * 4
    return rows * vocab * (per_logit + SAMPLER_SORT_BYTES_PER_LOGIT)


@dataclass(frozen=True)
class ProfileShape:
    """The shapes of vLLM's profile run that drive its peak memory."""

    rows: int  # rows sampled (min(max_num_seqs, tokens))
    vocab: int
    moe_workspace: float  # bytes of the fused-MoE intermediate caches
    forward: float = 0.0  # bytes live in one decoder layer of the dummy forward (see profile_shape)
    encoder: float = 0.0  # bytes a multimodal encoder's profile adds (see encoder_bytes)
    # "image" towers (ViTs whose phase is measured apart, see peak_activation_bytes): what the encoder leaves
    # held while the language model runs (its dummy pixel values and outputs)
    encoder_held: float = 0.0
    encoder_apart: bool = False
    embedding: float = 0.0  # bytes of one vocabulary x hidden matrix per GPU, in the model dtype
    hidden: float = 0.0  # bytes of the hidden states of the profiled tokens (tokens x hidden, model dtype)
    logit_bytes: int = 2  # bytes of one logit as the model computes it (its dtype)

    @property
    def sampler(self) -> int:
        """Logits the sampler warm-up computes: rows sampled x vocab."""
        return self.rows * self.vocab


def encoder_patches(m: ModelArch, *, max_num_batched_tokens: int, max_model_len: int | None, max_num_seqs: int = 1024,
                    items_per_prompt: int | None = None) -> int:
    """Patches the vision tower runs in vLLM's profile run (gpu_model_runner.profile_run, multimodal/
    encoder_budget.py): the encoder budget is max(max_num_batched_tokens, the largest item's tokens), and
    vLLM encodes budget // item tokens items of the largest size at once (at most max_num_seqs x items per
    prompt, items per prompt being min(--limit-mm-per-prompt, max_model_len // item tokens), at least one).
    - "video" (Qwen2-VL, Qwen2.5-VL): the largest item is a video filling the sequence (measured: Qwen2-VL
      32,768 of 32,768 tokens; Qwen2.5-VL 114,688 of 128,000), taken as max_model_len tokens of merge^2
      patches each;
    - "image" (Gemma 3, LLaVA): fixed-size images of vision_item_tokens tokens and vision_item_patches patches;
    - not modelled: as "video" (the estimate then keeps the large margin, extrapolated_margin_bytes)."""
    if not m.vision_layers or items_per_prompt == 0:
        return 0
    length = max_model_len or m.derived_max_len
    if m.vision_layout == "image" and m.vision_item_tokens:
        tok = m.vision_item_tokens
        per_prompt = max(1, min(items_per_prompt if items_per_prompt is not None else length // tok, length // tok))
        items = max(1, min(max(max_num_batched_tokens, tok) // tok, max_num_seqs * per_prompt))
        return items * m.vision_item_patches
    return max(max_num_batched_tokens, length) * m.vision_merge ** 2


def encoder_bytes(m: ModelArch, patches: int) -> int:
    """What a multimodal model's profile run adds: the vision tower over `patches` (encoder_patches) at once. Live
    per patch: the dummy pixel values (3 x temporal x patch^2) and the larger of one vision block's MLP with
    its input (residual and normed input 2 d, fc1 output and activation I each, or gate_up 2 I and its
    product I when gated) and its attention (residual and normed input 2 d, fused QKV 3 d, contiguous
    copies of q, k, v 3 d, the output and its projection 2 d), in the model dtype. It adds to the language
    model's peak: measured on Qwen2-VL-7B 2.82 GiB and Qwen2.5-VL-7B 13.21 GiB above Qwen2.5-7B's peak
    (H200, 2026-11-23); this gives 3.41 and 13.35 GiB."""
    if not patches:
        return 0
    d = m.vision_hidden
    if m.vision_layout == "image":
        # vLLM's SigLIP and CLIP encoders (siglip.py, clip.py) keep the embeddings output referenced for the whole
        # loop (hidden_states_pool = [inputs_embeds]); inside a layer's MLP the layer's input (held by the loop),
        # the attention block's output, the normed input, fc1's output and its activation are live: 4 d + 2 I;
        # the attention block's own (8 d: input, normed input, fused QKV, its output and projection, the
        # embeddings) is the larger for I < 2 d. Measured: Gemma 3's SigLIP on 64 images (262,144 patches)
        # 6.77 GiB, this gives 6.74 + the constant (H200, 2026-12-01).
        live = max(4 * d + 2 * m.vision_intermediate, 8 * d)
        return int(patches * (m.vision_pixels + live) * m.dtype_bytes)
    mlp = 2 * d + (3 if m.vision_gated else 2) * m.vision_intermediate
    live = m.vision_pixels + max(mlp, 10 * d)
    return int(patches * live * m.dtype_bytes)


def encoder_held_bytes(m: ModelArch, patches: int) -> int:
    """What vLLM's profile run keeps from the encoder while the language model runs: the dummy batch's pixel
    values (profile_run holds batched_dummy_mm_inputs) and the encoder's outputs (encoder_cache), in the model
    dtype. Measured: Gemma 3 4B with 32 images 0.18 GiB above the same start without images (H200, 2026-12-01);
    this gives 0.18 GiB."""
    if not patches or not m.vision_item_patches:
        return 0
    items = patches // m.vision_item_patches
    return int((patches * m.vision_pixels + items * m.vision_item_tokens * m.hidden_size) * m.dtype_bytes)


def profile_shape(m: ModelArch, *, max_num_batched_tokens: int, max_num_seqs: int, tp: int,
                  max_model_len: int | None = None, items_per_prompt: int | None = None) -> ProfileShape:
    t = max_num_batched_tokens
    rows = min(max_num_seqs, t)
    ws = t * m.experts_per_tok * (3 * m.moe_intermediate_size // tp + m.hidden_size) * m.dtype_bytes if m.is_moe else 0
    # the dummy forward over t tokens, inside one layer's MLP: the residual and the normed hidden states
    # (2 x h), the fused QKV output still referenced, the gate_up output (2 x I) and the activation output
    # (I), all in the model dtype; for MoE the fused-MoE caches (moe_workspace) take the MLP's place
    qkv = (m.num_heads + 2 * m.num_kv_heads) * m.head_dim / tp
    mlp = 0 if m.is_moe else 3 * m.intermediate_size / tp
    forward = t * m.dtype_bytes * (2 * m.hidden_size + qkv + mlp)
    patches = encoder_patches(m, max_num_batched_tokens=t, max_model_len=max_model_len, max_num_seqs=max_num_seqs,
                              items_per_prompt=items_per_prompt)
    return ProfileShape(rows=rows, vocab=m.vocab_size, moe_workspace=ws,
                        forward=forward, encoder=encoder_bytes(m, patches), encoder_held=encoder_held_bytes(m, patches),
                        encoder_apart=m.vision_layout == "image",
                        embedding=m.vocab_size / tp * m.hidden_size * m.dtype_bytes, hidden=t * m.hidden_size * m.dtype_bytes,
                        logit_bytes=m.dtype_bytes)


def peak_activation_bytes(shape: ProfileShape, runner_kind: str, coef: dict | None = None) -> int:
    """Peak of vLLM's profile run (torch's peak allocation above the weights), whichever phase is largest:
    - the dummy forward over max_num_batched_tokens: the live set of one decoder layer (profile_shape);
    - the sampler warm-up on min(max_num_seqs, tokens) rows, with the forward's hidden states still held
      (2 x tokens x hidden). V1 (gpu_model_runner._dummy_sampler_run): v1_sampler_bytes, the model dtype's
      logits and three float32 copies, with the forward's hidden states held. V2 (gpu/model_runner.py): the logits in
      the model dtype and their float32 copy (sample/sampler.py apply_sampling_params); the dummy batch is
      greedy, so no sort;
    - one vocabulary x hidden matrix in the model dtype with two tokens x hidden tensors: the arguments of
      the embedding gather, the compiled graph's first kernel, as Inductor benchmarks it while compiling.
      vLLM 0.24 compiles during the profile run (its first forward) with Inductor's benchmark_combo_kernel
      on, and Inductor benchmarks a fused kernel on fresh random copies of all its arguments at the size
      hint, max_num_batched_tokens (torch/_inductor/codegen/triton.py get_args: rand_strided for every
      argument; scheduler.benchmark_fused_nodes). Measured: in every start where the other two phases are
      smaller the peak was this to within 0.03 GiB (Qwen2.5-7B at 2,048 tokens 1.04 GiB, Qwen3-8B/-32B with
      128 sequences 1.22-1.53 GiB, Qwen2.5-72B AWQ 2.57 GiB; benchmarks/results/h200-check/, 2026-12-01), on
      both runners; a restart on a warm compile cache, which compiles nothing, got 0.23 GiB more KV cache
      (Llama-3.1-8B, H100, 2026-11-22). The estimate assumes a cold cache, the larger peak.
    Then the fused-MoE caches, a multimodal encoder's profile (Qwen-VL towers: added, an upper bound measured on
    Qwen2-VL and Qwen2.5-VL; SigLIP/CLIP towers: the larger of their own phase and the language model's with
    what the encoder left held, as measured on Gemma 3), and a constant: the largest excess of a measured start
    over this count (benchmarks/fit_calibration.py), 0.03 GiB or less.
    `coef` replaces the shipped coefficients (benchmarks/fit_calibration.py)."""
    c = (coef or coefficients())["activation"][runner_kind]
    held = 2 * shape.hidden
    if runner_kind == "v1":  # the dummy forward's hidden states stay referenced meanwhile
        sampler = v1_sampler_bytes(shape.rows, shape.vocab, shape.logit_bytes) + shape.hidden
    else:
        sampler = (shape.logit_bytes + 4) * shape.sampler + held
    peak = max(sampler, shape.forward, shape.embedding + held)
    peak += shape.moe_workspace
    if shape.encoder_apart:  # the encoder's phase and the language model's, the latter with what the former left
        peak = max(peak + shape.encoder_held, shape.encoder)
    else:
        peak += shape.encoder
    peak += c["const"]
    return int(max(peak, 0.05 * 2**30))


def non_torch_bytes(runner_kind: str, tp: int) -> int:
    c = coefficients()["non_torch"]
    return int(c[runner_kind] + (c["per_extra_gpu"] if tp > 1 else 0))


@dataclass(frozen=True)
class CaptureGrid:
    """How a release picks its CUDA graph sizes (config/vllm.py _set_cudagraph_sizes): the largest size (512; from
    0.28 1024 on data-centre Blackwell), the tokens per request of a uniform decode batch (1 + draft tokens; from
    0.29 each such batch is captured too) and whether max_num_seqs itself is added where off the grid (0.31+)."""

    max_capture: int = 512
    decode_query_len: int = 1
    max_seqs_size: bool = False


DEFAULT_GRID = CaptureGrid()


def datacentre_blackwell(capability: tuple[int, int] | None) -> bool:
    """Compute capability 10.x (B200, GB200): where vLLM's releases pick wider CUDA graph grids."""
    return capability is not None and capability[0] == 10


def capture_grid(capability: tuple[int, int] | None, vllm_version: tuple[int, ...], num_speculative_tokens: int = 0
                 ) -> CaptureGrid:
    """The release's capture grid on this GPU (see CaptureGrid)."""
    from .releases import since

    return CaptureGrid(max_capture=1024 if datacentre_blackwell(capability) and since("blackwell_capture_to_1024",
                                                                                     vllm_version) else 512,
                       decode_query_len=1 + num_speculative_tokens if since("graphs_for_speculative_queries",
                                                                            vllm_version) else 1,
                       max_seqs_size=since("max_num_seqs_captured", vllm_version))


def cudagraph_sizes(max_num_seqs: int, max_num_batched_tokens: int, grid: CaptureGrid = DEFAULT_GRID) -> list[int]:
    """The batch sizes vLLM 0.24 captures (config/vllm.py, no speculative decoding): up to
    min(2 x max_num_seqs, 512, max_num_batched_tokens): 1, 2, 4, then every 8 below 256, every 16 above,
    and the batched tokens themselves when below that. PIECEWISE graphs are captured for all of them;
    FULL (uniform decode, one token per request) ones for those up to max_num_seqs."""
    q = grid.decode_query_len
    ceiling = min(max_num_seqs * q * 2, grid.max_capture)
    top = min(ceiling, max_num_batched_tokens)
    sizes = _grid(top)
    if max_num_batched_tokens <= top:
        sizes.add(max_num_batched_tokens)
    if q > 1:  # 0.29+: each uniform decode batch (requests x query length) that fits
        requests = min(max_num_seqs, grid.max_capture)
        sizes |= {n * q for n in _grid(requests) | {requests} if n * q <= top}
    elif grid.max_seqs_size and max_num_seqs <= top:  # 0.31+: the full decode batch itself
        sizes.add(max_num_seqs)
    return sorted(sizes)


def _grid(top: int) -> set[int]:
    """1, 2, 4, then every 8 below 256 and every 16 from 256, up to top."""
    return {i for i in (1, 2, 4) if i <= top} | set(range(8, min(top + 1, 256), 8)) | set(range(256, top + 1, 16))


def cudagraph_capture_sizes(max_num_seqs: int, max_num_batched_tokens: int, grid: CaptureGrid = DEFAULT_GRID) -> int:
    """How many sizes vLLM captures in PIECEWISE mode (cudagraph_sizes)."""
    return len(cudagraph_sizes(max_num_seqs, max_num_batched_tokens, grid))


def full_graph_sizes(max_num_seqs: int, max_num_batched_tokens: int, grid: CaptureGrid = DEFAULT_GRID) -> list[int]:
    """The sizes of vLLM's FULL decode graphs: one token per request, up to max_num_seqs."""
    return [n for n in cudagraph_sizes(max_num_seqs, max_num_batched_tokens, grid) if n <= max_num_seqs]


# vLLM sizes its graph memory from two captures per mode, each measured as the change of the device's free
# memory (gpu_model_runner.profile_cudagraph_memory), and multiplies the second by the graphs left. Whether
# that second capture finds room in the allocator's segments or takes a fresh one depends on what the
# allocator holds at that moment: PyTorch's caching allocator reserves 20 MiB segments for requests of 1 to
# 10 MiB (kLargeBuffer) and the device reports free memory in 2 MiB pages. The same configuration gives the
# same answer start after start (Gemma 3 4B at its defaults, three starts on two H200 hosts: 108 + 24 MiB
# per graph; at --max-model-len 8192 or --max-num-batched-tokens 16384: 118 + 4), but no shape predicts it
# (Phi-3-medium AWQ 22 MiB above the 16-bit line, Phi-3-mini AWQ 2). Each graph after the first is given one
# such segment and each mode's rounding: vLLM's estimate is then never above ours, and its KV cache never
# below (tests/test_estimator.py checks every logged start).
SEGMENT_PER_GRAPH = (20 + 2 + 2) << 20


def graph_segment_bytes(runner_kind: str, *, enforce_eager: bool, max_num_seqs: int = 1024,
                        max_num_batched_tokens: int = 8192, grid: CaptureGrid = DEFAULT_GRID) -> int:
    """The part of cudagraph_bytes kept for that segment: SEGMENT_PER_GRAPH for each graph after the first."""
    if enforce_eager or runner_kind != "v1":
        return 0
    return (cudagraph_capture_sizes(max_num_seqs, max_num_batched_tokens, grid) - 1) * SEGMENT_PER_GRAPH


def cudagraph_bytes(m: ModelArch, runner_kind: str, *, enforce_eager: bool, tp: int, max_num_seqs: int = 1024,
                    max_num_batched_tokens: int = 8192, coef: dict | None = None,
                    grid: CaptureGrid = DEFAULT_GRID) -> int:
    """The CUDA graph memory vLLM estimates and subtracts (V1 runner, graphs on): graph_sample_bytes, and
    graph_segment_bytes for the fresh segment its second capture sometimes takes."""
    return (graph_sample_bytes(m, runner_kind, enforce_eager=enforce_eager, tp=tp, max_num_seqs=max_num_seqs,
                               max_num_batched_tokens=max_num_batched_tokens, coef=coef, grid=grid)
            + graph_segment_bytes(runner_kind, enforce_eager=enforce_eager, max_num_seqs=max_num_seqs,
                                  max_num_batched_tokens=max_num_batched_tokens, grid=grid))


def graph_sample_bytes(m: ModelArch, runner_kind: str, *, enforce_eager: bool, tp: int, max_num_seqs: int = 1024,
                       max_num_batched_tokens: int = 8192, coef: dict | None = None,
                       grid: CaptureGrid = DEFAULT_GRID) -> int:
    """vLLM's two-capture graph estimate (V1 runner, graphs on) when its second capture takes no fresh segment
    (what the launcher keeps inside the share for the graphs, "launcher" mode), built as vLLM builds it
    (gpu_model_runner.profile_cudagraph_memory): per mode it captures the largest size and the next, and
    estimates max(first FULL capture, first PIECEWISE capture) + (sizes - 1) x (FULL + PIECEWISE per-graph
    cost), the two modes sharing one pool (FULL graphs go up to max_num_seqs only: counting them as many as
    the PIECEWISE ones is an upper bound). The first FULL capture grows with its batch and the hidden size
    (measured at 512, 64 and 16 sequences: 126-138 bytes per token and hidden unit), the per-graph
    cost with depth (one piece per layer); both are vLLM's own measurements of its captures, taken from the
    logged starts (benchmarks/fit_calibration.py); with recurrent state, the excess measured on those models.
    (Integer-weight kernels' few MiB more per graph are covered by graph_segment_bytes.)

    Per GPU it does not shrink with tensor parallelism (Mixtral-8x22B at TP 4 estimated 0.71 GiB per
    GPU, more than the one-GPU models of its depth): the graphs hold the all-reduce buffers too."""
    if enforce_eager or runner_kind != "v1":
        return 0
    c = (coef or coefficients())["cudagraph"]
    n = cudagraph_capture_sizes(max_num_seqs, max_num_batched_tokens, grid)
    full = full_graph_sizes(max_num_seqs, max_num_batched_tokens, grid)
    first = max(c["full_first_per_token_hidden"] * max(full, default=0) * m.hidden_size, c["piecewise_first"])
    per_graph = c["per_graph"] + c["per_graph_per_layer"] * m.num_layers
    return int(first + (n - 1) * per_graph + (c.get("state", 0.0) if m.state_layers else 0))


# How the CUDA graph pool is accounted for (Estimate.graph_memory):
# - "launcher": vLLM is started with VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0 (it then subtracts no estimate
#   of its own) and a --gpu-memory-utilization lowered by what vLLM's estimate comes to when its second capture
#   takes no fresh segment (graph_sample_bytes), so vLLM's KV cache no longer depends on
#   that capture (SEGMENT_PER_GRAPH); what the capture takes beyond it is taken beyond the share, as
#   with vLLM's own estimate, and counted there (graph_pool_bytes);
# - "vllm": vLLM's own estimate is subtracted (its default since 0.21; VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1
#   asked for, or a runner/version where the launcher leaves it alone);
# - "off": VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0 asked for by the user: nothing subtracted, the pool
#   taken outside the share.
GRAPH_MODES = ("launcher", "vllm", "off", "measured")  # measured: the extensible KV cache (0.34+) sees the pool
ESTIMATE_CUDAGRAPHS_ENV = "VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS"


def graph_memory_mode(asked: str | None, runner_kind: str, *, enforce_eager: bool, vllm_version: tuple[int, ...],
                      kv_cache_memory_bytes: int | None = None) -> str:
    """Which of GRAPH_MODES applies. Only the V1 runner with CUDA graphs subtracts an estimate (V2 subtracts
    none, gpu_worker.determine_available_memory), and only vLLM >= 0.21 has the switch; an explicit
    --kv-cache-memory-bytes skips the sizing altogether. Elsewhere vLLM's own behaviour, "vllm", is modelled."""
    from .releases import has_graph_estimate_env

    if enforce_eager or runner_kind != "v1" or kv_cache_memory_bytes or not has_graph_estimate_env(vllm_version):
        return "vllm"
    return asked or "launcher"


def graph_mode_from_env(env: dict | None) -> str | None:
    """The mode VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS asks for, when set ("1" vllm, "0" off)."""
    v = (env or {}).get(ESTIMATE_CUDAGRAPHS_ENV)
    if v is None or str(v).strip() == "":
        return None
    try:
        return "vllm" if int(str(v).strip()) else "off"
    except ValueError:
        return "vllm"  # vLLM would fail on it; model its default


# The pool vLLM's capture of all graphs really takes, logged as "Graph capturing finished in N secs, took X GiB"
# (gpu_model_runner.capture_model: device free memory before and after). vLLM's two-capture sample without
# the fresh segment (graph_sample_bytes) bounds it this way on every V1 start measured
# (H100/H200, vLLM 0.24.0, 2026-11-22 to 2026-12-02, 39 starts): taken / sample 0.38-1.24 for models without
# recurrent state, up to 1.95 with it (Qwen3-Next: its FULL decode graphs hold the state's buffers). The
# pool is taken as the sample x GRAPH_POOL_FACTOR, plus GRAPH_POOL_STATE_BYTES with recurrent state.
GRAPH_POOL_FACTOR = 1.3
GRAPH_POOL_STATE_BYTES = 400 << 20


def graph_pool_bytes(m: ModelArch, sample: int) -> int:
    """An upper bound of what vLLM's capture of all its CUDA graphs takes, from graph_sample_bytes (0 where
    nothing is captured: --enforce-eager, or the V2 runner, whose pool GRAPHS_OUTSIDE_BUDGET counts)."""
    if not sample:
        return 0
    return int(GRAPH_POOL_FACTOR * sample + (GRAPH_POOL_STATE_BYTES if m.state_layers else 0))


def fit_margin_bytes() -> int:
    """Headroom kept when answering the largest max_model_len that fits (see fit_calibration.py)."""
    return int(coefficients().get("fit_margin_bytes", 0))


# Memory vLLM takes after sizing its KV cache, outside `gpu_memory_utilization x total`: the CUDA graph
# pool beyond what it subtracted. On an idle GPU the (1 - utilization) share absorbs it; on a GPU shared
# with other processes it must be free as well, or capture fails with an OOM after loading.
# Measured on H200/H100 with vLLM 0.24.0 (benchmarks/results/*.jsonl, "Graph capturing ... took"):
# V2 runner (subtracts no estimate): 0.40-2.11 GiB taken over 20 starts, growing with the layers (Llama-3.2-1B
# 0.45, 8B models 0.9-1.0, Llama-2-13B 1.20, Qwen3-32B 1.87, Llama-3.1-70B AWQ 2.11 on one GPU, 1.22 at TP 4;
# DeepSeek-V2-Lite 1.20): bounded on every one of them by the larger of 1.25 GiB and 0.2 GiB + 30 MiB per layer
# on the GPU (v2_graphs_outside_bytes; tests/test_estimator.py checks each start). V1: taken minus estimated
# 0.04-0.22 GiB.
GRAPHS_OUTSIDE_BUDGET = {"v2": int(1.25 * 2**30), "v1": int(0.25 * 2**30)}
V2_GRAPHS_BASE, V2_GRAPHS_PER_LAYER = 200 << 20, 30 << 20


def v2_graphs_outside_bytes(m: ModelArch, pp: int = 1) -> int:
    """What the V2 runner's CUDA graph capture takes beyond the share (it subtracts no estimate): see above."""
    layers = -(-m.num_layers // max(1, pp))
    return max(GRAPHS_OUTSIDE_BUDGET["v2"], V2_GRAPHS_BASE + V2_GRAPHS_PER_LAYER * layers)
# Allocator slack and the warm-up after the KV cache is allocated, per runner: what a READY server's process
# held beyond its share and its CUDA context (nvidia-smi at READY, less the share, less the context vLLM's
# "Initial free memory" shows: 0.51 GiB on H200 with vLLM 0.24.0), beyond the graph pool's part counted above.
# Measured (benchmarks/results/*.jsonl used_ready_mib, 2026-12-01/02, H200): V1 runner up to 1.35 GiB
# (Gemma-2-9B AWQ with vLLM's own graph estimate; the sampler warm-up's float32 copies of a 256k vocabulary
# re-reserved after the KV cache, as allocator segments rather than the counted peak), V2 at most 0.15 GiB.
# The CUDA context itself is what GpuBudget.cuda_free_bytes takes off NVML's free memory (core.py).
WARMUP_SLACK = {"v1": int(1.25 * 2**30), "v2": 512 << 20}


# vLLM 0.24's V2 runner keeps per-request tables on the GPU (int32): the logit-bias, allowed, stop-token,
# logprob-token and bad-word tables (sample/logit_bias.py, logprob.py, bad_words.py: 1024 + 1024 + 1024 + 128
# + 128 + 1024 + 129 entries per request)
_V2_TABLE_ENTRIES_PER_REQUEST = 4481


def request_buffers_bytes(m: ModelArch, runner_kind: str, *, max_num_seqs: int, max_model_len: int,
                          block_size: int = 16, sampler_states_inside: bool = False) -> int:
    """GPU memory vLLM allocates per request slot outside the share it sizes. V2 runner: the sampler's
    states are created after the weights are measured and before the profile (model_runner.load_model),
    the block tables after the KV cache is sized (initialize_kv_cache), so neither is counted: the
    penalties' output_bin_counts (max_num_seqs x vocab int32), the prompt and grammar bit masks
    (max_num_seqs x vocab/32 int32 each), the tables above, and the block tables and their input copies
    (max_num_seqs x blocks per request int32, rounded up to 128 tokens). V1 allocates these lazily or on
    the host: nothing sizeable. sampler_states_inside: the release counts the sampler's states inside the share
    (0.27+, pre_profile_buffers_bytes): only the block tables are left outside."""
    if runner_kind != "v2":
        return 0
    blocks = -(-max_model_len // block_size)
    blocks = -(-blocks // max(1, 128 // block_size)) * max(1, 128 // block_size)
    tables = max_num_seqs * 4 * 2 * blocks
    return tables + (0 if sampler_states_inside else _v2_sampler_states_bytes(m, max_num_seqs))


def _v2_sampler_states_bytes(m: ModelArch, max_num_seqs: int) -> int:
    """The V2 runner's per-request sampler states (see request_buffers_bytes): bin counts, two bit masks, tables."""
    v = m.vocab_size
    return max_num_seqs * 4 * (v + 2 * -(-v // 32) + _V2_TABLE_ENTRIES_PER_REQUEST)


# V1 runner's per-token input buffers besides inputs_embeds (vLLM 0.27 gpu_model_runner.py __init__): input ids
# (int32), positions, request indices and query positions (int64 each) and the token-id flags (bool)
V1_INPUT_BYTES_PER_TOKEN = 4 + 8 + 8 + 8 + 1


def pre_profile_buffers_bytes(m: ModelArch, runner_kind: str, *, max_num_seqs: int, max_num_batched_tokens: int,
                              max_model_len: int, block_size: int = 16) -> int:
    """GPU buffers the model runner makes between the worker's start-up snapshot and the profile, outside the
    weights; from vLLM 0.27 the profile counts them (memory_profiling's total_consumed) and the KV cache is smaller
    by them. V2 runner: the sampler's per-request states (request_buffers_bytes less the block tables, which come
    after the KV cache is sized). V1 runner: inputs_embeds (tokens x hidden, model dtype), the other per-token
    inputs (V1_INPUT_BYTES_PER_TOKEN) and, per KV cache group, the input batch's block table (sequences x blocks per
    request, int32) and slot mapping (int64 per token)."""
    tokens, blocks = max_num_batched_tokens, -(-max_model_len // block_size)
    if runner_kind == "v2":
        return _v2_sampler_states_bytes(m, max_num_seqs)
    inputs = tokens * (m.hidden_size * m.dtype_bytes + V1_INPUT_BYTES_PER_TOKEN)
    return inputs + kv_groups(m) * (max_num_seqs * blocks * 4 + tokens * 8)


def kv_groups(m: ModelArch) -> int:
    """How many KV cache groups vLLM forms for the whole model: its layers counted per kind (full attention, each
    sliding window, recurrent state) and grouped by kv._group (kv_cache_utils._get_kv_cache_groups_uniform_page_size)."""
    from .kv import _group, own_cache_windows

    counts: dict = {}
    for w in own_cache_windows(m):
        counts[w] = counts.get(w, 0) + 1
    if m.state_layers:
        counts["state"] = m.state_layers
    return sum(n for _, n in _group(counts, 1).groups) if counts else 1


def outside_budget_bytes(runner_kind: str, *, enforce_eager: bool, request_buffers: int = 0,
                         graphs_outside: int | None = None) -> int:
    """What must be free beyond the requested share for vLLM to get past its CUDA graph capture.
    graphs_outside: the graph pool's part beyond the share where it is counted (graph_pool_bytes less what
    the share keeps for it), instead of the measured GRAPHS_OUTSIDE_BUDGET."""
    graphs = 0 if enforce_eager else GRAPHS_OUTSIDE_BUDGET[runner_kind] if graphs_outside is None else graphs_outside
    return WARMUP_SLACK[runner_kind] + request_buffers + graphs


# vLLM 0.34's extensible KV cache (v1/worker/extensible_kv_cache.py): the margin kept beyond the transient peak,
# max(KV_CACHE_MARGIN_FLOOR_BYTES, KV_CACHE_MARGIN_FRACTION x peak) on CUDA, and the prompt-logprob chunk of the
# sizing warm-up (v1/worker/gpu/sample/prompt_logprob.py CHUNK_SIZE)
EXTENSIBLE_MARGIN_FLOOR, EXTENSIBLE_MARGIN_FRACTION = 1 << 30, 0.75
PROMPT_LOGPROB_CHUNK = 1024


# Kept off the KV cache when the estimate is extrapolated. Two sizes:
# - a part of vLLM that nothing here models (a recurrent state of an unknown kind, a quantization method
#   not modelled, a vLLM version never measured, the encoder profile of a multimodal architecture whose
#   dummy inputs are not modelled (vision_layout): Qwen2.5-VL's blind estimate was +6.6% before its video
#   profile was modelled): 3% of the requested memory, about 2.2 GiB of an 80 GB card's request;
# - every term derived from the shapes, only this architecture never measured: 0.5% of the KV cache, at
#   least 256 MiB. Held out family by family (docs/estimator.md), such estimates came out at or below
#   vLLM's KV cache (-0.82% to -0.12% before this margin; starts of 2026-11-22/23 and 2026-12-01).
EXTRAPOLATED_MARGIN = 0.03
DERIVED_MARGIN, DERIVED_MARGIN_MIN_BYTES = 0.005, 256 << 20


def extrapolated_margin_bytes(m: ModelArch, vllm_version: tuple[int, ...], requested: int, kv_bytes: int) -> int:
    """The margin an extrapolated estimate keeps off the KV cache (see above): the large one where a caveat asks
    for it (models/caveats.py), a change of vLLM is not modelled or an encoder's profile is not."""
    from .releases import unmodelled as release_changes

    unmodelled = (any(c.margin is Margin.UNMODELLED for c in m.caveats)
                  or release_changes(vllm_version, bool(m.state_layers), m.architecture)
                  or (m.vision_layers and not m.vision_layout))
    if unmodelled:
        return int(EXTRAPOLATED_MARGIN * requested)
    return max(int(DERIVED_MARGIN * kv_bytes), DERIVED_MARGIN_MIN_BYTES)


def confidence(m: ModelArch, gpus: int, vllm_version: tuple[int, ...]) -> tuple[str, str]:
    """measured | derived | extrapolated, with the reason, from what vLLM's measured starts covered."""
    seen = coefficients().get("measured", {}).get(m.architecture)
    # some caveats (generic decoder shapes) are no reason for lower confidence once starts of this architecture
    # were measured
    caveats = [c for c in m.caveats if not (seen and c.until_measured)]
    if caveats:
        return "extrapolated", "; ".join(map(str, caveats))
    from .releases import is_listed, is_measured, unmodelled as release_changes

    version = ".".join(map(str, vllm_version[:3]))
    changes = release_changes(vllm_version, bool(m.state_layers), m.architecture)
    if changes:
        return "extrapolated", (f"vLLM {version}: " + "; ".join(changes) + (" (changed since 0.24.0, which was measured, "
                                "and not modelled; docs/vllm-releases.md)" if is_listed(vllm_version) else ""))
    if not is_measured(vllm_version):
        return "derived", (f"vLLM {version}'s memory mechanics read from its sources as 0.24.0's (measured) or "
                           "reviewed (docs/vllm-releases.md); no start of it was measured")
    if not seen:
        from ..models.config import SUPPORTED, conformance_matched

        how = ("its weights and KV cache per layer equal what vLLM's own model construction allocates (conformance "
               "run on the meta device)") if m.architecture in conformance_matched() and m.architecture not in SUPPORTED \
            else "it is modelled from vLLM's shapes"
        return "derived", f"{m.architecture}: {how}; no start of it was measured"
    gaps = []
    if m.quant.method not in seen["quant"]:
        gaps.append(f"{m.quant.method} weights")
    if m.num_layers > seen["max_layers"]:
        gaps.append(f"{m.num_layers} layers (measured up to {seen['max_layers']})")
    if gpus not in seen["gpus"]:
        gaps.append(f"{gpus} GPU(s) (measured: {', '.join(map(str, seen['gpus']))})")
    if gaps:
        return "derived", f"{m.architecture} measured, but not with " + ", ".join(gaps)
    return "measured", f"{m.architecture} measured with vLLM 0.24.0 up to {seen['max_layers']} layers"
