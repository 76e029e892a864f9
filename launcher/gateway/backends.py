"""The models behind the gateway: each a launch started, woken, put to sleep or stopped on demand, through the same
launching API `launcher launch` uses (in this process: launching.inprocess.Launch), with room made by the estimate
(placement.make_room) before every start or wake."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from ..errors import LauncherError
from ..state import home
from .placement import Resident, make_room

if TYPE_CHECKING:
    from ..launching import Prepared
    from ..launching.inprocess import Launch
    from .metrics import GatewayMetrics
    from .models_file import ModelEntry


class GatewayError(Exception):
    """A request the gateway cannot serve now: the HTTP status, OpenAI's error type, and Retry-After if any."""

    def __init__(self, status: int, message: str, kind: str = "server_error", retry_after_s: int | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.retry_after_s, self.code = status, message, kind, retry_after_s, code


@dataclass
class Options:
    """How the gateway waits and makes room."""

    capacity_bytes: int  # the memory budget the models share (GPU: the devices'; CPU: host memory)
    gpu: bool = False  # models run on GPUs (sleep mode available) or on the CPU build (stopped to make room)
    queue_max: int = 64  # requests waiting for one model to start; more get 503 at once
    queue_timeout_s: float = 600.0  # how long a request waits for its model to start before 503 + Retry-After
    start_timeout_s: float = 900.0  # a start's own deadline (the supervisor's)
    failed_retry_s: float = 30.0  # after a failed start, requests get its reason for this long before a new try
    # what a model asleep keeps on the device where its plan does not say (asleep_of): its CUDA context, graph pool
    # and non-torch memory stay; measured 1.81-1.91 GiB per 8B model (H100 80GB, vLLM 0.26.0, 2026-12-06;
    # docs/gateway.md)
    sleeping_bytes: int = 2 << 30


@dataclass
class Backend:
    """One model: its launch when started, the requests it serves, when it was last used."""

    entry: ModelEntry
    key: str
    state: str = "stopped"  # stopped | starting | running | sleeping | stopping | failed
    launch: Launch | None = None
    port: int | None = None
    need_bytes: int | None = None  # planned: weights and KV cache and what vLLM takes beside (the estimate)
    asleep_bytes: int | None = None  # planned: what it keeps on the device asleep (asleep_of; None: not planned)
    in_flight: int = 0
    waiting: int = 0
    last_used: float = 0.0
    error: str | None = None
    failed_at: float = 0.0
    up: asyncio.Task | None = None
    requests: int = 0
    recent: list = field(default_factory=list)  # the last requests: (time, path, status, seconds)

    @property
    def name(self) -> str:
        return self.entry.name

    def resident(self, opts: Options) -> Resident | None:
        """This model as placement sees it (None when it holds nothing)."""
        if self.state not in ("running", "sleeping", "starting"):
            return None
        need = self.need_bytes or 0
        asleep = self.state == "sleeping"
        kept = self.kept_asleep(opts)
        return Resident(self.name, kept if asleep else need, self.in_flight + self.waiting,
                        self.entry.pinned, self.last_used, asleep, opts.gpu, min(need, kept))

    def kept_asleep(self, opts: Options) -> int:
        """What this model keeps on the device asleep: as planned, else the measured default."""
        return self.asleep_bytes if self.asleep_bytes is not None else opts.sleeping_bytes


def gateway_dir() -> str:
    d = home() / "gateway"
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    return str(d)


def backend_key(name: str) -> str:
    """The key of one model's server: derived from the gateway's secret (a 0600 file of its own, never logged), so a
    restarted gateway talks to the servers it adopts and no key is written beside the launch records."""
    path = os.path.join(gateway_dir(), "secret")
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    secret = open(path).read().strip().encode()
    return hmac.new(secret, name.encode(), hashlib.sha256).hexdigest()


class Backends:
    """Every model the gateway knows; starts and lets go of them. All methods run on the gateway's event loop; the
    blocking launching calls go to threads."""

    def __init__(self, entries: list[ModelEntry], opts: Options, metrics: GatewayMetrics) -> None:
        self.opts, self.metrics = opts, metrics
        self.by_name: dict[str, Backend] = {}
        self.routes: dict[str, str] = {}
        self.placing = asyncio.Lock()  # one placement decision and start at a time
        self.closing = False  # the gateway is stopping: no new start
        for e in entries:
            self.add(e)

    # names
    def add(self, entry: ModelEntry) -> Backend:
        """A model more (from the models file or added to a running gateway); its names must be new."""
        from ..errors import BadInput

        for n in entry.names:
            if n in self.routes and self.routes[n] != entry.name:
                raise BadInput(f"the model name '{n}' already routes to '{self.routes[n]}'.")
        if entry.name in self.by_name:
            raise BadInput(f"a model named '{entry.name}' is served already.")
        b = self.by_name[entry.name] = Backend(entry, backend_key(entry.name))
        for n in entry.names:
            self.routes[n] = entry.name
        self.metrics.state(b.name, b.state)
        return b

    def route(self, model: object) -> Backend:
        if not isinstance(model, str) or model not in self.routes:
            known = ", ".join(sorted(self.routes)) or "none"
            raise GatewayError(404, f"The model `{model}` does not exist. Models served here: {known}.",
                               "invalid_request_error", code="model_not_found")
        return self.by_name[self.routes[model]]

    # requests
    async def acquire(self, model: object) -> Backend:
        """The model's backend, running, with this request counted in flight (release() when done)."""
        b = self.route(model)
        if b.state == "running":
            return self._take(b)
        if b.waiting >= self.opts.queue_max:
            raise GatewayError(503, f"{b.waiting} requests already wait for `{b.name}` to start.",
                               retry_after_s=10, code="queue_full")
        b.waiting += 1
        self.metrics.queue(b.name, b.waiting)
        try:
            if b.up is None or b.up.done():
                b.up = asyncio.get_running_loop().create_task(self._bring_up(b))
            try:
                await asyncio.wait_for(asyncio.shield(b.up), self.opts.queue_timeout_s)
            except asyncio.TimeoutError:
                raise GatewayError(503, f"`{b.name}` is still starting after {self.opts.queue_timeout_s:.0f} s.",
                                   retry_after_s=30, code="model_starting") from None
        finally:
            b.waiting -= 1
            self.metrics.queue(b.name, b.waiting)
        if b.state != "running":
            raise GatewayError(503, f"`{b.name}` could not start: {b.error}", retry_after_s=int(self.opts.failed_retry_s),
                               code="model_unavailable")
        return self._take(b)

    def _take(self, b: Backend) -> Backend:
        from ..supervisor.machine import State

        if b.launch is not None and b.launch.state != State.READY:  # the supervisor restarts a dead server
            raise GatewayError(503, f"`{b.name}` is restarting ({b.launch.state.value}: {b.launch.run.sup.reason}).",
                               retry_after_s=15, code="model_restarting")
        b.in_flight += 1
        b.last_used = time.monotonic()
        return b

    def release(self, b: Backend, path: str, status: int, seconds: float) -> None:
        b.in_flight -= 1
        b.last_used = time.monotonic()
        b.requests += 1
        b.recent = ([(time.time(), path, status, round(seconds, 4))] + b.recent)[:10]

    # bringing a model up
    async def _bring_up(self, b: Backend) -> None:
        """Start or wake the model once there is room: at once where letting go of idle models makes it, after the
        busy ones drain where only they hold it (never under a request), refused where nothing could."""
        if b.state == "failed" and time.monotonic() - b.failed_at < self.opts.failed_retry_s:
            return
        while not self.closing:
            async with self.placing:
                if b.state == "running" or self.closing:
                    return
                try:
                    if b.need_bytes is None:
                        b.need_bytes, b.asleep_bytes = await asyncio.to_thread(self._need_bytes, b)
                    if await self._make_room(b):
                        if b.state == "sleeping":
                            await self._wake(b)
                        else:
                            await self._start(b)
                        return
                except (LauncherError, GatewayError, OSError) as e:
                    self._failed(b, getattr(e, "message", None) or str(e))
                    return
            await asyncio.sleep(0.1)  # the placement lock is free meanwhile: requests end, others start

    async def _make_room(self, b: Backend) -> bool:
        """Let go of what placement says; False when only models serving requests hold the room (wait for them)."""
        residents = [r for o in self.by_name.values() if o is not b and (r := o.resident(self.opts)) is not None]
        own = b.kept_asleep(self.opts) if b.state == "sleeping" else 0  # asleep it holds some of it already
        room = make_room(max(0, b.need_bytes - own), self.opts.capacity_bytes - own, residents, starting=b.name)
        if not room.fits and room.wait:
            return False
        if not room.fits:
            raise GatewayError(503, f"no room for `{b.name}`: {room.reason}", retry_after_s=30, code="no_room")
        for step in room.steps:
            other = self.by_name[step.name]
            self.metrics.evicted(other.name, step.action)
            if step.action == "sleep":
                await self._sleep(other)
            else:
                await self._stop(other)
        return True

    def _need_bytes(self, b: Backend) -> tuple[int, int | None]:
        """What the model will hold awake and asleep, planned as `launcher estimate` plans it (no process started)."""
        from ..errors import DoesNotFit

        try:
            prep = self._prepare(b, claim=False)
        except DoesNotFit as e:  # it does not fit beside what runs now: still its size, to make room for
            if getattr(e, "estimate", None) is None:
                raise
            return need_of(e.estimate.to_dict(), None), asleep_of(e.estimate.to_dict())
        e = prep.plan.estimate.to_dict() if prep.plan and prep.plan.estimate else None
        return need_of(e, prep.plan.cpu_kv if prep.plan else None), asleep_of(e)

    def _prepare(self, b: Backend, claim: bool) -> Prepared:
        from ..launching import prepare

        prep = prepare(self.launch_spec(b), claim=claim, check_port=claim)
        prep.env["VLLM_API_KEY"] = b.key  # the environment only: never argv, never the records
        if self.opts.gpu:
            prep.env["VLLM_SERVER_DEV_MODE"] = "1"  # vLLM's /sleep and /wake_up endpoints
        return prep

    def launch_spec(self, b: Backend):
        """The entry's launch as the gateway starts it: loopback only, its own port, every name it answers to."""
        args = dict(b.entry.spec.engine_args)
        names = args.get("served-model-name") or []
        names = names if isinstance(names, list) else [names]
        args["served-model-name"] = list(dict.fromkeys([b.name, *b.entry.aliases, *names]))
        if self.opts.gpu:
            args.setdefault("enable-sleep-mode", True)
        from .. import health

        # a port the system hands out, not the shared default one (8000): a launch beside the gateway may take that
        port = b.entry.spec.port or health.find_free_port()
        return replace(b.entry.spec, host="127.0.0.1", port=port, api_key_env=None, allow_unauthenticated=False,
                       engine_args=args, startup_timeout_s=self.opts.start_timeout_s)

    async def _start(self, b: Backend) -> None:
        from ..launching.inprocess import Launch
        from ..supervisor.machine import State

        self._set(b, "starting")
        self.metrics.started(b.name)
        for attempt in (1, 2):
            prep = await asyncio.to_thread(self._prepare, b, True)
            if self.closing:
                prep.release_locks()
                raise GatewayError(503, "the gateway is stopping")
            launch = await asyncio.to_thread(Launch.start, prep)
            b.launch, b.port = launch, prep.port
            if self.closing:  # the gateway began stopping while this one was spawned: stop_all may have missed it
                await self._stop(b)
                raise GatewayError(503, "the gateway is stopping")
            st = await asyncio.to_thread(launch.wait_ready, self.opts.start_timeout_s + 30)
            if st == State.READY:
                break
            why = launch.failure()
            await asyncio.to_thread(launch.stop)
            b.launch = None
            # another process took the port between the check and vLLM's bind: once more, on another port
            if attempt == 2 or "port_in_use" not in why:
                raise GatewayError(503, why)
        b.error = None
        b.last_used = time.monotonic()
        self._set(b, "running")

    def adopt(self, b: Backend) -> bool:
        """Supervise again a model server an earlier gateway started (its supervisor died with that gateway)."""
        from ..launching.inprocess import Launch
        from ..launching.status import effective_state
        from ..runs import RunState, read_state

        st = read_state(b.name)
        if not st or effective_state(st) != RunState.UNSUPERVISED:
            return False
        b.launch = Launch.adopt(b.name, env={"VLLM_API_KEY": b.key,
                                             **({"VLLM_SERVER_DEV_MODE": "1"} if self.opts.gpu else {})})
        b.port = st.get("port")
        b.need_bytes, b.asleep_bytes = need_of_record(b.name)
        b.last_used = time.monotonic()
        self._set(b, "running")
        return True

    # letting go
    async def _stop(self, b: Backend) -> None:
        self._set(b, "stopping")
        if b.launch is not None:
            await asyncio.to_thread(b.launch.stop)
        b.launch, b.port = None, None
        self._set(b, "stopped")

    async def _sleep(self, b: Backend) -> None:
        await self._call(b, "/sleep?level=1")
        self.metrics.slept(b.name)
        self._set(b, "sleeping")

    async def _wake(self, b: Backend) -> None:
        await self._call(b, "/wake_up")
        self.metrics.woke(b.name)
        b.last_used = time.monotonic()
        self._set(b, "running")

    async def _call(self, b: Backend, path: str) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as s, s.post(f"http://127.0.0.1:{b.port}{path}",
                                                        headers={"Authorization": f"Bearer {b.key}"}) as r:
            if r.status != 200:
                raise GatewayError(503, f"`{b.name}`: {path} answered {r.status}")

    async def expire_idle(self, now: float) -> list[str]:
        """Models idle past their ttl put to sleep (GPU) or stopped; the names let go."""
        done = []
        for b in list(self.by_name.values()):
            ttl = b.entry.ttl_s
            if ttl and b.state == "running" and not b.entry.pinned and b.in_flight + b.waiting == 0 \
                    and now - b.last_used > ttl:
                async with self.placing:
                    if b.state != "running" or b.in_flight + b.waiting:
                        continue
                    if self.opts.gpu:
                        await self._sleep(b)
                    else:
                        await self._stop(b)
                    self.metrics.evicted(b.name, "ttl")
                    done.append(b.name)
        return done

    async def stop_all(self) -> None:
        """Every model stopped (the gateway ends), one still starting too: no start begins after this, and a start
        whose server was spawned meanwhile stops it itself (_start checks `closing`)."""
        self.closing = True
        await asyncio.gather(*(self._stop(b) for b in self.by_name.values() if b.launch is not None))

    def _failed(self, b: Backend, why: str) -> None:
        b.error, b.failed_at = why, time.monotonic()
        self._set(b, "failed" if b.state in ("starting", "stopped", "failed") else b.state)

    def _set(self, b: Backend, state: str) -> None:
        b.state = state
        self.metrics.state(b.name, state)


def need_of(estimate: dict | None, cpu_kv: dict | None) -> int:
    """The bytes a model holds, as planned (an Estimate as launch.json records it, to_dict()): on a GPU the share
    vLLM takes plus what it takes beside it, per GPU, times the GPUs; on the CPU build its weights and KV cache (the
    Python runtime of each server not counted)."""
    if estimate:
        return (int(estimate.get("requested_bytes") or 0) + int(estimate.get("outside_budget_bytes") or 0)) \
            * _gpu_count(estimate)
    if cpu_kv:
        return int(cpu_kv.get("weights_bytes") or 0) + int(cpu_kv.get("kv_cache_bytes") or 0)
    return 0


def asleep_of(estimate: dict | None) -> int | None:
    """What a model keeps on the device in sleep mode level 1, as planned: the KV cache is freed and the weights go to
    host memory (vLLM's cumem allocator), while what it takes beside its share (the CUDA graph pool, its CUDA
    context) and its non-torch memory stay, per GPU. Measured on an H100 with vLLM 0.26.0 (2026-12-06): 1.91 GiB
    asleep against 2.53 planned for Llama-3.1-8B shapes at 32k (docs/gateway.md). None without an estimate."""
    if not estimate:
        return None
    return (int(estimate.get("outside_budget_bytes") or 0) + int(estimate.get("non_torch_bytes") or 0)) \
        * _gpu_count(estimate)


def _gpu_count(estimate: dict) -> int:
    """The GPUs an estimate (to_dict()) plans for: its per-GPU terms count once on each."""
    return max(1, len(estimate.get("gpus") or [1]))


def need_of_record(name: str) -> tuple[int | None, int | None]:
    """The planned bytes of an adopted model awake and asleep, from its launch.json (None where it recorded none)."""
    from ..runs import read_json, run_dir

    rec = read_json(run_dir(name) / "launch.json") or {}
    if not (rec.get("estimate") or rec.get("cpu_kv")):
        return None, None
    return need_of(rec.get("estimate"), rec.get("cpu_kv")), asleep_of(rec.get("estimate"))
