"""Options shared by several commands, and the one output helper."""
from __future__ import annotations

import json
import math
import sys
from typing import TYPE_CHECKING, Annotated, Optional

import click
import typer

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console

    from ..bench import Workload
    from ..errors import LauncherError
    from ..spec import LaunchSpec


class Number(click.ParamType):
    """A finite number (click's FLOAT takes 'nan' and 'inf'), above a bound when given."""

    name = "number"

    def __init__(self, flag: str, above: float | None = None, at_least: float | None = None) -> None:
        self.flag, self.above, self.at_least = flag, above, at_least
        self.__name__ = "number"  # typer wraps a click_type as a function: its name is what --help shows (<number>)

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            v = float(value)
        else:
            try:
                v = float(str(value).strip())
            except ValueError:
                self.fail(f"{self.flag} expects a number, got '{value}'.", param, ctx)
        if not math.isfinite(v):
            self.fail(f"{self.flag} must be a finite number, got '{value}'.", param, ctx)
        if self.above is not None and v <= self.above:
            self.fail(f"{self.flag} must be more than {self.above:g}, got {value}.", param, ctx)
        if self.at_least is not None and v < self.at_least:
            self.fail(f"{self.flag} must be at least {self.at_least:g}, got {value}.", param, ctx)
        return v


class Duration(click.ParamType):
    """Seconds (900) or a duration (90s, 15m, 1h30m): units.parse_duration, more than 0."""

    name = "duration"

    def __init__(self, flag: str) -> None:
        self.flag = flag
        self.__name__ = "duration"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        from ..errors import BadInput
        from ..units import parse_duration

        try:
            v = parse_duration(value, what=self.flag)
        except BadInput as e:
            self.fail(f"{e.message} {e.hint}", param, ctx)
        if v <= 0:
            self.fail(f"{self.flag} must be more than 0, got {value}.", param, ctx)
        return v


def duration(flag: str) -> Duration:
    return Duration(flag)


def positive(flag: str) -> Number:
    return Number(flag, above=0)

ModelPath = Annotated[Optional[str], typer.Option("--model-path", help="Hugging Face model folder (only config.json is read by the estimator).")]
ModelName = Annotated[Optional[str], typer.Option("--model-name", help="Model name from the offline catalog, e.g. qwen2.5-instruct.")]
Size = Annotated[Optional[str], typer.Option("--size-in-billions", help="Model size in billions of parameters (catalog models).")]
ModelFormat = Annotated[Optional[str], typer.Option("--model-format", help="pytorch (the default), awq, gptq or fp8 (catalog models).")]
Quantization = Annotated[Optional[str], typer.Option("--quantization", "-q", help="Quantization method, or 'none' (the default).")]
Engine = Annotated[Optional[str], typer.Option("--model-engine", help="Inference engine; only 'vllm' (the default) for now.")]
# a launch: what launch, smoke, bench and tune share
LaunchName = Annotated[Optional[str], typer.Option("--name", help="Name of this launch (for ps/status/logs/stop).")]
Host = Annotated[Optional[str], typer.Option("--host", show_default="127.0.0.1", help="Address to bind.")]
Port = Annotated[Optional[int], typer.Option("--port", show_default="8000, or a free one if 8000 is taken", help="Port of the server.")]
Env = Annotated[Optional[list[str]], typer.Option("--env", help="KEY=VALUE for the server's environment (repeatable).")]
AllowUnauthenticated = Annotated[bool, typer.Option("--allow-unauthenticated", help="Allow a non-loopback --host without an API key.")]
ApiKeyEnv = Annotated[Optional[str], typer.Option("--api-key-env", help="Name of the environment variable holding the API key.")]
NoPreflight = Annotated[bool, typer.Option("--no-preflight", help="Skip the memory estimate before starting.")]
GpuMemory = Annotated[Optional[str], typer.Option("--gpu-memory", help="Plan for GPUs of this size (80GiB, 81920MiB, 80GB) instead of the visible ones.")]
GpuMemoryBudget = Annotated[Optional[str], typer.Option("--gpu-memory-budget", help="Memory this launch may use per GPU (20GiB, 20000MiB): the share vLLM sizes itself to, given to it as the utilization it takes (the CPU build: the KV cache what is left beside the weights). Instead of --gpu-memory-utilization; for several models on one GPU.")]
GpuPreset = Annotated[Optional[str], typer.Option("--gpu", help="Plan for a known GPU: H100-80GB, H200, A100-40GB, L40S, L4, ...")]
Gpus = Annotated[Optional[str], typer.Option("--gpus", show_default="auto: those with the most free memory, among CUDA_VISIBLE_DEVICES", help="Which GPUs: auto or NVML indices such as 0,3. The server gets them as CUDA_VISIBLE_DEVICES.")]
NumGpus = Annotated[Optional[int], typer.Option("--num-gpus", min=1, help="How many GPUs to plan for (or to use of the visible ones).")]
VllmVersion = Annotated[Optional[str], typer.Option("--vllm-version", show_default="the installed one", help="vLLM version whose defaults to follow.")]
RayAddress = Annotated[Optional[str], typer.Option("--ray-address", help="Run on a Ray cluster: HOST:PORT of its head, or 'auto' (RAY_ADDRESS, or the cluster from `launcher cluster up`).")]
RayDashboard = Annotated[Optional[str], typer.Option("--ray-dashboard", help="The Ray dashboard URL, when not on port 8265 of the head.")]
Inventory = Annotated[Optional[str], typer.Option("--inventory", "-i", help="Cluster inventory file (.yaml/.json): head, workers, ssh, each node's gpu: preset.")]
Model = Annotated[Optional[str], typer.Option("--model", help="Hugging Face Hub repository id (org/name), or a local folder.")]
Revision = Annotated[Optional[str], typer.Option("--revision", show_default="main", help="Hub branch, tag or commit.")]
DownloadDir = Annotated[Optional[str], typer.Option("--download-dir", help="Download Hub models into this folder instead of the Hugging Face cache.")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
# the workload of bench and tune
NumRequests = Annotated[int, typer.Option("--num-requests", "--num-prompts", "-n", min=1, help="Requests to measure (--num-prompts: the name `vllm bench serve` uses).")]
Concurrency = Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Requests in flight at most.")]
RequestRate = Annotated[Optional[float], typer.Option("--request-rate", click_type=positive("--request-rate"), show_default="closed loop", help="Poisson arrivals per second.")]
PromptLen = Annotated[Optional[str], typer.Option("--prompt-len", show_default="128; a named workload's own", help="Prompt tokens: N or LO:HI (uniform).")]
OutputLen = Annotated[Optional[str], typer.Option("--output-len", show_default="64; a named workload's own", help="Output tokens: N or LO:HI (uniform).")]
PromptsFile = Annotated[Optional[str], typer.Option("--prompts-file", help="JSONL of {\"prompt\": ...} instead of random token ids.")]
ModelsFile = Annotated[str, typer.Option("--models", "-m", help="Models file (YAML or JSON): a `models:` list of launch files plus aliases, ttl, pinned, preload.")]
Config = Annotated[Optional[str], typer.Option("--config", "-f", help="Launch file (.yaml/.json) with the same keys as the flags; flags win.")]


def split_model(model: str | None, model_path: str | None) -> tuple[str | None, str | None]:
    """--model: a local folder goes to model_path, anything else is a Hub repository id."""
    from pathlib import Path

    from ..errors import BadInput
    from ..models.hub import looks_like_repo_id

    if not model:
        return model_path, None
    if model_path:
        raise BadInput("give either --model or --model-path, not both.")
    if looks_like_repo_id(model):
        return None, model
    if Path(model).expanduser().is_dir():
        return model, None
    raise BadInput(f"--model '{model}' is neither a folder here nor a Hub repository id (org/name).")


def output(data: object, json_out: bool, render: Callable[[Console], None]) -> None:
    """The one way a command prints its result: `data` as JSON on stdout with --json, else render(console) for
    people. Errors go to stderr as one line (cli.run), whatever the format."""
    if json_out:
        emit_json(data)
    else:
        render(console())


def refuse(error: "LauncherError", json_out: bool, data: dict) -> None:
    """The one way a command fails with a result for scripts: with --json, `data` on stdout and the error's exit
    code; else the error itself, which cli.run prints as one line on stderr."""
    if json_out:
        emit_json(data)
        raise typer.Exit(error.exit_code)
    raise error


def emit_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


PLAIN_STATUS_EVERY_S = 10.0


class Status:
    """Progress of a wait: rich's spinner on a terminal; elsewhere (CI logs, pipes, `launch --detach` in a script) a
    plain line at once, then whenever what it says changes (the numbers in it aside) and at least every
    PLAIN_STATUS_EVERY_S, so that no wait is silent."""

    def __init__(self, con: Console, text: str) -> None:
        self.con, self.text = con, text
        self._spinner = None
        self._said, self._said_at = "", 0.0

    def __enter__(self) -> Status:
        if self.con.is_terminal:
            self._spinner = self.con.status(self.text)
            self._spinner.__enter__()
        else:
            self.update(self.text)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._spinner is not None:
            self._spinner.__exit__(*exc)

    def update(self, text: str) -> None:
        import re
        import time

        self.text = text
        if self._spinner is not None:
            self._spinner.update(text)
            return
        gist, now = re.sub(r"\d+(?:\.\d+)?", "#", text), time.monotonic()
        if gist != self._said or now - self._said_at >= PLAIN_STATUS_EVERY_S:
            self.con.print(text, soft_wrap=True)
            self._said, self._said_at = gist, now


def plot_path(flag: str, path: str | None) -> str | None:
    """A picture's path checked before any work: its folder exists and can be written, its suffix is one matplotlib
    writes. BadInput (exit 2) otherwise; the path made absolute, so the command can say where the picture went."""
    import os

    from ..errors import BadInput

    if not path:
        return None
    output_path(flag, path)
    full = os.path.abspath(os.path.expanduser(path))
    if os.path.splitext(full)[1].lower() not in (".png", ".svg", ".pdf"):
        raise BadInput(f"{flag} {path}: give a .png, .svg or .pdf file.")
    return full


def output_path(flag: str, path: object) -> None:
    """A file a command writes when it ends (a report), checked before it starts anything: its folder exists and can
    be written. BadInput (exit 2) otherwise."""
    import os

    from ..errors import BadInput

    if not path:
        return
    folder = os.path.dirname(os.path.abspath(os.path.expanduser(str(path))))
    if not os.path.isdir(folder):
        raise BadInput(f"{flag} {path}: the folder {folder} does not exist.", hint="Create it, or give another path.")
    if not os.access(folder, os.W_OK):
        raise BadInput(f"{flag} {path}: the folder {folder} cannot be written.", hint="Give a path in a folder you can write.")


def said_plot(path: str) -> None:
    console(stderr=True).print(f"picture written to {path}")


def status(con: Console, text: str) -> Status:
    return Status(con, text)


def workload(num_requests: int, concurrency: int, request_rate: float | None, prompt_len: str, output_len: str,
             prompts_file: str | None, **kw: object) -> Workload:
    """The bench/tune workload from their shared options."""
    from ..bench import Workload, parse_range
    from ..errors import BadInput

    import os

    if prompts_file and not os.path.isfile(os.path.expanduser(prompts_file)):
        raise BadInput(f"--prompts-file {prompts_file}: no such file.", hint='A JSONL file of {"prompt": "..."} lines.')
    return Workload(num_requests=num_requests, concurrency=concurrency, request_rate=request_rate,
                    prompt_len=parse_range(prompt_len, "--prompt-len"), output_len=parse_range(output_len, "--output-len"),
                    prompts_file=prompts_file, **kw).validate()


# The commands' parameters whose LaunchSpec field has another name (launch's --startup-timeout; smoke's, bench's
# and tune's --timeout, which is their start-up deadline too); every other parameter named like a field is that field.
SPEC_FIELD_OF_PARAM = {"startup_timeout": "startup_timeout_s", "timeout": "startup_timeout_s"}


def spec_from_cli(ctx: typer.Context) -> LaunchSpec:
    """The one builder of a LaunchSpec from a command's flags (ctx.params, as declared once in this module), its
    launch file (--config) and the engine arguments after the options (launch, smoke, bench, tune)."""
    from ..engine_args import parse_argv, parse_mapping
    from ..engines import vllm as vllm_engine
    from ..spec import LaunchSpec, build, load_file, parse_env

    p = ctx.params
    fields = LaunchSpec.__dataclass_fields__
    flags = {SPEC_FIELD_OF_PARAM.get(k, k): v for k, v in p.items() if SPEC_FIELD_OF_PARAM.get(k, k) in fields}
    flags["model_path"], flags["model"] = split_model(p.get("model"), p.get("model_path"))
    # switches that are off unless given: off is "not said", so a launch file may still say it
    flags["preflight"] = False if p.get("no_preflight") else None
    flags["allow_unauthenticated"] = p.get("allow_unauthenticated") or None
    flags["env"] = parse_env(p["env"]) if p.get("env") else None
    spec_args = vllm_engine.arg_spec()
    config = p.get("config")
    file_data = load_file(config, spec_args) if config else {}
    return build(flags, file_data, parse_argv(list(ctx.args), spec_args),
                 parse_mapping(file_data.get("engine_args", {}), spec_args))
