"""The relay's side towards a model's server: HTTP/1.1 on kept-alive asyncio connections, the answer's head parsed by
httptools (uvicorn's own C parser, which vLLM's server answers through) and its body handed on chunk by chunk as it
arrives, reading paused while the client is behind. Leaner per request than a general HTTP client (no request and
response objects, no timers, no cookie jar): docs/gateway.md gives what it saves.

A kept-alive connection the model's server closed while it was idle (uvicorn closes them after 5 s) is found closed
before it is taken, or fails before a byte of the answer comes: the request is then sent once more on a new connection.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator

import httptools

IDLE_S = 4.0  # an idle connection older than this is not reused (uvicorn's --timeout-keep-alive is 5 s)
IDLE_PER_SERVER = 64  # idle connections kept per model server; more are closed
HIGH_WATER = 1 << 20  # buffered answer bytes at which reading from the model's server pauses (the client is behind)
CONNECT_S = 10.0


class UpstreamError(OSError):
    """The model's server could not be reached, or went away before its answer ended."""


class _Conn(asyncio.Protocol):
    """One connection to a model's server and the answer being read on it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.used = False  # an answer came on it before: a failure with no byte back may be a server's idle close
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.head: asyncio.Future | None = asyncio.get_running_loop().create_future() if self.transport else None
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self.done = False
        self.keep = False
        self.got_bytes = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future | None = None
        self.head_only = False

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(UpstreamError(f"the model's server answered with broken HTTP: {e}"))
            self.transport.close()

    def eof_received(self):
        return False  # closes the transport: connection_lost follows

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        if not self.done:
            self._fail(UpstreamError(f"the connection closed before the answer ended ({exc or 'EOF'})"))

    # httptools callbacks
    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.head is not None and not self.head.done():
            self.head.set_result(self.parser.get_status_code())
        if self.head_only:  # an answer to HEAD has no body, whatever its Content-Length says
            self.done = True
            self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered >= HIGH_WATER and not self.paused and not self.closed:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.keep = self.parser.should_keep_alive()  # read here: llhttp forgets it once the message is over
        self.done = True
        self._wake()

    # the relay's side
    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, err: BaseException) -> None:
        if self.error is None:
            self.error = err
        if self.head is not None and not self.head.done():
            self.head.set_exception(err)
            self.head.exception()  # retrieved here: a request that gave up on the head need not see it
        self._wake()

    def send(self, data: bytes, head_only: bool) -> asyncio.Future:
        self._reset()
        self.head_only = head_only
        self.transport.write(data)
        return self.head


class Answer:
    """A model server's answer: its status and headers at once, its body as it comes."""

    def __init__(self, pool: Upstream, key: tuple[str, int], conn: _Conn, status: int) -> None:
        self._pool, self._key, self._conn = pool, key, conn
        self.status = status
        self.reason = conn.reason.decode("latin-1")
        self.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in conn.headers]

    def header(self, name: str) -> str | None:
        """The first value of a header (name in lower case), or None."""
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").split(";", 1)[0].strip().lower()

    @property
    def length(self) -> int | None:
        """The body's length where the answer gives it (not a stream)."""
        v = (self.header("content-length") or "").strip()
        return int(v) if v.isdigit() else None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk as the model's server writes it (transfer coding taken off); the connection goes
        back to the pool after the last one."""
        c = self._conn
        while True:
            if c.chunks:
                if len(c.chunks) == 1:
                    data = c.chunks.popleft()
                else:
                    data = b"".join(c.chunks)
                    c.chunks.clear()
                c.buffered = 0
                if c.paused and not c.closed:
                    c.paused = False
                    c.transport.resume_reading()
                yield data
                continue
            if c.done:
                self._pool._give_back(self._key, c)
                return
            if c.error is not None:
                raise c.error
            c.waiter = asyncio.get_running_loop().create_future()
            await c.waiter
            c.waiter = None

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    def close(self) -> None:
        """Give up on the answer (the client went away): the connection closed, never reused, so that the model's
        server sees the request abandoned and stops generating."""
        if self._conn.transport is not None:
            self._conn.transport.close()


class Upstream:
    """Connections to the models' servers, kept alive per host and port."""

    def __init__(self, keep_alive: bool = True) -> None:
        self.keep_alive = keep_alive
        self._idle: dict[tuple[str, int], list[_Conn]] = {}

    async def request(self, host: str, port: int, method: str, target: str, headers: list[tuple[bytes, bytes]],
                      body: bytes) -> Answer:
        """Send one request (target: the path and query as the client sent them; headers as their bytes came) and
        wait for the answer's head."""
        key = (host, port)
        head = [f"{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\n".encode("utf-8", "surrogateescape")]
        head += [b"%s: %s\r\n" % kv for kv in headers]
        if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            head.append(b"Content-Length: %d\r\n" % len(body))
        if not self.keep_alive:
            head.append(b"Connection: close\r\n")
        data = b"".join(head) + b"\r\n" + body
        for attempt in range(2):
            conn = (self._idle_conn(key) if attempt == 0 else None) or await self._connect(key)
            fut = conn.send(data, method == "HEAD")
            try:
                status = await fut
            except UpstreamError:
                if conn.used and not conn.got_bytes:
                    continue  # closed by the server while idle, as it was taken: once more on a new connection
                raise
            except BaseException:
                conn.transport.close()
                raise
            conn.used = True
            return Answer(self, key, conn, status)
        raise UpstreamError("the model's server closed a new connection before answering")

    def _idle_conn(self, key: tuple[str, int]) -> _Conn | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            c = idle.pop()
            if not c.closed and now - c.idle_since < IDLE_S:
                return c
            c.transport.close()
        return None

    async def _connect(self, key: tuple[str, int]) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(_Conn, *key), CONNECT_S)
        except asyncio.TimeoutError:
            raise UpstreamError(f"no connection to {key[0]}:{key[1]} within {CONNECT_S:g} s") from None
        return conn

    def _give_back(self, key: tuple[str, int], c: _Conn) -> None:
        if not self.keep_alive or c.closed or c.head_only or not c.keep:
            c.transport.close()
            return
        idle = self._idle.setdefault(key, [])
        if len(idle) >= IDLE_PER_SERVER:
            c.transport.close()
            return
        c.idle_since = time.monotonic()
        idle.append(c)

    def close(self) -> None:
        for idle in self._idle.values():
            for c in idle:
                c.transport.close()
        self._idle.clear()
