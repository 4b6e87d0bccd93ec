"""A minimal WebSocket client (RFC 6455) on the standard library, for the live tests.

No WebSocket client library is installed (autobahn's is callback-driven, for a Twisted or
asyncio loop); a test needs only this: the opening handshake with chosen headers (the
admin's session cookie, an Origin), masked text frames out, text frames in, pings answered
and the closing handshake. Blocking, with a timeout per read.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import time
from typing import Any
from urllib.parse import urlsplit

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TEXT, _CLOSE, _PING, _PONG, _CONTINUATION = 0x1, 0x8, 0x9, 0xA, 0x0


class HandshakeRefused(Exception):
    """The server answered the opening handshake with something other than 101."""

    def __init__(self, status: int, head: str) -> None:
        super().__init__(f"handshake refused: HTTP {status}\n{head}")
        self.status = status


class Closed(Exception):
    def __init__(self, code: int | None) -> None:
        super().__init__(f"closed by the server (code {code})")
        self.code = code


class WebSocket:
    def __init__(self, sock: socket.socket, buffered: bytes) -> None:
        self.sock = sock
        self._buffer = buffered

    @classmethod
    def connect(
        cls, url: str, *, headers: dict[str, str] | None = None, timeout: float = 5.0
    ) -> WebSocket:
        """``url`` is ws://host:port/path (loopback tests: no TLS)."""
        parts = urlsplit(url)
        assert parts.scheme == "ws" and parts.hostname and parts.port, url
        sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
            f"Host: {parts.hostname}:{parts.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in (headers or {}).items()),
        ]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = sock.recv(4096)
            if not chunk:
                break
            response += chunk
        head, _, rest = response.partition(b"\r\n\r\n")
        text = head.decode("latin-1")
        status_line, *header_lines = text.split("\r\n")
        status = int(status_line.split()[1]) if len(status_line.split()) > 1 else 0
        if status != 101:
            sock.close()
            raise HandshakeRefused(status, text)
        received = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in header_lines)
        }
        digest = hashlib.sha1((key + _GUID).encode()).digest()  # noqa: S324 - the protocol's
        if received.get("sec-websocket-accept") != base64.b64encode(digest).decode():
            sock.close()
            raise AssertionError(f"bad Sec-WebSocket-Accept in\n{text}")
        return cls(sock, rest)

    # --- frames ---------------------------------------------------------------------------

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        header = bytes([0x80 | opcode])
        length = len(payload)
        if length < 126:
            header += bytes([0x80 | length])
        elif length < 2**16:
            header += bytes([0x80 | 126]) + struct.pack("!H", length)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", length)
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _read(self, count: int, deadline: float) -> bytes:
        while len(self._buffer) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no WebSocket message in time")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError("no WebSocket message in time") from None
            if not chunk:
                raise Closed(None)
            self._buffer += chunk
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def _frame(self, deadline: float) -> tuple[bool, int, bytes]:
        first, second = self._read(2, deadline)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2, deadline))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8, deadline))
        mask = self._read(4, deadline) if second & 0x80 else b""
        payload = self._read(length, deadline)
        if mask:
            payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        return bool(first & 0x80), first & 0x0F, payload

    # --- messages -------------------------------------------------------------------------

    def send_text(self, text: str) -> None:
        self._send_frame(_TEXT, text.encode())

    def send_json(self, content: Any) -> None:
        self.send_text(json.dumps(content))

    def recv_text(self, *, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        parts: list[bytes] = []
        while True:
            fin, opcode, payload = self._frame(deadline)
            if opcode == _PING:
                self._send_frame(_PONG, payload)
            elif opcode == _CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise Closed(code)
            elif opcode in (_TEXT, _CONTINUATION):
                parts.append(payload)
                if fin:
                    return b"".join(parts).decode()

    def recv_json(self, *, timeout: float = 5.0) -> Any:
        return json.loads(self.recv_text(timeout=timeout))

    def close(self) -> None:
        try:
            self._send_frame(_CLOSE, struct.pack("!H", 1000))
        except OSError:
            pass
        finally:
            self.sock.close()

    def __enter__(self) -> WebSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
