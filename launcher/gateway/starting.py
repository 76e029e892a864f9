"""How the gateway starts a model: its launch as the gateway runs it (loopback only, a port of its own, every name
it answers to), what it will hold awake and asleep as `launcher estimate` plans it, and the launch itself (a
supervisor in a thread of the gateway). The pool and each model reach processes only through a Starter, so the pool's
tests hand it a fake one (tests/test_gateway_pool.py) and the real engine's tests this one."""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from .sizing import asleep_of, host_asleep_of, need_of, need_of_record

# vLLM's API server has /v1/load_lora_adapter and /v1/unload_lora_adapter where this is set (gateway/adapters.py): set
# for every model launched with --enable-lora; its server listens on loopback with a key only the gateway holds
LORA_RUNTIME_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"


def lora_enabled(engine_args: dict) -> bool:
    return bool(engine_args.get("enable-lora"))

if TYPE_CHECKING:
    from ..launching import Prepared
    from ..launching.inprocess import Launch
    from ..spec import LaunchSpec
    from ..models_file import ModelEntry
    from .options import Options


class Starter:
    """The real launching API (prepare, Launch.start, Launch.adopt) for the gateway's models."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts

    def need(self, entry: ModelEntry, key: str, placed: tuple | None = None) -> tuple[int, int | None, int | None]:
        """What the model will hold awake, asleep on the device and asleep in host memory, planned as `launcher
        estimate` plans it (no process started); placed: on those devices with that share (prepare's)."""
        from ..errors import DoesNotFit

        try:
            prep = self.prepare(entry, key, claim=False, placed=placed)
        except DoesNotFit as e:  # it does not fit beside what runs now: still its size, to make room for
            if getattr(e, "estimate", None) is None:
                raise
            d = e.estimate.to_dict()
            return need_of(d, None), asleep_of(d), host_asleep_of(d)
        e = prep.plan.estimate.to_dict() if prep.plan and prep.plan.estimate else None
        return need_of(e, prep.plan.cpu_kv if prep.plan else None), asleep_of(e), host_asleep_of(e)

    def prepare(self, entry: ModelEntry, key: str, claim: bool, placed: tuple | None = None) -> Prepared:
        """The launch planned (and, with claim, its name and port taken), its key in the environment only; placed:
        (GPU indices, share bytes) of a gateway whose GPUs are planned one by one."""
        from ..launching import prepare

        prep = prepare(self.spec_for(entry, placed), claim=claim, check_port=claim)
        prep.env["VLLM_API_KEY"] = key  # the environment only: never argv, never the records
        if lora_enabled(entry.spec.engine_args):
            prep.env[LORA_RUNTIME_ENV] = "True"  # LoRA adapters loaded at run time (gateway/adapters.py)
        if self.opts.gpu:
            prep.env["VLLM_SERVER_DEV_MODE"] = "1"  # vLLM's /sleep and /wake_up endpoints
        return prep

    def spec_for(self, entry: ModelEntry, placed: tuple | None) -> LaunchSpec:
        """The entry's launch as started here (placed: on those GPUs of this host, with that share)."""
        return launch_spec(entry, self.opts, placed)

    def launch(self, prep: Prepared) -> Launch:
        """Its server started under a supervisor in a thread here; returns at once (Launch.wait_ready)."""
        from ..launching.inprocess import Launch

        return Launch.start(prep)

    def refresh(self, homes: object) -> None:
        """The devices as they are now, before a model is placed (a Ray cluster's nodes come and go: nodes.py);
        the GPUs of one host stay those the gateway started with."""

    def adopt(self, name: str, key: str) -> tuple[Launch, int | None, tuple[int | None, int | None]] | None:
        """A server of this model an earlier gateway started and left running (its supervisor died with that gateway):
        supervised again from here; its launch, port and planned bytes. None when there is none."""
        from ..launching.inprocess import Launch
        from ..launching.status import effective_state
        from ..runs import RunState, read_state

        st = read_state(name)
        if not st or effective_state(st) != RunState.UNSUPERVISED:
            return None
        env = {"VLLM_API_KEY": key, LORA_RUNTIME_ENV: "True", **({"VLLM_SERVER_DEV_MODE": "1"} if self.opts.gpu else {})}
        launch = Launch.adopt(name, env=env)  # restarts get what the gateway's first start gave
        return launch, st.get("port"), need_of_record(name)


def launch_spec(entry: ModelEntry, opts: Options, placed: tuple | None = None) -> LaunchSpec:
    """The entry's launch as the gateway starts it: loopback only, its own port, every name it answers to; placed
    (GPU indices, share bytes): on those GPUs (CUDA_VISIBLE_DEVICES), with the plan's share unless the entry gives its
    own --gpu-memory-budget."""
    from .. import health

    args = dict(entry.spec.engine_args)
    names = args.get("served-model-name") or []
    names = names if isinstance(names, list) else [names]
    args["served-model-name"] = list(dict.fromkeys([entry.name, *entry.aliases, *names]))
    if opts.gpu:
        args.setdefault("enable-sleep-mode", True)
    # a port the system hands out, not the shared default one (8000): a launch beside the gateway may take that
    port = entry.spec.port or health.find_free_port()
    spec = replace(entry.spec, host="127.0.0.1", port=port, api_key_env=None, allow_unauthenticated=False,
                   engine_args=args, startup_timeout_s=opts.start_timeout_s)
    if placed:
        gpus, share = placed
        spec = with_share(replace(spec, gpus=",".join(map(str, gpus))), share)
    return spec


def with_share(spec: LaunchSpec, share: int | None) -> LaunchSpec:
    """The launch with the plan's share of each GPU (--gpu-memory-budget), unless it gives its own budget or
    --gpu-memory-utilization."""
    if spec.gpu_memory_budget or not share or "gpu-memory-utilization" in spec.engine_args:
        return spec
    return replace(spec, gpu_memory_budget=f"{share >> 20}MiB")
