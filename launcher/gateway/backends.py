"""The pool of models behind the gateway: routing a name to its model, the queue of requests waiting for a start,
and making room by the estimate (placement.make_room) before a start or a wake. Each model's own life (its phase,
start, sleep, wake, stop, its supervisor followed) is model.Backend's; nothing here holds a lock across a start."""
from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING

from ..errors import LauncherError
from .lifecycle import Phase
from .model import Backend, GatewayError, backend_key
from .options import Options
from . import room
from .first_sleep import pay_when_idle
from .names import Registry
from .starting import Starter

if TYPE_CHECKING:
    from .metrics import GatewayMetrics
    from ..models_file import ModelEntry


class Backends:
    """Every model the gateway knows. All methods run on the gateway's event loop; the blocking launching calls go
    to threads. `placing` is held only while room is decided and made (never across a start)."""

    def __init__(self, entries: list[ModelEntry], opts: Options, metrics: GatewayMetrics,
                 starter: Starter | None = None) -> None:
        self.opts, self.metrics = opts, metrics
        self.starter = starter or Starter(opts)
        self.names = Registry()
        self.by_name, self.route = self.names.by_name, self.names.route
        self.placing = asyncio.Lock()
        self.closing = False  # the gateway is stopping: no new start
        self.after_move = lambda: None  # the gateway writes its record here: `launcher ps` follows each move at once
        for e in entries:
            self.add(e)

    # names
    def add(self, entry: ModelEntry) -> Backend:
        """A model more (from the models file or added to a running gateway); BadInput where a name is taken."""
        from . import adapters

        b = Backend(entry, backend_key(entry.name))
        self.names.add(b)
        for name, folder in adapters.recorded().get(b.name, {}).items():  # loaded again at its next start
            if name not in self.names.routes:
                b.adapters[name] = folder
                self.names.add_name(b, name)
        b.life.on_move = lambda old, new, why, b=b: self._moved(b, old, new, why)
        self.metrics.state(b.name, b.state)
        return b

    def _moved(self, b: Backend, old: Phase, new: Phase, why: str) -> None:
        self.metrics.state(b.name, new.value)
        if new == Phase.RUNNING and old == Phase.RESTARTING:  # its supervisor started a new server
            b.slept = False  # a new process: no pinned memory of the old one
            b.reload_adapters_soon()
        try:
            self.after_move()
        except Exception as e:  # noqa: BLE001 - a record not written is counted; the move stands
            self.housekeeping_error(None, "record", e)
        if new in (Phase.STARTING, Phase.FAILED, Phase.RESTARTING) or old == Phase.STARTING:
            print(f"gateway: {b.name}: {old.value} -> {new.value} ({why})", file=sys.stderr, flush=True)

    def forget(self, b: Backend) -> None:
        """A model removed from the pool (stopped first): its names route nowhere."""
        if self.names.forget(b):
            self.metrics.state(b.name, "")

    # requests
    async def acquire(self, model: object) -> Backend:
        """The model's backend, running, with this request counted in flight (release() when done)."""
        b = self.route(model)
        b.sync()
        if b.draining:
            raise GatewayError(503, f"`{b.name}` is being stopped.", retry_after_s=5, code="model_stopping")
        if b.yielding:  # it makes room for a model that waited long enough: this request waits for its next turn
            await room.hold(self, b)
        if b.paying is not None:  # its first sleep is being paid while it was idle: on again once woken
            await b.paying.wait()
        if b.life.phase == Phase.RUNNING:
            return self._take(b)
        b.refuse_while_down(self.opts.failed_retry_s, time.monotonic())
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
            b.refuse_while_down(self.opts.failed_retry_s, time.monotonic())
            raise GatewayError(503, f"`{b.name}` could not start: {b.error or b.state}",
                               retry_after_s=int(self.opts.failed_retry_s), code="model_unavailable")
        return self._take(b)

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
                b.need_bytes, b.asleep_bytes, b.host_bytes = await asyncio.to_thread(self.starter.need, b.entry, b.key)
            await asyncio.to_thread(self.starter.refresh, self.opts.homes)
            waking = await self._place(b)
            if waking is None:
                return
            if waking:
                await b.wake()
                self.metrics.woke(b.name)
            else:
                self.metrics.started(b.name)
                await b.start(self.starter, self.opts, lambda: self.closing)
                if self.opts.gpu and self.opts.first_sleep_after_s is not None:  # off the request path (first_sleep.py)
                    asyncio.get_running_loop().create_task(pay_when_idle(self, b, self.opts.first_sleep_after_s))
        except (LauncherError, GatewayError, OSError) as e:
            if getattr(e, "code", None) != "model_stopping":  # a stop asked for during the start is no failure
                self._failed(b, getattr(e, "message", None) or str(e))

    async def _place(self, b: Backend) -> bool | None:
        """Room made for b and b marked as holding it: True to wake it, False to start it, None: nothing to do.
        Waiting for room held by busy models longer than max_wait_s, it asks the one up longest to yield."""
        t0, asked = time.monotonic(), []
        try:
            while not self.closing:
                async with self.placing:
                    if b.life.phase in (Phase.RUNNING, Phase.STARTING, Phase.RESTARTING) or self.closing:
                        return None
                    if await room.make_room_for(self, b):
                        if b.life.phase == Phase.SLEEPING:
                            return True
                        b.move(Phase.STARTING, "a request" if b.waiting else "preload")
                        return False
                    if not asked and time.monotonic() - t0 >= self.opts.max_wait_s:
                        asked = room.ask_to_yield(self, b, time.monotonic() - t0)
                await asyncio.sleep(0.1)  # the placement lock is free meanwhile: requests end, others start
            return None
        finally:
            for o in asked:  # let go by now, or b gave up waiting: their held requests go on
                room.end_yield(o)

    # letting go
    async def let_go(self, b: Backend, why: str) -> str:
        """Sleep (GPU) or stop the model; what was done."""
        if self.opts.gpu and b.life.phase == Phase.RUNNING:
            return await room.sleep_or_stop(self, b, why)
        await b.stop(why)
        return "stop"

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
