"""The relay towards a model's server (gateway/upstream.py) against real sockets: uvicorn (the server vLLM answers
through) for what a model's server does, and a raw asyncio server for what one does at the edges (closing an idle
kept-alive connection, dying mid-answer, a client gone). The whole gateway on the real engine: test_gateway_real.py."""
import asyncio
import socket
import threading
import time

import pytest

from launcher.gateway import upstream as up_mod
from launcher.gateway.upstream import Upstream, UpstreamError


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Uvicorn:
    """uvicorn on its httptools protocol in a thread, with an ASGI app that streams, counts connections and sees
    disconnects: the same server stack as vLLM's."""

    def __init__(self):
        import uvicorn

        self.peers: list = []
        self.disconnected = threading.Event()
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, http="httptools", interface="asgi3",
                                                    log_level="error", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def app(self, scope, receive, send):
        self.peers.append(scope["client"])
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        path = scope["path"]
        if path == "/echo":
            hdrs = {k.decode(): v.decode() for k, v in scope["headers"]}
            out = repr((scope["method"], scope["query_string"], body, hdrs.get("authorization"))).encode()
            await send({"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"text/plain"),
                                                                              (b"content-length", str(len(out)).encode())]})
            await send({"type": "http.response.body", "body": out})
        elif path == "/stream":  # chunked: one chunk, then the next only after a pause
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
            for i in range(3):
                await send({"type": "http.response.body", "body": b"data: %d\n\n" % i, "more_body": True})
                await asyncio.sleep(0.3)
            await send({"type": "http.response.body", "body": b""})
        elif path == "/forever":  # streams until the client goes away
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
            gone = asyncio.ensure_future(receive())  # http.disconnect, once the client has gone
            while not gone.done() and not self.server.should_exit:
                await send({"type": "http.response.body", "body": b"data: x\n\n", "more_body": True})
                await asyncio.sleep(0.02)
            if gone.done() and gone.result()["type"] == "http.disconnect":
                self.disconnected.set()
        elif path == "/big":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/octet-stream")]})
            for i in range(64):
                await send({"type": "http.response.body", "body": bytes([i]) * 65536, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    def __enter__(self):
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                return self
            time.sleep(0.02)
        raise RuntimeError("uvicorn did not start")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


def test_request_and_headers_reach_the_server_and_the_answer_comes_back_whole():
    with Uvicorn() as srv:
        async def go():
            u = Upstream()
            a = await u.request("127.0.0.1", srv.port, "POST", "/echo?x=1%2F2", [(b"Authorization", b"Bearer k")],
                                b'{"model": "m"}')
            assert a.status == 201 and a.content_type == "text/plain"
            got = await a.read()
            u.close()
            return got
        assert run(go()) == repr(("POST", b"x=1%2F2", b'{"model": "m"}', "Bearer k")).encode()


def test_a_kept_alive_connection_is_reused_and_a_closed_pool_opens_new_ones():
    with Uvicorn() as srv:
        async def go():
            u = Upstream()
            for _ in range(3):
                await (await u.request("127.0.0.1", srv.port, "GET", "/echo", [], b"")).read()
            u.close()
            v = Upstream(keep_alive=False)
            for _ in range(2):
                await (await v.request("127.0.0.1", srv.port, "GET", "/echo", [], b"")).read()
        run(go())
    # three requests on one connection (one client port), then two on one connection each
    assert len(set(srv.peers[:3])) == 1
    assert len(set(srv.peers[3:])) == 2 and srv.peers[3] != srv.peers[0]


def test_a_stream_is_handed_on_chunk_by_chunk_as_it_comes_not_buffered_whole():
    with Uvicorn() as srv:
        async def go():
            u = Upstream()
            a = await u.request("127.0.0.1", srv.port, "GET", "/stream", [], b"")
            t0, seen = time.monotonic(), []
            async for chunk in a.chunks():
                seen.append((chunk, time.monotonic() - t0))
            u.close()
            return seen
        seen = run(go())
    assert b"".join(c for c, _ in seen) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert seen[0][0] == b"data: 0\n\n" and seen[0][1] < 0.25  # the first one before the server wrote the second


def test_a_client_behind_pauses_reading_and_loses_nothing(monkeypatch):
    monkeypatch.setattr(up_mod, "HIGH_WATER", 256 << 10)
    with Uvicorn() as srv:
        async def go():
            u = Upstream()
            a = await u.request("127.0.0.1", srv.port, "GET", "/big", [], b"")
            await asyncio.sleep(0.5)  # the server writes 4 MiB while nothing is read
            held = a._conn.buffered
            paused = a._conn.paused
            body = await a.read()
            u.close()
            return held, paused, body
        held, paused, body = run(go())
    assert paused and held < (4 << 20) // 2  # reading stopped well before the whole answer was buffered
    assert body == b"".join(bytes([i]) * 65536 for i in range(64))


def test_a_client_gone_closes_the_connection_so_the_server_stops():
    with Uvicorn() as srv:
        async def go():
            u = Upstream()
            a = await u.request("127.0.0.1", srv.port, "GET", "/forever", [], b"")
            it = a.chunks()
            await it.__anext__()
            a.close()
            await asyncio.sleep(0.2)
            # the connection is not kept: the next request opens another
            await (await u.request("127.0.0.1", srv.port, "GET", "/echo", [], b"")).read()
            u.close()
        run(go())
        assert srv.disconnected.wait(5)  # the server saw the request abandoned
    assert srv.peers[0] != srv.peers[1]


class RawServer:
    """A raw HTTP/1.1 server for the edges: `plan` maps the n-th request on a connection to what the server does."""

    def __init__(self, plan):
        self.plan, self.conns, self.eof_seen = plan, 0, asyncio.Event()

    async def handle(self, reader, writer):
        self.conns += 1
        n = 0
        while True:
            head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
            if not head:
                self.eof_seen.set()
                return
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            n += 1
            what = self.plan(self.conns, n)
            if what == "close":
                writer.close()
                return
            writer.write(what)
            await writer.drain()
            if what.endswith(b"...cut"):
                writer.close()
                return

    async def __aenter__(self):
        self.srv = await asyncio.start_server(self._safe, "127.0.0.1", 0)
        self.port = self.srv.sockets[0].getsockname()[1]
        return self

    async def _safe(self, r, w):
        try:
            await self.handle(r, w)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.eof_seen.set()

    async def __aexit__(self, *exc):
        self.srv.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_a_kept_alive_connection_the_server_closed_while_idle_is_retried_on_a_new_one():
    # the first connection answers once, then closes on the next request without a byte back (uvicorn's idle close
    # racing the request); a second connection answers
    async def go():
        async with RawServer(lambda conn, n: OK if n == 1 else "close") as srv:
            u = Upstream()
            assert await (await u.request("127.0.0.1", srv.port, "POST", "/v1/x", [], b"{}")).read() == b"ok"
            assert await (await u.request("127.0.0.1", srv.port, "POST", "/v1/x", [], b"{}")).read() == b"ok"
            u.close()
            return srv.conns
    assert run(go()) == 2


def test_a_fresh_connection_closed_without_an_answer_is_an_error_not_retried():
    async def go():
        async with RawServer(lambda conn, n: "close") as srv:
            u = Upstream()
            with pytest.raises(UpstreamError):
                await u.request("127.0.0.1", srv.port, "POST", "/v1/x", [], b"{}")
            return srv.conns
    assert run(go()) == 1  # a request sent once: a server that read it and died may have acted on it


def test_an_answer_cut_off_midway_raises_and_a_refused_connection_is_an_oserror():
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n...cut"

    async def go():
        async with RawServer(lambda conn, n: cut) as srv:
            u = Upstream()
            a = await u.request("127.0.0.1", srv.port, "GET", "/", [], b"")
            with pytest.raises(UpstreamError):
                await a.read()
        with pytest.raises(OSError):
            await Upstream().request("127.0.0.1", free_port(), "GET", "/", [], b"")
    run(go())


def test_an_answer_to_head_ends_at_its_head():
    async def go():
        async with RawServer(lambda conn, n: b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 31\r\n\r\n") as srv:
            u = Upstream()
            a = await u.request("127.0.0.1", srv.port, "HEAD", "/v1/models", [], b"")
            assert a.status == 405 and a.reason == "Method Not Allowed"
            assert await a.read() == b""
    run(go())
