"""The gateway's control API, steering it without a restart: add a model, sleep, wake, start or stop one, remove
one, read the models file again. Requests in flight finish first (a model being let go admits no new one). It answers
the gateway's API key where it has one, else the local control key (model.control_key) that the CLI sends."""
from __future__ import annotations

import asyncio
import hmac
import sys
import time
from typing import TYPE_CHECKING

from aiohttp import web

from .lifecycle import Phase
from .model import GatewayError, control_key

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..engine_args import ArgSpec
    from .backends import Backends
    from .model import Backend


class Control:
    """The handlers of /gateway/models... and /gateway/reload, on one gateway."""

    def __init__(self, pool: Backends, engine_spec: ArgSpec, api_key: str | None, models_file: str | None) -> None:
        from .reload import FileWatch

        self.pool, self.opts, self.metrics = pool, pool.opts, pool.metrics
        self.engine_spec, self.api_key, self.models_file = engine_spec, api_key, models_file
        self.watch = FileWatch(models_file) if models_file else None
        self._reloading = asyncio.Lock()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/gateway/models", self.add_model)
        app.router.add_post("/gateway/models/{name}/adapters", self.add_adapter)  # before the {action} route
        app.router.add_delete("/gateway/models/{name}/adapters/{adapter}", self.remove_adapter)
        app.router.add_post("/gateway/models/{name}/{action}", self.act)
        app.router.add_delete("/gateway/models/{name}", self.remove_model)
        app.router.add_post("/gateway/reload", self.reload_route)

    def _allowed(self, request: web.Request) -> None:
        """The gateway's API key is checked by its middleware where one is set; else the local control key."""
        if self.api_key:
            return
        got = request.headers.get("Authorization", "")
        if not hmac.compare_digest(got[7:].encode() if got.lower().startswith("bearer ") else b"",
                                   control_key().encode()):
            raise GatewayError(401, "The control API needs the gateway's control key (the launcher CLI sends it).",
                               "authentication_error", code="invalid_api_key")

    def bring_up_soon(self, b: Backend) -> None:
        """Start or wake b in the background (once: a start under way is not begun again)."""
        if b.up is None or b.up.done():
            b.up = asyncio.get_running_loop().create_task(self.pool.bring_up(b))

    async def add_model(self, request: web.Request) -> web.Response:
        """POST /gateway/models: a model more, given as one entry of the models file (JSON), checked as the file is."""
        from ..errors import LauncherError
        from ..models_file import check_entry, entry_from_mapping

        self._allowed(request)
        try:
            item = await request.json()
            entry = entry_from_mapping(item, self.engine_spec, "POST /gateway/models")
            await asyncio.to_thread(check_entry, entry, "POST /gateway/models", self.opts.capacity_bytes)
            b = self.pool.add(entry)
        except (ValueError, LauncherError) as e:
            raise GatewayError(400, str(e) + (f" {e.hint}" if getattr(e, "hint", None) else ""),
                               "invalid_request_error") from None
        if entry.preload:
            self.bring_up_soon(b)
        return web.json_response({"added": b.name, "names": list(entry.names), "state": b.state}, status=201)

    async def act(self, request: web.Request) -> web.Response:
        """POST /gateway/models/NAME/{sleep,wake,start,stop}: one model alone, requests in flight finishing first."""
        self._allowed(request)
        pool = self.pool
        b = pool.route(request.match_info["name"])
        action = request.match_info["action"]
        if action == "stop":
            await self.drain_and(b, lambda: b.stop("stopped through the control API"))
        elif action == "sleep":
            if not self.opts.gpu:
                raise GatewayError(409, "sleep needs vLLM's sleep mode (a GPU); on the CPU build use stop.",
                                   "invalid_request_error", code="not_supported")
            if b.life.phase != Phase.RUNNING:
                raise GatewayError(409, f"`{b.name}` is {b.state}, not running.", "invalid_request_error",
                                   code="wrong_state")
            await self.drain_and(b, lambda: pool.let_go(b, "put to sleep through the control API"))
        elif action in ("wake", "start"):
            if b.life.phase not in (Phase.RUNNING, Phase.STARTING):
                self.bring_up_soon(b)
                await asyncio.shield(b.up)
            if b.life.phase != Phase.RUNNING:
                raise GatewayError(503, f"`{b.name}` could not start: {b.error or b.state}", code="model_unavailable")
        else:
            raise GatewayError(404, f"no action '{action}': sleep, wake, start or stop.", "invalid_request_error",
                               code="unknown_action")
        return web.json_response({"name": b.name, "state": b.state, "error": b.error})

    async def remove_model(self, request: web.Request) -> web.Response:
        """DELETE /gateway/models/NAME: its requests in flight finish, it stops, its names route nowhere."""
        self._allowed(request)
        b = self.pool.route(request.match_info["name"])
        await self.drain_and(b, lambda: b.stop("removed through the control API"))
        self.pool.forget(b)
        return web.json_response({"removed": b.name})

    async def add_adapter(self, request: web.Request) -> web.Response:
        from . import adapters

        self._allowed(request)
        return await adapters.add_route(self.pool, request)

    async def remove_adapter(self, request: web.Request) -> web.Response:
        from . import adapters

        self._allowed(request)
        return await adapters.remove_route(self.pool, request)

    async def drain_and(self, b: Backend, act: Callable[[], Awaitable]) -> None:
        """No new request admitted to b; those in flight finish (up to the queue timeout); then act."""
        b.draining = True
        try:
            deadline = time.monotonic() + self.opts.queue_timeout_s
            while b.in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            async with self.pool.placing:
                await act()
        finally:
            b.draining = False

    # the models file read again
    async def reload_route(self, request: web.Request) -> web.Response:
        """POST /gateway/reload: the models file read again; 400 with the reason where the new one is refused."""
        from ..errors import LauncherError

        self._allowed(request)
        try:
            return web.json_response(await self.reload())
        except LauncherError as e:
            raise GatewayError(400, _one_line(e), "invalid_request_error", code="bad_models_file") from None

    async def reload(self) -> dict:
        """Read the models file again and apply it (reload.py): what was added, removed, changed and kept.
        LauncherError (the old file kept, nothing touched) where the new one is refused."""
        from ..errors import BadInput
        from ..models_file import load_checked
        from .reload import apply, diff

        if not self.models_file:
            raise BadInput("this gateway was started without a models file to read again.")
        pool = self.pool
        async with self._reloading:
            entries = await asyncio.to_thread(load_checked, self.models_file, self.engine_spec,
                                              self.opts.capacity_bytes)
            changes = diff({n: b.entry for n, b in pool.by_name.items()}, entries)
            await apply(pool, changes, self.drain_and, self.bring_up_soon)
        out = changes.summary()
        print(f"gateway: models file '{self.models_file}' read again: " + "; ".join(
            f"{k} {', '.join(v)}" for k, v in out.items() if v and k != "kept") + (
            "" if any(out[k] for k in ("added", "removed", "changed")) else "no change"), file=sys.stderr, flush=True)
        return out

    async def reload_quietly(self, why: str) -> None:
        """A reload asked by a signal or the file watch: a refused file said in one line and counted, never raised."""
        from ..errors import LauncherError

        try:
            await self.reload()
        except LauncherError as e:
            self.metrics.housekeeping_error("reload")
            print(f"gateway: {why}: the new models file is refused, the old one kept: {_one_line(e)}",
                  file=sys.stderr, flush=True)
        except Exception as e:  # noqa: BLE001 - the gateway keeps serving; the error is counted and said
            self.pool.housekeeping_error(None, "reload", e)

    async def watch_tick(self) -> None:
        """--watch: the file read again once after each change on disk."""
        if self.watch is not None and self.watch.changed():
            await self.reload_quietly("the models file changed")


def _one_line(e: BaseException) -> str:
    hint = getattr(e, "hint", None)
    return f"{getattr(e, 'message', None) or e}" + (f" {hint}" if hint else "")
