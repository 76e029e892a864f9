"""The proxy: a /v1 request parsed and routed by its `model` before anything starts, its model acquired (started or
woken, room made), the request sent to that model's own server with the model's key, the answer streamed back
chunk by chunk (SSE included, never buffered whole); a client that goes away aborts the request upstream."""
from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

from aiohttp import web

from .model import GatewayError

if TYPE_CHECKING:
    from collections.abc import Callable

    from aiohttp import ClientSession

    from .backends import Backends

# hop-by-hop headers and those the gateway sets itself (RFC 9110 7.6.1; the body's length is recomputed)
DROP_REQUEST = {"host", "authorization", "content-length", "connection", "keep-alive", "transfer-encoding", "te",
                "upgrade", "proxy-authorization", "x-api-key"}
DROP_RESPONSE = {"content-length", "connection", "keep-alive", "transfer-encoding", "content-encoding", "date",
                 "server"}


async def forward(pool: Backends, session: ClientSession, request: web.Request) -> web.StreamResponse:
    """One /v1 request to its model's server (started or woken first), the answer streamed back chunk by chunk."""
    body = await request.read()
    model = _model_of(request, body)
    request["model"] = model
    t0 = time.perf_counter()
    request["backend"] = pool.route(model).name  # a name no model answers to starts nothing
    b = await pool.acquire(model)
    status = 502
    try:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in DROP_REQUEST}
        headers["Authorization"] = f"Bearer {b.key}"
        url = f"http://{b.host}:{b.port}{request.rel_url}"
        resp = None
        try:
            if isinstance(model, str) and model in b.adapters and b.reloading is not None and not b.reloading.done():
                await asyncio.shield(b.reloading)  # a new server of its base gets its adapters first
            async with session.request(request.method, url, data=body, headers=headers) as up:
                status = up.status
                if status >= 500 and up.content_type == "application/json":  # small, never a stream: read whole
                    text = explained(await up.read(), lambda: b.launch.failure() if b.launch else "")
                    return web.Response(body=text, status=status, content_type="application/json")
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
        pool.release(b, request.path, status, time.perf_counter() - t0)


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


def explained(body: bytes, cause: Callable[[], str]) -> bytes:
    """vLLM's error body with a message that points "above" (EngineCore's "See stack trace (above) for the root
    cause.", which no client can see) completed with what the model's server log says happened (the supervisor's
    reason and vLLM's root cause); any other body as it came."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    err = data.get("error") if isinstance(data, dict) else None
    msg = err.get("message") if isinstance(err, dict) else data.get("message") if isinstance(data, dict) else None
    if not isinstance(msg, str) or "(above)" not in msg and "root cause above" not in msg:
        return body
    why = cause() or ""
    if not why:
        return body
    fixed = f"{msg} The model's server log says: {why}"
    if isinstance(err, dict):
        err["message"] = fixed
    else:
        data["message"] = fixed
    return json.dumps(data).encode()
