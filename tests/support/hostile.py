"""A hostile provider: a raw asyncio HTTP/1.1 server that serves pre-built answers.

    server = HostileServer.start()
    server.serve("bomb", Answer(200, {"content-encoding": "gzip"}, gzip_bomb(...)))
    provider_create(..., base_url=server.base_url("bomb"))   # POST /bomb/v1/chat/completions

Raw on purpose, not the mock provider: its answers are whatever bytes it is given (a gzip
bomb, a 50 MB body, an encoding nobody asked for), written in chunks at a chosen pace, and it
shrugs when the proxy hangs up halfway. It runs on a thread of the test process with its own
event loop, so the proxy under test (another process) is the only one measured.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import threading
import zlib
from dataclasses import dataclass, field

MiB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes  # as sent on the wire (already compressed, when it says so)
    chunk: int = 64 * 1024  # written this many bytes at a time
    delay: float = 0.0  # seconds between chunks: a slow provider makes a long window
    declared: bool = True  # a Content-Length; without, the body ends when the server closes
    requests: list[bytes] = field(default_factory=list, compare=False)  # heads received


class HostileServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.answers: dict[str, Answer] = {}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostile-provider", daemon=True)
        self._server: asyncio.Server | None = None

    @classmethod
    def start(cls) -> HostileServer:
        server = cls()
        server._thread.start()
        if not server._ready.wait(10):
            raise RuntimeError("the hostile provider did not start")
        return server

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def serve(self, name: str, answer: Answer) -> str:
        """Answer every request under /<name>/ with ``answer``; returns the base URL."""
        self.answers[name] = answer
        return self.base_url(name)

    def base_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}/v1"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            path = request_line.split(" ")[1]
            length = 0
            for line in header_lines:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            answer = self.answers.get(path.strip("/").split("/")[0])
            if answer is None:
                answer = Answer(404, {"content-type": "application/json"}, b'{"error":"?"}')
            answer.requests.append(head)
            headers = {"connection": "close"}
            if answer.declared:
                headers["content-length"] = str(len(answer.body))
            headers.update(answer.headers)
            writer.write(
                f"HTTP/1.1 {answer.status} X\r\n".encode()
                + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
                + b"\r\n"
            )
            view = memoryview(answer.body)
            for start in range(0, len(view), answer.chunk):
                writer.write(view[start : start + answer.chunk])
                await writer.drain()
                if answer.delay:
                    await asyncio.sleep(answer.delay)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the proxy hung up, as it should past a cap
        finally:
            writer.close()


# --- bodies, built once per session ---------------------------------------------------------

GZIP, DEFLATE = 31, 15  # zlib wbits: a gzip member, a zlib stream (HTTP's "deflate")


@functools.cache
def compressed(prefix: bytes, filler_bytes: int, suffix: bytes, *, wbits: int) -> bytes:
    """prefix + filler_bytes of "a" + suffix, compressed without ever holding the filler."""
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    block = b"a" * MiB
    parts = [packer.compress(prefix)]
    for _ in range(filler_bytes // MiB):
        parts.append(packer.compress(block))
    parts.append(packer.compress(b"a" * (filler_bytes % MiB)))
    parts.append(packer.compress(suffix))
    parts.append(packer.flush())
    return b"".join(parts)


@functools.cache
def _plain(prefix: bytes, filler_bytes: int, suffix: bytes) -> bytes:
    return prefix + b"a" * filler_bytes + suffix


def _body(prefix: bytes, filler_bytes: int, suffix: bytes, wbits: int | None) -> bytes:
    if wbits is None:
        return _plain(prefix, filler_bytes, suffix)
    return compressed(prefix, filler_bytes, suffix, wbits=wbits)


def completion(filler_bytes: int, *, wbits: int | None = None) -> bytes:
    """A chat completion whose content is ``filler_bytes`` of "a" (compressed, with wbits)."""
    before = (
        b'{"id":"chatcmpl-h","object":"chat.completion","created":1,"model":"m","choices":'
        b'[{"index":0,"message":{"role":"assistant","content":"'
    )
    after = (
        b'"},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}'
    )
    return _body(before, filler_bytes, after, wbits)


def error(filler_bytes: int, *, wbits: int | None = None) -> bytes:
    """An error body whose message is ``filler_bytes`` of "a"."""
    return _body(b'{"error":{"message":"', filler_bytes, b'"}}', wbits)


def stream(filler_bytes: int, *, wbits: int | None = None) -> bytes:
    """A whole chat stream whose first event's content is ``filler_bytes`` of "a"."""
    before = (
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{"content":"'
    )
    after = (
        b'"},"finish_reason":null}]}\n\n'
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}\n\n'
        b"data: [DONE]\n\n"
    )
    return _body(before, filler_bytes, after, wbits)
