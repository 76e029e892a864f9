"""From a LaunchSpec to a running, supervised server (foreground or detached), and back to stopped."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import psutil

from .engine_args import to_argv
from .engines import vllm as vllm_engine
from .errors import BadInput, DoesNotFit, LaunchFailed
from .planning import ModelRef, Plan, plan, resolve_model
from .locks import FD_ENV, START_FD_ENV, NameLock, StartLock
from .runs import ACTIVE, read_json, read_state, run_dir, update_state, write_json
from .spec import LaunchSpec
from .supervisor import health, process
from .supervisor.policy import RestartPolicy

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from .cluster.watch import ClusterWatch
    from .engines.vllm import Installed
    from .estimator.core import Estimate
    from .supervisor.machine import State
    from .supervisor.run import ServerRun

    Fetch = Callable[[str, str | None, str | None], str]  # (repo, revision, download dir) -> local folder
    OnEvent = Callable[[str, dict], None]  # (kind, data): the supervisor's events

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
    from .engines import check_engine

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
    cluster = watch = None
    if spec.ray_address:
        from .cluster.preflight import prepare_cluster

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
    engine_args = dict(spec.engine_args)
    if spec.quantization not in ("none", "", None) and "quantization" not in engine_args:
        engine_args["quantization"] = spec.quantization
    return ref, engine_args


def _plan_checked(spec: LaunchSpec, ref: ModelRef, engine_args: dict, env: dict, watch: ClusterWatch | None,
                  notes: list[str]) -> Plan:
    """The pre-flight: the plan, refused when it does not fit; `engine_args` gets what the plan decides
    (the budget's translation, the length --max-model-len auto resolves to) and `notes` what to tell the user."""
    extra = {}
    if watch is not None:
        from .cluster.preflight import placement_and_nodes

        placement, nodes = placement_and_nodes(watch)
        extra = {"cluster_nodes": nodes, "placement": placement}
    p = plan(ref, engine_args, gpu_memory=spec.gpu_memory, gpu_preset=spec.gpu, num_gpus=spec.num_gpus, env=env,
             gpus_sel=spec.gpus, name=spec.name, gpu_memory_budget=spec.gpu_memory_budget, **extra)
    if spec.gpu_memory_budget:
        from .planning import budget_engine_args

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
        raise DoesNotFit(f"pre-flight: does not fit: {cpu_kv['reason']}",
                         hint="Lower VLLM_CPU_KVCACHE_SPACE (or --kv-cache-memory-bytes), or stop another launch.")
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


def _graph_share_note(e: Estimate) -> str:
    return (f"CUDA graphs: {e.cudagraph_bytes / 2**30:.2f} GiB of the {e.gpu_memory_utilization} share kept for them by "
            f"the launcher (vLLM gets --gpu-memory-utilization {e.vllm_gpu_memory_utilization:.4f} and "
            "VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0; set that variable to 1 to keep vLLM's own estimate).")


def graph_budget(e: Estimate | None, engine_args: dict) -> tuple[dict, dict]:
    """The engine arguments and variables vLLM gets when the launcher keeps its CUDA graph pool inside the
    share asked for (estimate.graph_memory "launcher", docs/estimator.md): vLLM's own estimate off
    (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0) and --gpu-memory-utilization less the pool."""
    if e is None or e.graph_memory != "launcher":
        return engine_args, {}
    from .estimator.activation import ESTIMATE_CUDAGRAPHS_ENV

    return ({**engine_args, "gpu-memory-utilization": f"{e.vllm_gpu_memory_utilization:.4f}"},
            {ESTIMATE_CUDAGRAPHS_ENV: "0"})


def _gpu_env(chosen: list[int], spec_env: dict) -> dict:
    """CUDA_VISIBLE_DEVICES for the chosen GPUs (NVML indices, so CUDA is told to number GPUs by PCI bus
    as NVML does). Nothing when the launch pins GPUs itself (--env CUDA_VISIBLE_DEVICES) or the parent's
    CUDA_VISIBLE_DEVICES names GPUs by UUID."""
    parent = os.environ.get("CUDA_VISIBLE_DEVICES")
    if "CUDA_VISIBLE_DEVICES" in spec_env or (parent and not all(x.strip().lstrip("-").isdigit()
                                                                  for x in parent.split(",") if x.strip())):
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, chosen)), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


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


def policy_for(spec: LaunchSpec) -> RestartPolicy:
    return RestartPolicy(startup_timeout_s=spec.startup_timeout_s)


def record_launch(prep: Prepared) -> None:
    """launch.json: the resolved launch (no secret values) and its run id, readable by the owner only.
    Takes the name's lock unless prepare(claim=True) took it already."""
    if prep.lock is None:
        prep.lock = NameLock.acquire(prep.spec.name, "launcher launch")
    d = run_dir(prep.spec.name)
    st = read_state(prep.spec.name)
    if st and st.get("state") in ACTIVE and (_supervisor_alive(st) or _alive(st, "server")):
        prep.release_locks()
        prep.lock = None
        raise BadInput(f"a launch named '{prep.spec.name}' is still running ({effective_state(st)}).",
                       hint=f"Stop it with `launcher stop {prep.spec.name}` or pick another --name.")
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    for f in ("state.json",):
        (d / f).unlink(missing_ok=True)
    prep.run_id = uuid.uuid4().hex
    write_json(d / "launch.json", {
        "spec": prep.spec.to_dict(), "argv": prep.argv, "port": prep.port, "run_id": prep.run_id,
        "host": prep.spec.host, "endpoint": f"http://{prep.spec.host}:{prep.port}/v1",
        "env_keys": sorted(set(prep.spec.env) | ({"VLLM_API_KEY"} if prep.spec.api_key_env else set())),
        "estimate": prep.plan.estimate.to_dict() if prep.plan and prep.plan.estimate else None,
        "cpu_kv": prep.plan.cpu_kv if prep.plan else None, "note": prep.note, "cluster": prep.cluster,
        "launcher_env": prep.launcher_env or {},
        "cluster_plan": prep.plan.cluster.to_dict() if prep.plan and prep.plan.cluster else None,
    })
    update_state(prep.spec.name, state="STARTING", created_at=time.time(), port=prep.port, host=prep.spec.host,
                 endpoint=f"http://{prep.spec.host}:{prep.port}/v1", restarts=0, run_id=prep.run_id)


def server_run(prep: Prepared, policy: RestartPolicy | None = None, on_event: OnEvent | None = None) -> ServerRun:
    """The supervised run of a prepared launch (with its cluster watch when it runs on Ray)."""
    from .cluster.preflight import watch_from_record
    from .supervisor.run import ServerRun

    return ServerRun(prep.spec.name, prep.argv, prep.env, prep.spec.host, prep.port, run_dir(prep.spec.name),
                     policy or policy_for(prep.spec), on_event=on_event, cluster=watch_from_record(prep.cluster),
                     run_id=prep.run_id, start_lock=prep.start_lock)


def run_foreground(prep: Prepared, on_event: OnEvent | None = None) -> tuple[ServerRun, State]:
    """Supervise in this process until stopped (SIGTERM, SIGINT or SIGHUP); the name's lock is held throughout."""
    record_launch(prep)
    try:
        sr = server_run(prep, on_event=on_event)
        return sr, sr.run()
    finally:
        prep.release_locks()


def start_detached(prep: Prepared) -> int:
    """Start the supervisor as a daemon (own session); returns its PID. The API key goes only through env.
    The name's lock goes to the daemon with it (an inherited descriptor): the name stays owned throughout."""
    record_launch(prep)
    try:  # the server env is rebuilt by the daemon from launch.json + this environment
        return _spawn_supervisor(prep.spec.name, dict(prep.env), prep.lock, prep.run_id, start_lock=prep.start_lock)
    finally:
        prep.release_locks()  # the daemon's inherited copies keep them held


def _spawn_supervisor(name: str, env: dict, lock: NameLock, run_id: str | None, *extra: str,
                      start_lock: StartLock | None = None) -> int:
    d = run_dir(name)
    env["LAUNCHER_HOME"] = str(d.parent.parent)
    env[FD_ENV] = str(lock.fd)
    fds = (lock.fd,)
    if start_lock is not None and start_lock.fd >= 0:
        env[START_FD_ENV] = str(start_lock.fd)
        fds += (start_lock.fd,)
    if run_id:
        env[SUPERVISOR_TAG_ENV] = run_id
    with open(d / "supervisor.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "launcher", "_supervise", name, *extra], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=os.getcwd(),
                                pass_fds=fds)
    return proc.pid


def supervise_from_record(name: str, adopt: bool = False) -> int:
    """Body of the daemon: read launch.json and supervise until stopped (adopt: the server already runs).
    Holds the name's lock it inherited (or takes it) for its whole life."""
    from .supervisor.machine import State

    lock = NameLock.inherited(name) or NameLock.acquire(name, "supervisor")
    lock.record("supervisor")
    start = StartLock.inherited(name)  # released once the server is READY
    if start is not None:
        start.record("supervisor")
    rec = read_json(run_dir(name) / "launch.json")
    if rec is None:
        raise LaunchFailed(f"no launch record for '{name}'.")
    spec = LaunchSpec(**rec["spec"])
    env = env_from_record(rec, spec)
    prep = Prepared(spec, None, rec["argv"], env, rec["port"], rec.get("note", ""), rec.get("cluster"), lock=lock,
                    run_id=rec.get("run_id"), start_lock=start)
    try:
        st = server_run(prep).run(adopt=adopt)
    finally:
        prep.release_locks()
    return 0 if st == State.STOPPED else 1


def env_from_record(rec: dict, spec: LaunchSpec | None = None) -> dict:
    """The server's environment, rebuilt from launch.json (spec.env, the variables the launcher set) and this
    process's environment: what every (re)start of a detached launch gets."""
    spec = spec or LaunchSpec(**rec["spec"])
    inst = vllm_engine.installed()
    env = vllm_engine.server_env(_without_tags(os.environ), spec.env, cpu_build=bool(inst and inst.cpu_build))
    env.update(rec.get("launcher_env") or {})
    if rec.get("cluster"):
        env["RAY_ADDRESS"] = rec["cluster"]["address"]
    return env


def unsupervised_note(name: str, st: dict) -> str:
    """What status/ps say of a server that outlived its supervisor."""
    return (f"supervisor gone, server still running on :{st.get('port')} (pid {(st.get('server') or {}).get('pid')}); "
            f"`launcher launch --name {name} --adopt` supervises it again, `launcher stop {name}` stops it")


def adopt(name: str) -> int:
    """Put a supervisor back over a server whose supervisor died, without restarting it; returns its PID.
    The name's lock is taken first: a second adopt (or a live supervisor) is refused at once."""
    st = read_state(name)
    rec = read_json(run_dir(name) / "launch.json")
    if st is None or rec is None:
        raise BadInput(f"no launch named '{name}'.", hint="See `launcher ps`.")
    lock = NameLock.acquire(name, "launcher launch --adopt")
    try:
        if _supervisor_alive(st) and st.get("state") in ACTIVE:
            raise BadInput(f"'{name}' is supervised already (supervisor PID {st['supervisor']['pid']}).")
        if not _alive(st, "server"):
            raise BadInput(f"nothing to adopt: the server of '{name}' is not running.",
                           hint=f"Start it again with `launcher launch --config ...` or remove the record: `launcher rm {name}`.")
        if st.get("damaged"):  # the new supervisor reads the server's identity from state.json: write it back
            update_state(name, base=st, state="UNKNOWN")
        return _spawn_supervisor(name, _without_tags(os.environ), lock, st.get("run_id") or rec.get("run_id"), "--adopt")
    finally:
        lock.release()  # the new supervisor holds its inherited copy


def _without_tags(env: Mapping[str, str]) -> dict:
    """An environment without the launcher's own process tags (a child gets them only where meant)."""
    return {k: v for k, v in env.items()
            if not k.startswith(process.RUN_ID_ENV) and k not in (SUPERVISOR_TAG_ENV, FD_ENV, START_FD_ENV)}


def _alive(st: dict, which: str) -> bool:
    """Whether the recorded process ('supervisor' or 'server') still runs (PID checked against its start time)."""
    s = st.get(which) or {}
    return bool(s) and process.ProcRef(s["pid"], s["create_time"]).alive()


def _supervisor_alive(st: dict) -> bool:
    return _alive(st, "supervisor")


def effective_state(st: dict) -> str:
    """The recorded state, corrected when the supervisor died without recording it."""
    state = st.get("state", "?")
    if state in ACTIVE and (st.get("supervisor") or state == "UNKNOWN") and not _supervisor_alive(st):
        return "UNSUPERVISED" if _alive(st, "server") else "DEAD"
    return state


def wait_until(name: str, states: tuple[str, ...], timeout_s: float, poll_s: float = 0.25,
               on_poll: Callable[[dict], None] | None = None) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        st = read_state(name) or {}
        if on_poll:
            on_poll(st)
        eff = effective_state(st) if st else "?"
        if eff in states or eff in ("DEAD", "UNSUPERVISED"):
            return st | {"state": eff}
        if time.monotonic() > deadline:
            return st | {"state": eff, "timed_out": True}
        time.sleep(poll_s)


def stop(name: str, timeout_s: float = 60.0) -> dict:
    """Stop a launch: SIGTERM its supervisor (verified by start time), wait, then sweep whatever is left of the
    run (recorded PIDs, the process group, every process tagged with the run id). Works from launch.json and
    the name's lock when state.json is damaged."""
    st = read_state(name)
    if st is None:
        raise BadInput(f"no launch named '{name}'.", hint="See `launcher ps`.")
    sups = [process.ProcRef(st["supervisor"]["pid"], st["supervisor"]["create_time"])] if st.get("supervisor") else []
    if st.get("run_id"):
        sups += process.tagged(SUPERVISOR_TAG_ENV, st["run_id"])
    signalled = [ref for ref in sups if ref.signal(signal.SIGTERM)]
    deadline = time.monotonic() + timeout_s
    while any(ref.alive() for ref in signalled) and time.monotonic() < deadline:
        time.sleep(0.05)
    for ref in signalled:
        ref.signal(signal.SIGKILL)
    st = read_state(name) or st
    srv = st.get("server") or {}
    refs = [process.ProcRef(srv["pid"], srv["create_time"])] if srv else []
    refs += [process.ProcRef(p, c) for p, c in st.get("descendants", [])]
    killed = process.sweep_run(st.get("run_id", "-"), srv.get("pgid"), refs) if st.get("run_id") or refs else []
    done = {"state": "STOPPED", "swept": killed, "stopped_at": st.get("stopped_at") or time.time()}
    if st.get("damaged"):
        done["repaired"] = st["damaged"]
    return update_state(name, base={k: v for k, v in st.items() if k != "damaged"}, **done)
