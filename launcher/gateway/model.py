"""One model behind the gateway: its lifecycle (lifecycle.Lifecycle), its launch when started (a supervisor in a
thread of the gateway: launching.inprocess.Launch), the requests it serves, and what it alone does: start, wake,
sleep, stop, adopt, follow its supervisor. Where it goes and what makes room for it is the pool's (backends.py)."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..launching.on_node import NODE_LOST
from ..state import home
from .lifecycle import Lifecycle, Phase
from .options import Options

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..launching import Prepared
    from ..launching.inprocess import Launch
    from ..models_file import ModelEntry
    from .starting import Starter

# how long an adopted server's new supervisor may take to see it answer (its first health probe) before the gateway
# takes requests for it
ADOPT_WAIT_S = 30.0

class GatewayError(Exception):
    """A request the gateway cannot serve now: the HTTP status, OpenAI's error type, and Retry-After if any."""

    def __init__(self, status: int, message: str, kind: str = "server_error", retry_after_s: int | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.retry_after_s, self.code = status, message, kind, retry_after_s, code


def gateway_dir() -> str:
    d = home() / "gateway"
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    return str(d)


def _secret() -> bytes:
    path = os.path.join(gateway_dir(), "secret")
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return open(path).read().strip().encode()


def backend_key(name: str) -> str:
    """The key of one model's server: derived from the gateway's secret (a 0600 file of its own, never logged), so a
    restarted gateway talks to the servers it adopts and no key is written beside the launch records."""
    return hmac.new(_secret(), name.encode(), hashlib.sha256).hexdigest()


def control_key() -> str:
    """The key of the gateway's control API (/gateway/models/...) for the local CLI: from the same secret, so that
    whoever can read LAUNCHER_HOME can steer the gateway, and nobody else."""
    return hmac.new(_secret(), b"\0control", hashlib.sha256).hexdigest()


@dataclass
class Backend:
    """One model: its lifecycle, its launch when started, the requests it serves, when it was last used."""

    entry: ModelEntry
    key: str
    life: Lifecycle = None  # type: ignore[assignment]  (set in __post_init__)
    launch: Launch | None = None
    port: int | None = None
    host: str = "127.0.0.1"  # where its server answers: this host, or its node's address on a Ray cluster (nodes.py)
    need_bytes: int | None = None  # planned: weights and KV cache and what vLLM takes beside (the estimate)
    asleep_bytes: int | None = None  # planned: what it keeps on the device asleep (asleep_of; None: not planned)
    host_bytes: int | None = None  # planned: what it keeps in the host's memory asleep (its weights; None: not planned)
    # GPUs planned one by one (gateway/gpus.py): the GPUs it runs, sleeps or is to start on, and its share of each;
    # on a Ray cluster (gateway/nodes.py) its node, as a 1-tuple of the node's id
    gpus: tuple[int, ...] | None = None
    share_bytes: int | None = None
    in_flight: int = 0
    waiting: int = 0
    last_used: float = 0.0
    up: asyncio.Task | None = None
    draining: bool = False  # a stop or removal asked for: no new request admitted, those in flight finish
    requests: int = 0
    recent: list = field(default_factory=list)  # the last requests: (time, path, status, seconds)
    adapters: dict = field(default_factory=dict)  # LoRA adapters loaded at run time: name -> folder (adapters.py)
    reloading: asyncio.Task | None = None  # its adapters being loaded into a new server (a restart, an adoption)
    yielding: bool = False  # asked to make room for a model that waited max_wait_s: no new request admitted
    held: int = 0  # requests held back while it yields (not counted busy: they wait for its next turn)
    turn: asyncio.Event = field(default_factory=asyncio.Event)  # set when a yield is over (it was let go)
    # its server has slept since it started: the pinned host memory its weights went to stays in torch's pinned-memory
    # cache after the wake (vLLM's cumem allocator frees it there, nothing empties that cache) until the server ends
    slept: bool = False
    paying: asyncio.Event | None = None  # its first sleep being paid while idle (first_sleep.py): set when over

    def __post_init__(self) -> None:
        if self.life is None:
            self.life = Lifecycle(self.entry.name)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def state(self) -> str:
        return self.life.phase.value

    @property
    def error(self) -> str | None:
        return self.life.cause

    def move(self, to: Phase, why: str) -> None:
        self.life.move(to, why, time.monotonic())

    def refuse_while_down(self, retry_s: float, now: float) -> None:
        """GatewayError 503 while its supervisor restarts it, or while it is failed and its retry window not over."""
        life = self.life
        if life.phase == Phase.RESTARTING:
            why = life.cause or (self.launch.failure() if self.launch else "")
            raise GatewayError(503, f"`{self.name}` is restarting ({why}).", retry_after_s=15, code="model_restarting")
        lost = (life.cause or "").startswith(NODE_LOST)  # its Ray node was lost: on another node at once, no window
        if life.phase == Phase.FAILED and not lost and not life.retry_due(now, retry_s):
            left = max(1, int(retry_s - (now - life.failed_at)))
            raise GatewayError(503, f"`{self.name}` failed: {life.cause}. A new start is tried at the first request "
                               f"after {left} s.", retry_after_s=left, code="model_failed")

    def sync(self) -> None:
        """Follow the supervisor of its launch (READY, BACKOFF, FATAL, its end): `launcher ps` and the gateway agree."""
        launch = self.launch
        if launch is None:
            return
        from ..runs import RunState

        state, alive = RunState(launch.state.value), launch.alive
        # the reason (read from the server's log) only where a move needs one, not every second of a start
        needs_reason = state in (RunState.FATAL, RunState.BACKOFF) or not alive
        self.life.follow(state, launch.failure() if needs_reason else "", alive, time.monotonic())
        if self.life.phase == Phase.FAILED and not launch.alive:
            self.launch, self.port = None, None  # its supervisor ended (FATAL): the server is stopped with it
            self.gpus = None  # its next start tries its home again (a lost node's models: a new one)

    # what one model does
    async def start(self, starter: Starter, opts: Options, closing: Callable[[], bool]) -> None:
        """Start its server (the phase is starting already): ready, or GatewayError with vLLM's root cause."""
        from ..supervisor.machine import State

        for attempt in (1, 2):
            placed = (self.gpus, self.share_bytes) if self.gpus else None
            prep: Prepared = await asyncio.to_thread(starter.prepare, self.entry, self.key, True, placed)
            if closing():
                prep.release_locks()
                raise GatewayError(503, "the gateway is stopping", code="model_stopping")
            launch = await asyncio.to_thread(starter.launch, prep)
            self.launch, self.port = launch, prep.port
            if closing():  # the gateway began stopping while this one was spawned: stop_all may have missed it
                await self.stop("the gateway is stopping")
                raise GatewayError(503, "the gateway is stopping", code="model_stopping")
            st = await asyncio.to_thread(launch.wait_ready, opts.start_timeout_s + 30)
            if self.life.phase != Phase.STARTING:  # stopped meanwhile (the gateway stops, a control API stop)
                raise GatewayError(503, f"`{self.name}` was stopped while it started ({self.life.phase.value}).",
                                   retry_after_s=5, code="model_stopping")
            if st == State.READY:
                # on a node of a Ray cluster: the node's address and the port chosen there
                self.host, self.port = getattr(launch, "host", "127.0.0.1"), getattr(launch, "port", None) or prep.port
                break
            why = launch.failure()
            await asyncio.to_thread(launch.stop)
            self.launch = None
            # another process took the port between the check and vLLM's bind: once more, on another port
            if attempt == 2 or "port_in_use" not in why:
                raise GatewayError(503, why)
        await self.load_adapters()  # before it takes requests: its adapters answer from its first one
        self.last_used, self.slept = time.monotonic(), False
        self.move(Phase.RUNNING, "ready")

    def reload_adapters_soon(self) -> None:
        """Its adapters loaded again into a server it did not start (a supervisor's restart, an adoption), in the
        background; a request for one of them waits for that (proxy.py)."""
        if self.adapters:
            self.reloading = asyncio.get_running_loop().create_task(self.load_adapters())

    async def load_adapters(self, names: list[str] | None = None) -> dict[str, str]:
        """The recorded LoRA adapters (or `names` of them) loaded into its server; {name: error} of those vLLM
        refused (one already loaded counts as loaded)."""
        failed = {}
        for name in names if names is not None else list(self.adapters):
            status, text = await post(self.port, self.key, "/v1/load_lora_adapter", self.name,
                                      {"lora_name": name, "lora_path": self.adapters[name]}, check=False,
                                      host=self.host)
            if status != 200 and "already" not in text.lower():
                failed[name] = f"vLLM answered {status}: {_message(text)}"
        for name, why in failed.items():
            print(f"gateway: {self.name}: adapter {name} not loaded: {why}", flush=True)
        return failed

    async def stop(self, why: str) -> None:
        if self.life.phase in (Phase.STOPPED,):
            return
        self.move(Phase.STOPPING, why)
        try:
            if self.launch is not None:
                await asyncio.to_thread(self.launch.stop)
        finally:
            self.launch, self.port = None, None
            self.gpus = None  # its next start tries its home again
            self.move(Phase.STOPPED, "stopped")

    async def sleep(self, why: str) -> None:
        await self.call("/sleep?level=1")
        self.slept = True
        self.move(Phase.SLEEPING, why)

    async def wake(self) -> None:
        await self.call("/wake_up")
        self.last_used = time.monotonic()
        self.move(Phase.RUNNING, "woken")

    async def call(self, path: str) -> None:
        await post(self.port, self.key, path, self.name, host=self.host)

    async def adopt(self, starter: Starter) -> bool:
        """Supervise again a model server an earlier gateway started (its supervisor died with that gateway)."""
        found = await asyncio.to_thread(starter.adopt, self.name, self.key)
        if found is None:
            return False
        launch, port, need = found
        if getattr(launch, "device", None):  # on a node of a Ray cluster: its address, its node, its size
            self.host, self.gpus = launch.host, tuple(getattr(launch, "devices", ()) or (launch.device,))
            if need[0] is None:
                need = await asyncio.to_thread(starter.need, self.entry, self.key)
        self.launch, self.port, (self.need_bytes, self.asleep_bytes, self.host_bytes) = launch, port, need
        # its new supervisor starts at STARTING and is READY at the server's first 200: running only then, or a
        # request in between would find it "restarting" (the supervisor's STARTING followed) and get a 503
        await asyncio.to_thread(launch.wait_ready, ADOPT_WAIT_S)
        self.last_used = time.monotonic()
        self.move(Phase.RUNNING, "adopted from an earlier gateway")
        self.sync()  # not READY by then: restarting or failed, as its supervisor says
        return True



async def post(port: int | None, key: str, path: str, name: str, body: dict | None = None,
               check: bool = True, host: str = "127.0.0.1") -> tuple[int, str]:
    """POST to a model's own server (its /sleep, /wake_up, LoRA endpoints): its status and text; with check,
    GatewayError when it does not answer 200."""
    import aiohttp

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as s, \
                s.post(f"http://{host}:{port}{path}", headers={"Authorization": f"Bearer {key}"}, json=body) as r:
            text = await r.text()
            if check and r.status != 200:
                raise GatewayError(503, f"`{name}`: {path} answered {r.status}")
            return r.status, text
    except aiohttp.ClientError as e:
        raise GatewayError(503, f"`{name}`: {path} failed: {e}") from None


def _message(text: str) -> str:
    """vLLM's error message out of its JSON body (ErrorResponse), else the text."""
    import json

    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:300]
    err = data.get("error") if isinstance(data, dict) else None
    return str((err or {}).get("message") if isinstance(err, dict) else data.get("message", text))[:300]
