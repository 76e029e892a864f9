"""One OpenAI-compatible endpoint in front of every model (aiohttp): routes each request by its `model` to that
model's vLLM server, starting or waking it first; streams answers through chunk by chunk; /v1/models, /metrics,
a status page at /, and the control API (control.py) under /gateway/."""
from __future__ import annotations

import asyncio
import hmac
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from . import housekeeping
from .backends import Backends
from .control import Control
from .lifecycle import Phase
from .model import GatewayError, gateway_dir
from .options import Options
from .metrics import GatewayMetrics
from .proxy import forward
from .upstream import Upstream

if TYPE_CHECKING:
    from ..engine_args import ArgSpec
    from ..models_file import ModelEntry
    from .starting import Starter

GATEWAY_KEY = web.AppKey("gateway", object)
MAX_BODY = 64 << 20  # the largest request body taken (413 beyond)


class Gateway:
    """The running gateway: its models, metrics, HTTP client to the backends, access log and record."""

    def __init__(self, entries: list[ModelEntry], opts: Options, engine_spec: ArgSpec, api_key: str | None = None,
                 models_file: str | None = None, watch: bool = False, starter: Starter | None = None) -> None:
        self.metrics = GatewayMetrics()
        self.backends = Backends(entries, opts, self.metrics, starter)
        self.opts, self.engine_spec, self.api_key, self.watch = opts, engine_spec, api_key, watch
        self.control = Control(self.backends, engine_spec, api_key, models_file)
        self.backends.after_move = lambda: self.url and self.write_record()
        self.upstream: Upstream | None = None
        self.url = ""
        self.started_at = time.time()
        self._tasks: list[asyncio.Task] = []
        # the access log, one line a request (LAUNCHER_GATEWAY_ACCESS_LOG=0: none; its cost: docs/gateway.md)
        # buffered, flushed every second with the record (housekeeping) and at the end: no write call per request
        self._log = open(os.path.join(gateway_dir(), "access.log"), "a", buffering=1 << 16) \
            if os.environ.get("LAUNCHER_GATEWAY_ACCESS_LOG", "1") != "0" else None

    # lifecycle
    async def on_startup(self, app: web.Application) -> None:
        # no timeout on an answer: a streamed one may run for minutes; a backend that does not connect fails fast
        # connections to the models' servers kept alive (LAUNCHER_GATEWAY_KEEP_ALIVE=0: one a request, to measure it)
        self.upstream = Upstream(keep_alive=os.environ.get("LAUNCHER_GATEWAY_KEEP_ALIVE", "1") != "0")
        # every model's server an earlier gateway left running, taken over at once (on a Ray cluster each
        # adoption starts a follower of its own: side by side, not one after another)
        models = list(self.backends.by_name.values())
        adopted = await asyncio.gather(*(b.adopt(self.backends.starter) for b in models))
        for b, ok in zip(models, adopted):
            if ok:
                b.reload_adapters_soon()  # loaded already unless it was restarted
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(housekeeping.run(
            self.backends, self.write_record, self.control.watch_tick if self.watch else None))]
        for b in self.backends.by_name.values():
            if b.entry.preload and b.life.phase == Phase.STOPPED:
                self.control.bring_up_soon(b)

    async def on_cleanup(self, app: web.Application) -> None:
        for t in self._tasks:
            t.cancel()
        await self.backends.stop_all()
        if self.upstream is not None:
            self.upstream.close()
        self.write_record(stopped=True)
        if self._log is not None:
            self._log.close()

    def write_record(self, stopped: bool = False) -> None:
        """gateway.json: where the gateway listens and each model's state, for `launcher ps` (no key in it)."""
        from ..process import ProcRef
        from ..runs import write_json

        if self._log is not None and not self._log.closed:
            self._log.flush()
        me = ProcRef.of(os.getpid())
        write_json(Path(gateway_dir()) / "gateway.json", {
            "pid": me.pid, "create_time": me.create_time, "url": self.url, "stopped": stopped,
            "models": {b.name: {"state": b.state, "host": b.host, "port": b.port, "in_flight": b.in_flight, "requests": b.requests,
                                "aliases": list(b.entry.aliases), "lora": [*b.entry.lora_names, *b.adapters],
                                "need_bytes": b.need_bytes, "error": b.error,
                                **self.where_of(b)}
                       for b in self.backends.by_name.values()}})

    def where_of(self, b) -> dict:
        """Its GPUs on this host, or its node on a Ray cluster and its GPUs there (gateway/nodes.py: the node's id)."""
        homes = self.opts.homes
        if homes is not None and (homes.by_memory or homes.on_nodes):
            from .devices import gpu_index, node_id, node_label

            key = b.gpus[0] if b.gpus else None
            gpus = [gpu_index(d) for d in b.gpus] if b.gpus and homes.on_nodes else None
            return {"gpus": gpus, "node": key and node_label(key) or None, "node_id": key and node_id(key) or None}
        return {"gpus": list(b.gpus) if b.gpus else None}

    # HTTP
    async def proxy(self, request: web.Request) -> web.StreamResponse:
        return await forward(self.backends, self.upstream, request)

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
        self.control.routes(app)
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
        if self._log is not None:
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
            for n in (*b.entry.aliases, *b.entry.lora_names, *b.adapters):
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
