"""One mock call: its response channel, its reply's blocks and plan, and the frames protocol."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from devtools.mock.base import (
    ANTHROPIC_ERRORS,
    JSON_TYPE,
    REQUEST_ID_HEADER,
    Api,
    Send,
    _anthropic_error,
    _daphne_request,
    _json,
    _openai_error,
)
from devtools.mock.tokens import _seal, _sign


class _Call:
    """One provider API call: its record, its response channel and its client watcher."""

    def __init__(
        self, api: Api, send: Send, record: dict[str, Any], gone: asyncio.Task[float]
    ) -> None:
        self.api = api
        self.send = send
        self.record = record
        self.gone = gone
        self.request_id = REQUEST_ID_HEADER[api], b"req_" + secrets.token_hex(12).encode()

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.record["status"] = status
        headers = [*headers, self.request_id]
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, data: bytes, *, more: bool = True) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def json(
        self, status: int, payload: Any, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        data = _json(payload)
        length = (b"content-length", str(len(data)).encode())
        await self.start(status, [JSON_TYPE, length, *headers])
        await self.body(data, more=False)

    async def error(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        """Reject the call in the API's own error shape (only OpenAI's has param and code)."""
        if self.api != "anthropic":
            await self.json(status, _openai_error(message, param=param, code=code))
        else:
            await self.json(status, _anthropic_error(ANTHROPIC_ERRORS[status], message))

    async def pause(self, seconds: float) -> bool:
        """Wait `seconds` unless the client leaves first; True when it has left."""
        if seconds > 0:
            await asyncio.wait((self.gone,), timeout=seconds)
        if not self.gone.done():
            return False
        self.record["disconnected"] = True
        self.record["disconnected_at"] = self.gone.result()
        return True

    async def piece(self, frames: list[bytes], piece: str, kind: str) -> None:
        """Send one piece's frames (block transitions first); it counts one output token."""
        for frame in frames:
            await self.body(frame)
        now = time.time()
        record = self.record
        if record["first_chunk_at"] is None:
            record["first_chunk_at"] = now
        record["chunk_times"].append(now)
        record["chunks_sent"] += 1
        usage = record["usage"]
        usage["output_tokens"] += 1
        if kind == "text":
            record["text_sent"] += piece
        elif kind == "thinking":
            usage["reasoning_tokens"] += 1

    async def abort(self) -> None:
        request = _daphne_request(self.send)
        if request is not None:
            request.loseConnection()
        else:
            await self.body(b"", more=False)


@dataclass
class _Block:
    """One content block of a reply: text, thinking, or a tool call, as streamed pieces."""

    kind: Literal["text", "thinking", "tool_use"]
    pieces: list[str]
    call_id: str = ""
    name: str = ""
    arguments: dict[str, Any] | None = None
    complete: bool = True  # False when the token limit cut it short
    custom: bool = False  # Responses: a call of a `custom` tool (its pieces are its input)
    item_id: str = ""  # Responses: the output item's id

    @property
    def text(self) -> str:
        return "".join(self.pieces)


class _Reject(Exception):
    """A request the real API refuses with a 400 (only OpenAI's error has param and code)."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


@dataclass
class _Plan:
    """What a validated call will produce, fixed at its start."""

    model: str
    full: list[_Block]  # the whole reply the mock would give without a token limit
    prompt_tokens: int
    ttft: float
    chunk_delay: float
    secret: bytes
    cut_at: str | None = None  # the stop sequence the full reply's text was cut at
    cache_read: int | None = None  # None: the reply reports no cache figures
    cache_write: int = 0
    blocks: list[_Block] = field(default_factory=list)  # what is sent, after the limit
    truncated: bool = False
    break_at: int | None = None
    error_at: int | None = None  # a stream's provider error event after this many pieces
    error_message: str = ""
    garbage_at: int | None = None  # a stream's data line that is not JSON, after this many
    # The usage object the reply reports instead of its true counts; None: no usage at all.
    usage_override: dict[str, Any] | None = None
    usage_replaced: bool = False
    error_event: str = "error"  # Responses: what a stream_error fault sends
    encrypt_reasoning: bool = False  # Responses: reasoning items carry encrypted_content

    def limit_to(self, limit: int | None) -> None:
        """Keep the first ``limit`` pieces of the full reply (blocks past them are dropped)."""
        total = sum(len(block.pieces) for block in self.full)
        self.truncated = limit is not None and total > limit
        if limit is None or not self.truncated:
            self.blocks = [replace(block, pieces=list(block.pieces)) for block in self.full]
            return
        left, self.blocks = limit, []
        for block in self.full:
            if left == 0:
                break
            kept = block.pieces[:left]
            left -= len(kept)
            self.blocks.append(replace(block, pieces=kept, complete=kept == block.pieces))

    @property
    def stop_sequence(self) -> str | None:
        """The stop sequence that ended the reply; None when the token limit came first."""
        return None if self.truncated else self.cut_at

    @property
    def pieces(self) -> list[tuple[int, str]]:
        """Every piece to send, with the index of its block."""
        return [(index, piece) for index, block in enumerate(self.blocks) for piece in block.pieces]

    def count(self, kind: str | None = None) -> int:
        return sum(len(b.pieces) for b in self.blocks if kind is None or b.kind == kind)

    def text(self) -> str | None:
        texts = [block.text for block in self.blocks if block.kind == "text"]
        return "".join(texts) if texts else None

    def tools(self) -> list[_Block]:
        return [block for block in self.blocks if block.kind == "tool_use"]

    def signature(self, block: _Block) -> str:
        return _sign(self.secret, block.text)

    def sealed(self, block: _Block) -> str:
        """A reasoning item's encrypted_content: only this process can make one that opens."""
        return _seal(self.secret, block.text)

    def openai_finish(self) -> str:
        if self.truncated:
            return "length"
        return "tool_calls" if self.tools() else "stop"

    def anthropic_stop(self) -> str:
        if self.truncated:
            return "max_tokens"
        if self.stop_sequence is not None:
            return "stop_sequence"
        return "tool_use" if self.tools() else "end_turn"


@dataclass
class _Inspection:
    """What a validated request asks for, beyond model, messages and limit."""

    prompt_tokens: int
    images: int
    tool_results: list[dict[str, Any]] | None  # the last message's results, if it is one
    offered: dict[str, str]  # the tools the request offers: name -> "function" | "custom"
    tools_allowed: bool  # False under tool_choice none
    thinking: bool  # Anthropic: the request enables thinking
    stops: list[str]
    encrypt_reasoning: bool = False  # Responses: `include` asks for encrypted reasoning


def _with_usage(reply: dict[str, Any], plan: _Plan, key: str = "usage") -> dict[str, Any]:
    """``reply`` with a usage fault's figures (or no usage at all) in place of the true ones."""
    if plan.usage_replaced:
        if plan.usage_override is None:
            reply.pop(key, None)
        else:
            reply[key] = plan.usage_override
    return reply


class _Frames(Protocol):
    """The encoded SSE events of one streamed reply, in the order they are sent."""

    def opening(self) -> list[bytes]: ...

    def piece(self, block: int, text: str) -> list[bytes]:
        """The frames that send piece ``text`` of block ``block`` (the piece's own last)."""
        ...

    def closing(self) -> list[bytes]: ...

    def error(self, message: str) -> bytes:
        """The provider's own event for a stream that fails after it started."""
        ...
