"""One OpenAI-compatible endpoint in front of every model (aiohttp): routes each request by its `model` to that
model's vLLM server, starting or waking it first; streams answers through chunk by chunk; /v1/models, /metrics,
a status page at /, and the control API under /gateway/models (add, sleep, wake, stop, start, remove one model)."""
from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

from .backends import Backends
from .lifecycle import Phase
from .model import GatewayError, Options, control_key, gateway_dir
from .metrics import GatewayMetrics

if TYPE_CHECKING:
    from ..engine_args import ArgSpec
    from .models_file import ModelEntry

# hop-by-hop headers and those the gateway sets itself (RFC 9110 7.6.1; the body's length is recomputed)
DROP_REQUEST = {"host", "authorization", "content-length", "connection", "keep-alive", "transfer-encoding", "te",
                "upgrade", "proxy-authorization", "x-api-key"}
DROP_RESPONSE = {"content-length", "connection", "keep-alive", "transfer-encoding", "content-encoding", "date",
                 "server"}
GATEWAY_KEY = web.AppKey("gateway", object)
MAX_BODY = 64 << 20  # the largest request body taken (413 beyond)


class Gateway:
    """The running gateway: its models, metrics, HTTP client to the backends, access log and record."""

    def __init__(self, entries: list[ModelEntry], opts: Options, engine_spec: ArgSpec,
                 api_key: str | None = None) -> None:
        self.metrics = GatewayMetrics()
        self.backends = Backends(entries, opts, self.metrics)
        self.opts, self.engine_spec, self.api_key = opts, engine_spec, api_key
        self.session: ClientSession | None = None
        self.url = ""
        self.started_at = time.time()
        self._tasks: list[asyncio.Task] = []
        self._log = open(os.path.join(gateway_dir(), "access.log"), "a", buffering=1)

    # lifecycle
    async def on_startup(self, app: web.Application) -> None:
        # no total timeout: a streamed answer may run for minutes; a backend that does not connect fails fast
        self.session = ClientSession(connector=TCPConnector(limit=0, force_close=False),
                                     timeout=ClientTimeout(total=None, sock_connect=10), auto_decompress=False)
        for b in self.backends.by_name.values():
            self.backends.adopt(b)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._housekeeping())]
        for b in self.backends.by_name.values():
            if b.entry.preload and b.life.phase == Phase.STOPPED:
                b.up = loop.create_task(self.backends.bring_up(b))

    async def on_cleanup(self, app: web.Application) -> None:
        for t in self._tasks:
            t.cancel()
        await self.backends.stop_all()
        if self.session is not None:
            await self.session.close()
        self.write_record(stopped=True)
        self._log.close()

    async def _housekeeping(self) -> None:
        """Every second: follow each model's supervisor, expire idle models, write gateway.json. A failure of one job
        is counted (launcher_gateway_housekeeping_errors_total) and logged, and the loop goes on."""
        while True:
            for b in list(self.backends.by_name.values()):
                try:
                    b.sync()
                except Exception as e:  # noqa: BLE001
                    self.backends.housekeeping_error(b, "follow", e)
            try:
                await self.backends.expire_idle(time.monotonic())
            except Exception as e:  # noqa: BLE001
                self.backends.housekeeping_error(None, "ttl", e)
            try:
                self.write_record()
            except Exception as e:  # noqa: BLE001
                self.backends.housekeeping_error(None, "record", e)
            await asyncio.sleep(1.0)

    def write_record(self, stopped: bool = False) -> None:
        """gateway.json: where the gateway listens and each model's state, for `launcher ps` (no key in it)."""
        from ..process import ProcRef
        from ..runs import write_json

        me = ProcRef.of(os.getpid())
        write_json(Path(gateway_dir()) / "gateway.json", {
            "pid": me.pid, "create_time": me.create_time, "url": self.url, "stopped": stopped,
            "models": {b.name: {"state": b.state, "port": b.port, "in_flight": b.in_flight, "requests": b.requests,
                                "aliases": list(b.entry.aliases), "lora": list(b.entry.lora_names),
                                "need_bytes": b.need_bytes, "error": b.error}
                       for b in self.backends.by_name.values()}})

    # HTTP
    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._auth_and_log])
        app[GATEWAY_KEY] = self
        app.on_startup.append(self.on_startup)
        app.on_cleanup.append(self.on_cleanup)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/", self.status_page)
        app.router.add_get("/gateway/status", self.status_json)
        app.router.add_post("/gateway/models", self.add_model)
        app.router.add_post("/gateway/models/{name}/{action}", self.control)
        app.router.add_delete("/gateway/models/{name}", self.remove_model)
        app.router.add_route("*", "/v1/{tail:.*}", self.proxy)
        return app

    @web.middleware
    async def _auth_and_log(self, request: web.Request, handler):
        """Every answer, errors included, in OpenAI's error shape where it is one, counted in /metrics and written to
        the access log with the status the client got."""
        t0 = time.perf_counter()
        if self.api_key and request.path != "/health" and not self._authorized(request):
            resp = error_response(GatewayError(401, "Missing or wrong API key: send Authorization: Bearer KEY.",
                                               "authentication_error", code="invalid_api_key"))
        else:
            try:
                resp = await handler(request)
            except GatewayError as e:
                resp = error_response(e)
            except web.HTTPException as e:  # aiohttp's own: 404 no route, 405, 413 body too large
                resp = error_response(GatewayError(e.status, _http_message(e, request),
                                                   "invalid_request_error" if e.status < 500 else "server_error",
                                                   code=_http_code(e.status)))
        seconds = time.perf_counter() - t0
        model = request.get("backend") or request.get("model")
        if request.path.startswith("/v1/") and request.path != "/v1/models":
            self.metrics.request(model if isinstance(model, str) else "-", resp.status, seconds)
        peer = request.remote or "-"
        self._log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {peer} {request.method} {request.path} "
                        f"{request.get('model', '-')} {resp.status} {seconds:.4f}\n")
        return resp

    def _authorized(self, request: web.Request) -> bool:
        got = request.headers.get("Authorization", "")
        token = got[7:] if got.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        return hmac.compare_digest(token.encode(), self.api_key.encode())

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def list_models(self, request: web.Request) -> web.Response:
        data = []
        for b in self.backends.by_name.values():
            data.append({"id": b.name, "object": "model", "created": int(self.started_at), "owned_by": "launcher",
                         "state": b.state, "aliases": list(b.entry.aliases)})
            for n in (*b.entry.aliases, *b.entry.lora_names):
                data.append({"id": n, "object": "model", "created": int(self.started_at), "owned_by": "launcher",
                             "state": b.state, "root": b.name, "parent": b.name})
        return web.json_response({"object": "list", "data": data})

    async def prometheus(self, request: web.Request) -> web.Response:
        body, ctype = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": ctype})

    async def status_json(self, request: web.Request) -> web.Response:
        from .status_page import snapshot

        return web.json_response(snapshot(self))

    async def status_page(self, request: web.Request) -> web.Response:
        from .status_page import render

        return web.Response(text=render(self), content_type="text/html")

    def _control_allowed(self, request: web.Request) -> None:
        """The control API answers the gateway's API key (checked by the middleware where one is set) or, on a
        gateway without one, the local control key (from the gateway's secret under LAUNCHER_HOME)."""
        if self.api_key:
            return
        got = request.headers.get("Authorization", "")
        if not hmac.compare_digest(got[7:].encode() if got.lower().startswith("bearer ") else b"",
                                   control_key().encode()):
            raise GatewayError(401, "The control API needs the gateway's control key (the launcher CLI sends it).",
                               "authentication_error", code="invalid_api_key")

    async def add_model(self, request: web.Request) -> web.Response:
        """A model more, given as one entry of the models file (JSON), checked as the models file is."""
        from ..errors import BadInput, LauncherError
        from .models_file import check_entry, entry_from_mapping

        self._control_allowed(request)
        try:
            item = await request.json()
            entry = entry_from_mapping(item, self.engine_spec, "POST /gateway/models")
            await asyncio.to_thread(check_entry, entry, "POST /gateway/models")
            b = self.backends.add(entry)
        except (ValueError, LauncherError) as e:
            raise GatewayError(400, str(e) + (f" {e.hint}" if getattr(e, "hint", None) else ""),
                               "invalid_request_error") from None
        if entry.preload:
            b.up = asyncio.get_running_loop().create_task(self.backends.bring_up(b))
        return web.json_response({"added": b.name, "names": list(entry.names), "state": b.state}, status=201)

    async def control(self, request: web.Request) -> web.Response:
        """POST /gateway/models/NAME/{sleep,wake,stop,start}: one model alone, requests in flight finishing first."""
        self._control_allowed(request)
        b = self.backends.route(request.match_info["name"])
        action = request.match_info["action"]
        if action == "stop":
            await self._drain_and(b, lambda: b.stop("stopped through the control API"))
        elif action == "sleep":
            if not self.opts.gpu:
                raise GatewayError(409, "sleep needs vLLM's sleep mode (a GPU); on the CPU build use stop.",
                                   "invalid_request_error", code="not_supported")
            if b.life.phase != Phase.RUNNING:
                raise GatewayError(409, f"`{b.name}` is {b.state}, not running.", "invalid_request_error",
                                   code="wrong_state")
            await self._drain_and(b, lambda: self.backends.let_go(b, "put to sleep through the control API"))
        elif action in ("wake", "start"):
            if b.life.phase not in (Phase.RUNNING, Phase.STARTING):
                if b.up is None or b.up.done():
                    b.up = asyncio.get_running_loop().create_task(self.backends.bring_up(b))
                await asyncio.shield(b.up)
            if b.life.phase != Phase.RUNNING:
                raise GatewayError(503, f"`{b.name}` could not start: {b.error or b.state}", code="model_unavailable")
        else:
            raise GatewayError(404, f"no action '{action}': sleep, wake, start or stop.", "invalid_request_error",
                               code="unknown_action")
        return web.json_response({"name": b.name, "state": b.state, "error": b.error})

    async def remove_model(self, request: web.Request) -> web.Response:
        """DELETE /gateway/models/NAME: its requests in flight finish, it stops, its names route nowhere."""
        self._control_allowed(request)
        b = self.backends.route(request.match_info["name"])
        await self._drain_and(b, lambda: b.stop("removed through the control API"))
        self.backends.forget(b)
        self.metrics.state(b.name, "")
        return web.json_response({"removed": b.name})

    async def _drain_and(self, b, act) -> None:
        """No new request admitted to b; those in flight finish (up to the queue timeout); then act."""
        b.draining = True
        try:
            deadline = time.monotonic() + self.opts.queue_timeout_s
            while b.in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            async with self.backends.placing:
                await act()
        finally:
            b.draining = False

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        model = _model_of(request, body)
        request["model"] = model
        t0 = time.perf_counter()
        request["backend"] = self.backends.route(model).name  # a name no model answers to starts nothing
        b = await self.backends.acquire(model)
        status = 502
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in DROP_REQUEST}
            headers["Authorization"] = f"Bearer {b.key}"
            url = f"http://127.0.0.1:{b.port}{request.rel_url}"
            resp = None
            try:
                async with self.session.request(request.method, url, data=body, headers=headers) as up:
                    status = up.status
                    resp = web.StreamResponse(status=up.status, reason=up.reason, headers={
                        k: v for k, v in up.headers.items() if k.lower() not in DROP_RESPONSE})
                    try:
                        await resp.prepare(request)
                        # chunk by chunk as they come (SSE included): never buffered whole
                        async for chunk in up.content.iter_any():
                            await resp.write(chunk)
                        await resp.write_eof()
                    except BaseException:
                        # the client went away (the handler cancelled, or its socket reset): close the connection to
                        # the model's server, not hand it back to the pool, so that vLLM aborts the request
                        up.close()
                        raise
                    return resp
            except OSError as e:  # the backend went away mid-request (a crash; the supervisor restarts it)
                if resp is not None and resp.prepared:
                    raise
                raise GatewayError(503, f"`{b.name}` did not answer: {e}", retry_after_s=15,
                                   code="model_unavailable") from None
        finally:
            self.backends.release(b, request.path, status, time.perf_counter() - t0)


def _model_of(request: web.Request, body: bytes) -> object:
    """The request's `model`: from the JSON body (POST), else the query string. A body that is not JSON by its
    Content-Type is refused here, before any model starts (vLLM would refuse it after a cold start)."""
    if body:
        ctype = request.content_type
        if ctype not in ("application/json", "application/octet-stream") and not ctype.endswith("+json"):
            raise GatewayError(415, f"Content-Type {ctype or '(none)'} is not JSON: send application/json.",
                               "invalid_request_error", code="unsupported_media_type")
        try:
            data = json.loads(body)
        except ValueError:
            raise GatewayError(400, "The body is not JSON.", "invalid_request_error") from None
        if isinstance(data, dict) and "model" in data:
            return data["model"]
    if "model" in request.query:
        return request.query["model"]
    raise GatewayError(400, "The request names no `model`; the gateway routes by it.", "invalid_request_error",
                       code="model_required")


def _http_message(e, request: web.Request) -> str:
    if e.status == 404:
        return f"No route {request.method} {request.path}: the gateway serves /v1/..., /metrics, /health and /."
    if e.status == 413:
        return f"The body is larger than the gateway takes ({MAX_BODY >> 20} MiB)."
    return e.reason or str(e)


def _http_code(status: int) -> str:
    return {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(status, f"http_{status}")


def error_response(e: GatewayError) -> web.Response:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    headers = {"Retry-After": str(e.retry_after_s)} if e.retry_after_s else {}
    return web.json_response({"error": {"message": e.message, "type": e.kind, "param": "model" if e.status == 404 else None,
                                        "code": e.code}}, status=e.status, headers=headers)


async def serve(gw: Gateway, host: str, port: int, ready: asyncio.Event | None = None) -> None:
    """Run until cancelled (SIGINT/SIGTERM): then every model is stopped."""
    runner = web.AppRunner(gw.app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    gw.url = f"http://{host}:{bound}"
    gw.write_record()
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
