"""The load generators: a lean HTTP/1.1 client on an asyncio Protocol, and httpx.

Both keep one connection alive per concurrent worker. Which is cheaper was measured with
`bench/run.py --compare-clients` (see bench/README.md); the raw one is the default.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httpx

from .common import HOST
from .scenarios import RequestSpec


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    first_content: float | None  # perf_counter() when the first content chunk arrived


class Session(Protocol):
    async def request(self, worker: int) -> Reply: ...

    async def aclose(self) -> None: ...


class RawConnection(asyncio.Protocol):
    """A minimal HTTP/1.1 client connection: one request at a time, keep-alive.

    It parses just enough of the response (status, Content-Length or chunked framing,
    Connection: close) to know where it ends, and timestamps the first content chunk in
    data_received, the moment the bytes reach this process.
    """

    def __init__(self, first_content: re.Pattern[bytes] | None) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self._pattern = first_content
        self._waiter: asyncio.Future[Reply] | None = None
        self._buf = bytearray()
        self._start_response()

    def _start_response(self) -> None:
        self._head_done = False
        self._status = 0
        self._length = -1
        self._chunked = False
        self._close = False
        self._body = bytearray()
        self._chunk_left = 0
        self._crlf_left = 0
        self._scanned = 0
        self._first: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def send(self, data: bytes) -> asyncio.Future[Reply]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self._buf += data
        try:
            done = self._parse()
        except (ValueError, IndexError) as exc:
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_exception(ConnectionError(f"bad response: {exc}"))
            if self.transport is not None:
                self.transport.close()
            return
        if self._pattern is not None and self._first is None and len(self._body) > self._scanned:
            # Re-scan a little of what was already seen: a marker may straddle two reads.
            if self._pattern.search(self._body, max(0, self._scanned - 16)):
                self._first = now
            self._scanned = len(self._body)
        self.body_grew(now)
        if done:
            reply = self.make_reply()
            close = self._close
            self._start_response()
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(reply)
            if close and self.transport is not None:
                self.transport.close()

    def body_grew(self, now: float) -> None:
        """Called after each read with what has arrived of the body; for subclasses that
        look at every chunk (the chunk-forwarding measurement)."""

    def make_reply(self) -> Reply:
        return Reply(self._status, bytes(self._body), self._first)

    def _parse(self) -> bool:
        """Consume what can be consumed; True once the response is complete."""
        buf = self._buf
        if not self._head_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            lines = bytes(buf[:end]).split(b"\r\n")
            del buf[: end + 4]
            self._status = int(lines[0].split(b" ", 2)[1])
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == b"content-length":
                    self._length = int(value)
                elif name == b"transfer-encoding":
                    self._chunked = b"chunked" in value
                elif name == b"connection":
                    self._close = value == b"close"
            self._head_done = True
        if not self._chunked:
            if self._length < 0:
                raise ValueError("neither Content-Length nor chunked")
            take = self._length - len(self._body)
            self._body += buf[:take]
            del buf[:take]
            return len(self._body) >= self._length
        while True:
            if self._chunk_left:
                take = min(self._chunk_left, len(buf))
                self._body += buf[:take]
                del buf[:take]
                self._chunk_left -= take
                if self._chunk_left:
                    return False
            if self._crlf_left:
                if len(buf) < 2:
                    return False
                del buf[:2]
                self._crlf_left = 0
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                return False
            size = int(bytes(buf[:line_end]).split(b";", 1)[0], 16)
            if size == 0:
                # The last chunk; no trailers are ever sent, so an empty line ends it.
                if len(buf) < line_end + 4:
                    return False
                del buf[: line_end + 4]
                return True
            del buf[: line_end + 2]
            self._chunk_left, self._crlf_left = size, 2


class RawSession:
    """Lean asyncio-protocol client: one keep-alive connection per worker."""

    def __init__(self, spec: RequestSpec, concurrency: int) -> None:
        self._spec = spec
        self._data = spec.raw()
        self._conns: list[RawConnection | None] = [None] * concurrency

    async def _connect(self) -> RawConnection:
        loop = asyncio.get_running_loop()
        pattern = self._spec.first_content
        _, protocol = await loop.create_connection(
            lambda: RawConnection(pattern), HOST, self._spec.port
        )
        return protocol

    async def connect(self, worker: int) -> None:
        """Open a worker's connection ahead of its first request (which then times no
        connect)."""
        conn = self._conns[worker]
        if conn is None or conn.lost:
            self._conns[worker] = await self._connect()

    async def request(self, worker: int) -> Reply:
        conn = self._conns[worker]
        if conn is None or conn.lost:
            conn = self._conns[worker] = await self._connect()
        return await conn.send(self._data)

    async def aclose(self) -> None:
        for conn in self._conns:
            if conn is not None and conn.transport is not None:
                conn.transport.close()
        await asyncio.sleep(0)  # let the transports finish closing


async def get(port: int, path: str) -> Reply:
    """One GET on a connection of its own (a probe such as /readyz); OSError if refused."""
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: RawConnection(None), HOST, port)
    try:
        head = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n"
        return await conn.send(head.encode())
    finally:
        if conn.transport is not None:
            conn.transport.close()


class SplitSession:
    """Workers dealt round-robin over several processes serving the same thing (two proxy
    processes behind one load generator), each with its own keep-alive connection."""

    def __init__(self, specs: list[RequestSpec], concurrency: int) -> None:
        share = -(-concurrency // len(specs))
        self._sessions = [RawSession(spec, share) for spec in specs]

    async def request(self, worker: int) -> Reply:
        count = len(self._sessions)
        return await self._sessions[worker % count].request(worker // count)

    async def aclose(self) -> None:
        for session in self._sessions:
            await session.aclose()


class HttpxSession:
    """httpx.AsyncClient with a pool sized to the concurrency."""

    def __init__(self, spec: RequestSpec, concurrency: int) -> None:
        self._spec = spec
        self._client = httpx.AsyncClient(
            base_url=f"http://{HOST}:{spec.port}",
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            timeout=httpx.Timeout(30.0),
            # A proxy from the environment must never sit between the bench and its targets.
            trust_env=False,
        )

    async def request(self, worker: int) -> Reply:
        spec = self._spec
        if not spec.stream:
            response = await self._client.post(spec.path, content=spec.body, headers=spec.headers)
            return Reply(response.status_code, response.content, None)
        pattern = spec.first_content
        async with self._client.stream(
            "POST", spec.path, content=spec.body, headers=spec.headers
        ) as response:
            body = bytearray()
            first: float | None = None
            async for chunk in response.aiter_raw():
                start = max(0, len(body) - 16)
                body += chunk
                if first is None and pattern is not None and pattern.search(body, start):
                    first = time.perf_counter()
            return Reply(response.status_code, bytes(body), first)

    async def aclose(self) -> None:
        await self._client.aclose()


CLIENTS: dict[str, Callable[[RequestSpec, int], Session]] = {
    "raw": RawSession,
    "httpx": HttpxSession,
}
