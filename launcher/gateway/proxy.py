"""The proxy: a /v1 request parsed and routed by its `model` before anything starts, its model acquired (started or
woken, room made), the request sent to that model's own server with the model's key, the answer streamed back
chunk by chunk (SSE included, never buffered whole); a client that goes away aborts the request upstream."""
from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict

from .model import GatewayError

if TYPE_CHECKING:
    from collections.abc import Callable

    from .backends import Backends
    from .upstream import Upstream

# hop-by-hop headers and those the gateway sets itself (RFC 9110 7.6.1; the body's length is recomputed)
DROP_REQUEST = {b"host", b"authorization", b"content-length", b"connection", b"keep-alive", b"transfer-encoding",
                b"te", b"upgrade", b"proxy-authorization", b"x-api-key", b"expect"}  # names as the client's bytes
# (Content-Encoding passes: the body goes on as its bytes came)
DROP_RESPONSE = {"content-length", "connection", "keep-alive", "transfer-encoding", "date", "server"}
WHOLE_BYTES = 1 << 20  # an answer of known length up to this is read whole and written in one go (one send, not three)


async def forward(pool: Backends, upstream: Upstream, request: web.Request) -> web.StreamResponse:
    """One /v1 request to its model's server (started or woken first), the answer streamed back chunk by chunk."""
    body = await request.read()
    model = _model_of(request, body)
    request["model"] = model
    t0 = time.perf_counter()
    request["backend"] = pool.route(model).name  # a name no model answers to starts nothing
    b = await pool.acquire(model)
    status = 502
    try:
        sent = [(k, v) for k, v in request.raw_headers if k.lower() not in DROP_REQUEST]
        sent.append((b"Authorization", f"Bearer {b.key}".encode()))
        resp = None
        try:
            if isinstance(model, str) and model in b.adapters and b.reloading is not None and not b.reloading.done():
                await asyncio.shield(b.reloading)  # a new server of its base gets its adapters first
            up = await upstream.request(b.host, b.port, request.method, request.raw_path, sent, body)
            ended = False
            try:
                status = up.status
                headers = CIMultiDict((k, v) for k, v in up.headers if k.lower() not in DROP_RESPONSE)
                length, failed = up.length, status >= 500 and up.content_type == "application/json"
                if length is not None and length <= WHOLE_BYTES or failed:  # not a stream: read whole, one write
                    data = await up.read()
                    ended = True
                    if failed:  # small, never a stream
                        data = explained(data, lambda: b.launch.failure() if b.launch else "")
                    return web.Response(body=data, status=status, reason=up.reason or None, headers=headers)
                resp = web.StreamResponse(status=status, reason=up.reason or None, headers=headers)
                await resp.prepare(request)
                # chunk by chunk as they come (SSE included): never buffered whole
                async for chunk in up.chunks():
                    await resp.write(chunk)
                ended = True
                await resp.write_eof()
                return resp
            finally:
                if not ended:
                    # the client went away (the handler cancelled, or its socket reset), or the answer broke off:
                    # the connection to the model's server closed, not reused, so that vLLM aborts the request
                    up.close()
        except OSError as e:  # the backend went away, before or during its answer (the supervisor restarts it)
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
