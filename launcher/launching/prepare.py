"""Plan and prepare a launch: validate, resolve the model, run the pre-flight, choose port and GPUs, build the
exact command line. Starts nothing."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import psutil

from ..engine_args import to_argv
from ..engines import cpu_tiles
from ..engines import vllm as vllm_engine
from ..errors import BadInput, DoesNotFit
from ..locks import FD_ENV, START_FD_ENV, NameLock, StartLock
from ..planning import ModelOptions, ModelRef, Plan, plan, resolve_model
from .. import process
from ..spec import LaunchSpec
from .. import health

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ..cluster.watch import ClusterWatch
    from ..engines.vllm import Installed
    from ..estimator.core import Estimate

    Fetch = Callable[[str, str | None, str | None], str]  # (repo, revision, download dir) -> local folder

SUPERVISOR_TAG_ENV = "LAUNCHER_SUPERVISES"  # a detached supervisor's environment names the run it supervises


@dataclass
class Prepared:
    spec: LaunchSpec
    plan: Plan | None
    argv: list[str]
    env: dict
    port: int
    note: str = ""
    cluster: dict | None = None  # address, dashboard, bundles, device of a launch on a Ray cluster
    launcher_env: dict | None = None  # variables the launcher sets for the server (kept in launch.json)
    lock: NameLock | None = None  # the launch name's lock, held from prepare(claim=True) to the end of the run
    run_id: str | None = None  # tags every process of the run (set by record_launch, kept in launch.json)
    start_lock: StartLock | None = None  # one start at a time on this host: held from planning until READY

    def release_locks(self) -> None:
        """This process's copies of the locks (an inherited copy in a supervisor keeps them held)."""
        for lock in (self.lock, self.start_lock):
            if lock is not None:
                lock.release()


def prepare(spec: LaunchSpec, *, check_port: bool = True, fetch: Fetch | None = None, claim: bool = False,
            on_start_wait: Callable[[dict], None] | None = None) -> Prepared:
    """Validate everything and build the exact command line; start nothing.

    fetch(repo, revision, download_dir) -> local folder: called once the launch is known to fit, for a
    model that lives on the Hub, so that vLLM starts on local files (its start-up deadline then covers
    the engine only). Without it (--print-config) the command line names the repository.
    claim: the launch is about to start: vLLM must be installed, and the name's lock is taken first
    (a second launch of the same name is refused at once, before any planning or download), then the host's start
    lock (locks.StartLock: a launch plans only once any other launch of ours is past its start, so the free memory
    it reads is what the others hold for good). on_start_wait(holder) is called once when that lock is held."""
    from ..engines import check_engine

    check_engine(spec.model_engine)
    inst = vllm_engine.installed()
    if claim:
        if inst is None:
            raise vllm_engine.not_installed()
        lock = NameLock.acquire(spec.name, "launcher launch")
        start = None
        try:
            start = StartLock.acquire_waiting(spec.name, spec.startup_timeout_s, on_start_wait)
            prep = _prepare(spec, inst, check_port, fetch)
        except BaseException:
            for held_lock in (lock, start):
                if held_lock is not None:
                    held_lock.release()
            raise
        prep.lock, prep.start_lock = lock, start
        return prep
    return _prepare(spec, inst, check_port, fetch)


def _prepare(spec: LaunchSpec, inst: Installed | None, check_port: bool, fetch: Fetch | None) -> Prepared:
    """Resolve the model, plan the launch, choose the port and environment, build the command line."""
    ref, engine_args = _resolve(spec)
    cpu_build = bool(inst and inst.cpu_build)
    env = vllm_engine.server_env(_without_tags(os.environ), spec.env, cpu_build=cpu_build)
    if cpu_build:
        cpu_tiles.check_plugin()
    cluster = watch = None
    if spec.ray_address:
        from ..cluster.preflight import prepare_cluster

        cluster, watch = prepare_cluster(spec, engine_args, cpu_build=cpu_build)
        env["RAY_ADDRESS"] = cluster["address"]
    notes: list[str] = []
    p = _plan_checked(spec, ref, engine_args, env, watch, notes) if spec.preflight else None
    if spec.gpu_memory_budget and not spec.preflight:
        raise BadInput("--gpu-memory-budget is translated by the pre-flight: drop --no-preflight.")
    if p is not None and p.beside_note:  # what our launches already running here hold
        notes.append(p.beside_note)
    if p is not None and p.chosen_gpus is not None and not spec.ray_address:
        pin = _gpu_env(p.chosen_gpus, spec.env)
        if pin:
            env.update(pin)
            notes.append(f"Running on {p.gpu_choice}.")
    port = _port(spec, check_port)
    load = ref.load
    if fetch is not None and ref.repo:
        load = fetch(ref.repo, ref.revision or spec.revision, spec.download_dir)
        engine_args.setdefault("served-model-name", ref.repo)  # clients keep asking for the repository id
    server_args, launcher_env = graph_budget(p.estimate if p is not None else None, engine_args)
    env.update(launcher_env)
    if launcher_env:
        notes.append(_graph_share_note(p.estimate))
    argv = vllm_engine.server_command(load, spec.host, port, to_argv(server_args, vllm_engine.arg_spec(inst)))
    if spec.api_key_env:
        env["VLLM_API_KEY"] = os.environ[spec.api_key_env]
    return Prepared(replace(spec, engine_args=engine_args), p, argv, env, port, " ".join(notes), cluster, launcher_env)


def _resolve(spec: LaunchSpec) -> tuple[ModelRef, dict]:
    """The model (a folder, the catalog or a Hub repository) and the engine arguments with --quantization."""
    ref = resolve_model(spec.model_path, spec.model_name, spec.size_in_billions, spec.model_format, spec.quantization,
                        dtype=spec.engine_args.get("dtype"), parse_arch=spec.preflight, model_repo=spec.model,
                        revision=spec.revision)
    return ref, ModelOptions.of(spec.model_format, spec.quantization).engine_args(spec.engine_args)


def _plan_checked(spec: LaunchSpec, ref: ModelRef, engine_args: dict, env: dict, watch: ClusterWatch | None,
                  notes: list[str]) -> Plan:
    """The pre-flight: the plan, refused when it does not fit; `engine_args` gets what the plan decides
    (the budget's translation, the length --max-model-len auto resolves to) and `notes` what to tell the user."""
    extra = {}
    if watch is not None:
        from ..cluster.preflight import placement_and_nodes

        placement, nodes = placement_and_nodes(watch)
        extra = {"cluster_nodes": nodes, "placement": placement}
    p = plan(ref, engine_args, gpu_memory=spec.gpu_memory, gpu_preset=spec.gpu, num_gpus=spec.num_gpus, env=env,
             gpus_sel=spec.gpus, name=spec.name, gpu_memory_budget=spec.gpu_memory_budget, **extra)
    if spec.gpu_memory_budget:
        from ..planning import budget_engine_args

        engine_args.update(budget_engine_args(p.settings))
    if p.cluster is not None and p.estimate is None:
        raise DoesNotFit("pre-flight: " + " ".join(p.notes))
    e = p.estimate
    auto = engine_args.get("max-model-len") == "auto"
    if e is not None and not e.fits and not (auto and e.cause == "max_model_len" and e.max_model_len_fit > 0):
        raise DoesNotFit(f"pre-flight: does not fit: {e.reason}",
                         hint=("Try: " + "; ".join(e.suggestions) + ".") if e.suggestions else None, estimate=e)
    if e is not None and auto:
        length = e.max_model_len if e.fits else e.max_model_len_fit
        engine_args["max-model-len"] = length
        notes.append(f"--max-model-len auto: launching with {length} (the largest that fits).")
    _check_cpu_kv(p.cpu_kv)
    return p


def _check_cpu_kv(cpu_kv: dict | None) -> None:
    """The CPU build's KV cache: refused where the host cannot hold it or the length does not fit it."""
    if cpu_kv and cpu_kv.get("reason"):
        weights, avail = cpu_kv.get("weights_bytes") or 0, cpu_kv.get("host_available_bytes") or 0
        hint = ("The weights alone need more than this host has available: a quantized variant (--model-format awq "
                "or gptq), a smaller model, a host with more memory, or a GPU." if weights >= avail else
                "Lower VLLM_CPU_KVCACHE_SPACE (or --kv-cache-memory-bytes), or stop another launch.")
        raise DoesNotFit(f"pre-flight: does not fit: {cpu_kv['reason']}", hint=hint)
    if cpu_kv and cpu_kv.get("fits") is False:
        raise DoesNotFit(f"pre-flight: max_model_len {cpu_kv['max_model_len']} does not fit the CPU KV cache "
                         f"({cpu_kv['kv_cache_tokens']} tokens).",
                         hint=f"Use --max-model-len {cpu_kv['max_model_len_fit']} or raise VLLM_CPU_KVCACHE_SPACE.")


def _port(spec: LaunchSpec, check_port: bool) -> int:
    """--port, checked free; without it $LAUNCHER_PORT (default 8000), or a free port where that one is taken."""
    port = spec.port
    if port is None:
        first = default_port()
        return first if health.port_free(spec.host, first) else health.find_free_port(
            spec.host if spec.host != "0.0.0.0" else "127.0.0.1")
    if check_port and not health.port_free(spec.host, port):
        raise BadInput(f"port {port} on {spec.host} is already in use{_port_owner(port)}.",
                       hint="Pick another --port, or stop what holds it.")
    return port


def default_port() -> int:
    """The port tried first without --port: $LAUNCHER_PORT, else vLLM's 8000."""
    raw = os.environ.get("LAUNCHER_PORT", "").strip()
    if not raw:
        return 8000
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise BadInput(f"LAUNCHER_PORT must be a port number (1-65535), got '{raw}'.")
    return int(raw)


def _port_owner(port: int) -> str:
    for pid in sorted(health.listener_pids(port) or ()):
        try:
            return f" (by PID {pid}, {psutil.Process(pid).name()})"
        except psutil.Error:
            pass
    return ""


def _gpu_env(chosen: list[int], spec_env: dict) -> dict:
    """CUDA_VISIBLE_DEVICES for the chosen GPUs (NVML indices, so CUDA is told to number GPUs by PCI bus
    as NVML does). Nothing when the launch pins GPUs itself (--env CUDA_VISIBLE_DEVICES) or the parent's
    CUDA_VISIBLE_DEVICES names GPUs by UUID."""
    parent = os.environ.get("CUDA_VISIBLE_DEVICES")
    if "CUDA_VISIBLE_DEVICES" in spec_env or (parent and not all(x.strip().lstrip("-").isdigit()
                                                                  for x in parent.split(",") if x.strip())):
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, chosen)), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def graph_budget(e: Estimate | None, engine_args: dict) -> tuple[dict, dict]:
    """The engine arguments and variables vLLM gets when the launcher keeps its CUDA graph pool inside the
    share asked for (estimate.graph_memory "launcher", docs/estimator.md): vLLM's own estimate off
    (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0) and --gpu-memory-utilization less the pool."""
    if e is None or e.graph_memory != "launcher":
        return engine_args, {}
    from ..estimator.activation import ESTIMATE_CUDAGRAPHS_ENV

    return ({**engine_args, "gpu-memory-utilization": f"{e.vllm_gpu_memory_utilization:.4f}"},
            {ESTIMATE_CUDAGRAPHS_ENV: "0"})


def _graph_share_note(e: Estimate) -> str:
    return (f"CUDA graphs: {e.cudagraph_bytes / 2**30:.2f} GiB of the {e.gpu_memory_utilization} share kept for them by "
            f"the launcher (vLLM gets --gpu-memory-utilization {e.vllm_gpu_memory_utilization:.4f} and "
            "VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0; set that variable to 1 to keep vLLM's own estimate).")


def _without_tags(env: Mapping[str, str]) -> dict:
    """An environment without the launcher's own process tags (a child gets them only where meant)."""
    return {k: v for k, v in env.items()
            if not k.startswith(process.RUN_ID_ENV) and k not in (SUPERVISOR_TAG_ENV, FD_ENV, START_FD_ENV)}
