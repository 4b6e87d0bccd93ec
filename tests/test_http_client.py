"""The upstream HTTP client (core/http.py), on both transports: no cookies kept between
requests, httpx's error family for every failure, and no half-read answer reused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from django.test import override_settings

from core import http as core_http

pytestmark = [pytest.mark.core, pytest.mark.asyncio]

TRANSPORTS = pytest.mark.parametrize("transport", ["aiohttp", "httpx"])

# One answer: its bytes, its bytes in parts sent apart (HANG_UP as a part: the connection
# closes there), or None to hang up instead.
Answer = bytes | tuple[bytes, ...] | None
HANG_UP = b""


class Upstream:
    """A loopback HTTP/1.1 server answering each request with the next scripted answer."""

    def __init__(self, answers: list[Answer]) -> None:
        self.answers = answers
        self.requests: list[bytes] = []
        self.connections = 0
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                self.requests.append(head)
                answer = self.answers.pop(0)
                if answer is None:  # hang up without answering
                    writer.close()
                    return
                for part in answer if isinstance(answer, tuple) else (answer,):
                    if part == HANG_UP:
                        writer.close()
                        return
                    writer.write(part)
                    await writer.drain()
                    await asyncio.sleep(0.05 if isinstance(answer, tuple) else 0)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def upstream(answers: list[Answer]) -> AsyncIterator[Upstream]:
    server_state = Upstream(answers)
    server = await asyncio.start_server(server_state.handle, "127.0.0.1", 0)
    server_state.port = server.sockets[0].getsockname()[1]
    try:
        yield server_state
    finally:
        server.close()


@asynccontextmanager
async def client(transport: str) -> AsyncIterator[httpx.AsyncClient]:
    with override_settings(PROXY_UPSTREAM_TRANSPORT=transport):
        built = core_http._build_client()
        try:
            yield built
        finally:
            await built.aclose()


def answer(body: bytes, *extra: bytes) -> bytes:
    head = [b"HTTP/1.1 200 OK", b"Content-Type: application/json", *extra]
    head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def post(http: httpx.AsyncClient, port: int) -> httpx.Response:
    request = http.build_request("POST", f"http://127.0.0.1:{port}/v1/x", json={"a": 1})
    return await http.send(request, stream=True)


async def read_all(response: httpx.Response) -> bytes:
    try:
        return b"".join([chunk async for chunk in response.aiter_raw()])
    finally:
        await response.aclose()


@TRANSPORTS
async def test_it_keeps_no_cookie_a_provider_sets(transport: str) -> None:
    answers: list[Answer] = [
        answer(b"{}", b"Set-Cookie: __cf_bm=tenant-a; Path=/"),
        answer(b"{}"),
    ]
    async with upstream(answers) as server, client(transport) as http:
        for _ in range(2):
            assert await read_all(await post(http, server.port)) == b"{}"
    assert len(server.requests) == 2
    assert b"cookie" not in server.requests[1].lower()


@TRANSPORTS
async def test_it_sends_the_headers_httpx_built_and_no_others(transport: str) -> None:
    async with upstream([answer(b"{}")]) as server, client(transport) as http:
        await read_all(await post(http, server.port))
    head = server.requests[0].lower()
    assert b"user-agent: llm-proxy\r\n" in head
    assert b"content-type: application/json\r\n" in head
    assert b"aiohttp" not in head and b"python" not in head
    assert head.count(b"accept-encoding:") == 1
    assert head.count(b"content-length: 7\r\n") == 1


@TRANSPORTS
async def test_it_raises_a_connect_error_for_a_port_nobody_listens_on(transport: str) -> None:
    async with upstream([]) as server:
        port = server.port
    async with client(transport) as http:
        with pytest.raises(httpx.ConnectError):
            await post(http, port)


@TRANSPORTS
async def test_it_raises_an_httpx_error_when_the_provider_hangs_up(transport: str) -> None:
    async with upstream([None]) as server, client(transport) as http:
        with pytest.raises(httpx.TransportError):
            await post(http, server.port)


@TRANSPORTS
async def test_it_hands_on_what_arrived_then_raises_for_an_answer_cut_short(
    transport: str,
) -> None:
    cut = (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10, HANG_UP)
    async with upstream([cut]) as server, client(transport) as http:
        response = await post(http, server.port)
        assert response.status_code == 200
        await asyncio.sleep(0.2)  # the break has arrived too, behind the ten bytes
        received = b""
        with pytest.raises(httpx.TransportError):
            async for chunk in response.aiter_raw():
                received += chunk
        await response.aclose()
    # Sent before the break, billed by the provider: they reach the client.
    assert received == b"x" * 10


@TRANSPORTS
async def test_it_never_reuses_a_connection_left_mid_answer(transport: str) -> None:
    # In two parts sent apart: the client has read the first when it goes away.
    whole = answer(b'{"first":' + b"0" * 100_000 + b"}")
    first = (whole[:1000], whole[1000:])
    async with upstream([first, answer(b'{"second":1}')]) as server, client(transport) as http:
        response = await post(http, server.port)
        async for _ in response.aiter_raw():
            break  # the client went away after one chunk
        await response.aclose()
        assert await read_all(await post(http, server.port)) == b'{"second":1}'
    assert server.connections == 2


@TRANSPORTS
async def test_it_reuses_a_connection_whose_answer_was_read(transport: str) -> None:
    async with upstream([answer(b"{}"), answer(b"[]")]) as server, client(transport) as http:
        assert await read_all(await post(http, server.port)) == b"{}"
        assert await read_all(await post(http, server.port)) == b"[]"
    assert server.connections == 1


@TRANSPORTS
async def test_it_hands_back_undecoded_bytes(transport: str) -> None:
    import gzip

    body = gzip.compress(b'{"ok":true}')
    async with upstream([answer(body, b"Content-Encoding: gzip")]) as server:
        async with client(transport) as http:
            response = await post(http, server.port)
            assert response.headers["content-encoding"] == "gzip"
            assert await read_all(response) == body
