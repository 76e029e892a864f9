"""LaunchSpec: one frozen, validated description of a launch, from flags, a launch file and passthrough args.

Flags win over the file. The file is untrusted input: YAML through safe_load (no
tags), a pydantic model with extra="forbid" (unknown keys rejected).

Three shapes of launch file are read as they are:
- ours: the flags' names, engine arguments under `engine_args:`;
- vLLM's own `--config` YAML: flat, vLLM's argument names in either spelling, `model:`;
- Triton's vLLM backend `model.json`: EngineArgs as JSON, `"model": ...`, underscores.
Top-level keys that are not ours are engine arguments when the installed vLLM knows them;
anything else is rejected with did-you-mean against both lists.
"""
from __future__ import annotations

import ipaddress
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .errors import BadInput, did_you_mean
from .models.hub import looks_like_repo_id

if TYPE_CHECKING:
    from .engine_args import ArgSpec

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


@dataclass(frozen=True)
class LaunchSpec:
    name: str
    model_path: str | None = None
    model_name: str | None = None
    size_in_billions: str | None = None
    model_format: str = "pytorch"
    quantization: str = "none"
    model_engine: str = "vllm"
    model: str | None = None  # a Hugging Face Hub repository id
    revision: str | None = None
    download_dir: str | None = None
    engine_args: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int | None = None
    api_key_env: str | None = None
    allow_unauthenticated: bool = False
    startup_timeout_s: float = 900.0
    preflight: bool = True
    gpu_memory: str | None = None
    gpu: str | None = None
    num_gpus: int | None = None
    gpus: str | None = None  # 'auto' (default: the GPUs with the most free memory) or NVML indices '0,3'
    gpu_memory_budget: str | None = None  # bytes per GPU for this launch (20GiB), translated for vLLM by planning
    ray_address: str | None = None  # HOST:PORT or auto: run on a Ray cluster (vLLM's Ray executor)
    ray_dashboard: str | None = None

    def to_dict(self) -> dict:
        """The launch as launch.json records it (the API key left out)."""
        from dataclasses import asdict

        return asdict(self)


FILE_KEYS = {f for f in LaunchSpec.__dataclass_fields__} - {"engine_args"}


def load_file(path: str, engine_spec: ArgSpec | None = None) -> dict:
    """Read a launch file (.yaml/.yml/.json) into a dict of spec keys plus 'engine_args' (a raw mapping).

    engine_spec: the installed vLLM's ArgSpec, to take flat engine arguments (vLLM --config YAML,
    Triton model.json); without it only our own shape is accepted."""
    data = read_mapping(path, "launch file")
    return launch_mapping(data, engine_spec, f"launch file '{path}'")


def read_mapping(path: str, what: str) -> dict:
    """A YAML (safe_load, no tags) or JSON file whose top level is a mapping; BadInput in one line otherwise."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"{what} '{path}' not found.")
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            raise BadInput(f"{what} '{path}': use .yaml, .yml or .json.")
    except BadInput:
        raise
    except Exception as e:  # yaml.YAMLError (tags included), JSONDecodeError
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadInput(f"{what} '{path}' is malformed: {first}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BadInput(f"{what} '{path}': expected a mapping at the top level.")
    return data


def launch_mapping(data: dict, engine_spec: ArgSpec | None, where: str) -> dict:
    """One launch as a mapping (a launch file, or one entry of the gateway's models file), checked: spec keys plus
    'engine_args' (a raw mapping). `where` names it in errors."""
    from pydantic import BaseModel, ConfigDict, ValidationError

    class LaunchFile(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=False)
        name: Optional[str] = None
        model_path: Optional[str] = None
        model_name: Optional[str] = None
        size_in_billions: Optional[str] = None
        model_format: Optional[str] = None
        quantization: Optional[str] = None
        model_engine: Optional[str] = None
        model: Optional[str] = None
        revision: Optional[str] = None
        download_dir: Optional[str] = None
        engine_args: dict[str, Any] = {}
        env: dict[str, str] = {}
        host: Optional[str] = None
        port: Optional[int] = None
        api_key_env: Optional[str] = None
        allow_unauthenticated: Optional[bool] = None
        startup_timeout_s: Optional[float] = None
        preflight: Optional[bool] = None
        gpu_memory: Optional[str] = None
        gpu: Optional[str] = None
        num_gpus: Optional[int] = None
        gpus: Optional[str] = None
        gpu_memory_budget: Optional[str] = None
        ray_address: Optional[str] = None
        ray_dashboard: Optional[str] = None

    data, flat = _split_foreign(dict(data), engine_spec, where)
    if "size_in_billions" in data and data["size_in_billions"] is not None:
        data["size_in_billions"] = str(data["size_in_billions"])
    try:
        lf = LaunchFile(**data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            known = list(LaunchFile.model_fields) + (list(engine_spec.args) if engine_spec else [])
            raise BadInput(f"{where}: unknown key '{loc}'.{did_you_mean(loc, known)}") from None
        raise BadInput(f"{where}: {loc}: {err['msg']}.") from None
    out = lf.model_dump(exclude_none=True)
    if flat:
        out["engine_args"] = {**flat, **out.get("engine_args", {})}
    return out


def _split_foreign(data: dict, engine_spec: ArgSpec | None, where: str) -> tuple[dict, dict]:
    """Our keys (dashed spellings accepted) and the flat engine arguments of vLLM/Triton-shaped files."""
    ours, flat = {}, {}
    own = (FILE_KEYS - {"model"}) | {"engine_args"}
    if "model" in data and any(str(k).replace("-", "_") == "model_path" for k in data):
        raise BadInput(f"{where}: give either model or model_path, not both.")
    for k, v in data.items():
        key = str(k).replace("-", "_")
        if key in own:
            ours[key] = v
        elif key == "model":  # vLLM's --config YAML and Triton's model.json name the model so
            if not isinstance(v, str) or not v:
                raise BadInput(f"{where}: model must be a path or a Hub id, got {v!r}.")
            ours["model" if looks_like_repo_id(v) else "model_path"] = v
        elif engine_spec is not None and _is_engine_arg(engine_spec, str(k)):
            flat[str(k)] = v
        else:
            ours[key] = v  # rejected below as unknown, with did-you-mean
    return ours, flat


def _is_engine_arg(engine_spec: ArgSpec | None, name: str) -> bool:
    try:
        engine_spec.resolve(name)
        return True
    except BadInput:
        return False


def is_loopback(host: str) -> bool:
    """Whether the host only listens on this machine (localhost, 127.0.0.0/8, ::1)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build(flags: dict, file_data: dict | None, passthrough: dict, file_engine_args: dict | None = None) -> LaunchSpec:
    """Merge launch file (as load_file read it) < flags; engine args: file mapping < passthrough."""
    base = {k: v for k, v in (file_data or {}).items() if k != "engine_args"}
    merged = {**base, **{k: v for k, v in flags.items() if v is not None}}
    engine_args = {**(file_engine_args or {}), **passthrough}
    if merged.get("name") is None:
        merged["name"] = default_name(merged)
    if merged.get("model_path"):  # recorded absolute: ps, bench, logs and restarts run from any folder
        merged["model_path"] = os.path.abspath(os.path.expanduser(str(merged["model_path"])))
    spec = LaunchSpec(**{k: v for k, v in merged.items() if k in LaunchSpec.__dataclass_fields__}, engine_args=engine_args)
    return validate(spec)


def default_name(d: dict) -> str:
    """A launch's name when none is given: the model folder's or repository's name, safe for a file name."""
    import re

    if d.get("model_path"):
        base = Path(d["model_path"]).resolve().name
    elif d.get("model"):  # a Hub repository: its name, without the organisation
        base = str(d["model"]).rstrip("/").rsplit("/", 1)[-1]
    else:
        base = f"{d.get('model_name') or 'model'}-{d.get('size_in_billions') or ''}".strip("-")
    return re.sub(r"[^A-Za-z0-9._-]", "-", base)[:64] or "model"


def validate(spec: LaunchSpec) -> LaunchSpec:
    """The spec, refused with one line (exit 2) where a field cannot work: name, port, variable names, the API key's
    variable, a non-loopback host without a key, the GPU count, the start-up timeout."""
    from .runs import check_name

    check_name(spec.name)
    if spec.download_dir and spec.model_path and not spec.model:
        raise BadInput(f"--download-dir {spec.download_dir} would do nothing: --model-path {spec.model_path} is a folder "
                       "here, nothing is downloaded.", hint="Drop --download-dir, or name a Hub model with --model ORG/NAME.")
    if spec.port is not None and not (1 <= spec.port <= 65535):
        raise BadInput(f"--port must be in 1..65535, got {spec.port}.")
    for k in spec.env:
        if not k or "=" in k or not k.replace("_", "a").isalnum():
            raise BadInput(f"--env: invalid variable name '{k}'.")
    if spec.api_key_env and spec.api_key_env not in os.environ:
        raise BadInput(f"--api-key-env {spec.api_key_env}: that variable is not set.")
    if not is_loopback(spec.host) and not spec.api_key_env and "VLLM_API_KEY" not in os.environ \
            and not spec.allow_unauthenticated:
        raise BadInput(f"--host {spec.host} exposes the server beyond this machine without an API key.",
                       hint="Set --api-key-env VAR (the key stays in the environment), or pass --allow-unauthenticated.")
    if spec.num_gpus is not None and spec.num_gpus < 1:
        raise BadInput(f"num_gpus must be at least 1, got {spec.num_gpus}.")
    if not (math.isfinite(spec.startup_timeout_s) and spec.startup_timeout_s > 0):
        raise BadInput(f"--startup-timeout must be a positive number of seconds, got {spec.startup_timeout_s}.")
    return spec


def parse_env(pairs: list[str]) -> dict:
    """--env KEY=VALUE pairs as a dict, refused when one has no '='."""
    out = {}
    for p in pairs or []:
        k, eq, v = p.partition("=")
        if not eq or not k:
            raise BadInput(f"--env expects KEY=VALUE, got '{p}'.")
        out[k] = v
    return out

