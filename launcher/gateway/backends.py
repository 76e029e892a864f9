"""The pool of models behind the gateway: routing a name to its model, the queue of requests waiting for a start,
and making room by the estimate (placement.make_room) before a start or a wake. Each model's own life (its phase,
start, sleep, wake, stop, its supervisor followed) is model.Backend's; nothing here holds a lock across a start."""
from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from ..errors import LauncherError
from .lifecycle import Phase
from .model import Backend, GatewayError, Options, backend_key, gateway_dir  # noqa: F401 (app, tools import them here)
from .sizing import asleep_of, need_of
from .placement import make_room

if TYPE_CHECKING:
    from ..launching import Prepared
    from .metrics import GatewayMetrics
    from .models_file import ModelEntry


class Backends:
    """Every model the gateway knows. All methods run on the gateway's event loop; the blocking launching calls go
    to threads. `placing` is held only while room is decided and made (never across a start)."""

    def __init__(self, entries: list[ModelEntry], opts: Options, metrics: GatewayMetrics) -> None:
        self.opts, self.metrics = opts, metrics
        self.by_name: dict[str, Backend] = {}
        self.routes: dict[str, str] = {}
        self.placing = asyncio.Lock()
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
        b.life.on_move = lambda old, new, why, b=b: self._moved(b, old, new, why)
        for n in entry.names:
            self.routes[n] = entry.name
        self.metrics.state(b.name, b.state)
        return b

    def _moved(self, b: Backend, old: Phase, new: Phase, why: str) -> None:
        self.metrics.state(b.name, new.value)
        if new in (Phase.STARTING, Phase.FAILED, Phase.RESTARTING) or old == Phase.STARTING:
            print(f"gateway: {b.name}: {old.value} -> {new.value} ({why})", file=sys.stderr, flush=True)

    def forget(self, b: Backend) -> None:
        """A model removed from the pool (stopped first): its names route nowhere."""
        for n in b.entry.names:
            self.routes.pop(n, None)
        self.by_name.pop(b.name, None)

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
        b.sync()
        if b.draining:
            raise GatewayError(503, f"`{b.name}` is being stopped.", retry_after_s=5, code="model_stopping")
        if b.life.phase == Phase.RUNNING:
            return self._take(b)
        self._refuse_while_down(b)
        if b.waiting >= self.opts.queue_max:
            raise GatewayError(503, f"{b.waiting} requests already wait for `{b.name}` to start.",
                               retry_after_s=10, code="queue_full")
        b.waiting += 1
        self.metrics.queue(b.name, b.waiting)
        try:
            if b.up is None or b.up.done():
                b.up = asyncio.get_running_loop().create_task(self.bring_up(b))
            try:
                await asyncio.wait_for(asyncio.shield(b.up), self.opts.queue_timeout_s)
            except asyncio.TimeoutError:
                raise GatewayError(503, f"`{b.name}` is still starting after {self.opts.queue_timeout_s:.0f} s.",
                                   retry_after_s=30, code="model_starting") from None
        finally:
            b.waiting -= 1
            self.metrics.queue(b.name, b.waiting)
        if b.life.phase != Phase.RUNNING:
            self._refuse_while_down(b)
            raise GatewayError(503, f"`{b.name}` could not start: {b.error or b.state}",
                               retry_after_s=int(self.opts.failed_retry_s), code="model_unavailable")
        return self._take(b)

    def _refuse_while_down(self, b: Backend) -> None:
        """503 for a model its supervisor restarts, or one that failed, until its retry window is over."""
        life, now = b.life, time.monotonic()
        if life.phase == Phase.RESTARTING:
            raise GatewayError(503, f"`{b.name}` is restarting ({life.cause or (b.launch.failure() if b.launch else '')}).",
                               retry_after_s=15, code="model_restarting")
        if life.phase == Phase.FAILED and not life.retry_due(now, self.opts.failed_retry_s):
            left = max(1, int(self.opts.failed_retry_s - (now - life.failed_at)))
            raise GatewayError(503, f"`{b.name}` failed: {life.cause}. A new start is tried at the first request "
                               f"after {left} s.", retry_after_s=left, code="model_failed")

    def _take(self, b: Backend) -> Backend:
        b.in_flight += 1
        b.last_used = time.monotonic()
        return b

    def release(self, b: Backend, path: str, status: int, seconds: float) -> None:
        b.in_flight -= 1
        b.last_used = time.monotonic()
        b.requests += 1
        b.recent = ([(time.time(), path, status, round(seconds, 4))] + b.recent)[:10]

    # bringing a model up
    async def bring_up(self, b: Backend) -> None:
        """Start or wake the model once there is room: at once where letting go of idle models makes it, after the
        busy ones drain where only they hold it (never under a request), refused where nothing could. The room is
        decided and made under `placing`; the start itself runs without it (its model counted as holding its room)."""
        try:
            if b.need_bytes is None:
                b.need_bytes, b.asleep_bytes = await asyncio.to_thread(self._need_bytes, b)
            waking = await self._place(b)
            if waking is None:
                return
            if waking:
                await b.wake()
                self.metrics.woke(b.name)
            else:
                self.metrics.started(b.name)
                await b.start(self._prepare, self.opts, lambda: self.closing)
        except (LauncherError, GatewayError, OSError) as e:
            self._failed(b, getattr(e, "message", None) or str(e))

    async def _place(self, b: Backend) -> bool | None:
        """Room made for b and b marked as holding it: True to wake it, False to start it, None: nothing to do."""
        while not self.closing:
            async with self.placing:
                if b.life.phase in (Phase.RUNNING, Phase.STARTING, Phase.RESTARTING) or self.closing:
                    return None
                if await self._make_room(b):
                    if b.life.phase == Phase.SLEEPING:
                        return True
                    b.move(Phase.STARTING, "a request" if b.waiting else "preload")
                    return False
            await asyncio.sleep(0.1)  # the placement lock is free meanwhile: requests end, others start
        return None

    async def _make_room(self, b: Backend) -> bool:
        """Let go of what placement says; False when only models serving requests hold the room (wait for them)."""
        residents = [r for o in self.by_name.values() if o is not b and (r := o.resident(self.opts)) is not None]
        own = b.kept_asleep(self.opts) if b.life.phase == Phase.SLEEPING else 0  # asleep it holds some of it already
        room = make_room(max(0, b.need_bytes - own), self.opts.capacity_bytes - own, residents, starting=b.name)
        if not room.fits and room.wait:
            return False
        if not room.fits:
            raise GatewayError(503, f"no room for `{b.name}`: {room.reason}", retry_after_s=30, code="no_room")
        for step in room.steps:
            other = self.by_name[step.name]
            self.metrics.evicted(other.name, step.action)
            if step.action == "sleep":
                await other.sleep(f"room for {b.name}")
                self.metrics.slept(other.name)
            else:
                await other.stop(f"room for {b.name}")
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

    def adopt(self, b: Backend) -> bool:
        return b.adopt(self.opts.gpu)

    # letting go
    async def let_go(self, b: Backend, why: str) -> str:
        """Sleep (GPU) or stop the model; what was done."""
        if self.opts.gpu and b.life.phase == Phase.RUNNING:
            await b.sleep(why)
            self.metrics.slept(b.name)
            return "sleep"
        await b.stop(why)
        return "stop"

    async def expire_idle(self, now: float) -> list[str]:
        """Models idle past their ttl put to sleep (GPU) or stopped; the names let go. One model's failure is
        counted and logged and never stops the others' expiry."""
        done = []
        for b in list(self.by_name.values()):
            ttl = b.entry.ttl_s
            if not (ttl and b.life.phase == Phase.RUNNING and not b.entry.pinned and b.in_flight + b.waiting == 0
                    and now - b.last_used > ttl):
                continue
            try:
                async with self.placing:
                    if b.life.phase != Phase.RUNNING or b.in_flight + b.waiting:
                        continue
                    await self.let_go(b, f"idle for {ttl:.0f} s (ttl)")
                self.metrics.evicted(b.name, "ttl")
                done.append(b.name)
            except Exception as e:  # noqa: BLE001 - the gateway keeps serving; the error is counted and said
                self.housekeeping_error(b, "ttl", e)
        return done

    def housekeeping_error(self, b: Backend | None, job: str, e: BaseException) -> None:
        self.metrics.housekeeping_error(job)
        print(f"gateway: {job}{' of ' + b.name if b else ''} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        if b is not None and b.life.phase not in (Phase.STOPPED, Phase.FAILED, Phase.STOPPING):
            b.sync()

    async def stop_all(self) -> None:
        """Every model stopped (the gateway ends), one still starting too: no start begins after this, and a start
        whose server was spawned meanwhile stops it itself (Backend.start checks `closing`)."""
        self.closing = True
        await asyncio.gather(*(b.stop("the gateway stops") for b in self.by_name.values() if b.launch is not None),
                             return_exceptions=True)

    def _failed(self, b: Backend, why: str) -> None:
        if b.life.phase != Phase.STOPPING:
            b.life.fail(why, time.monotonic())
