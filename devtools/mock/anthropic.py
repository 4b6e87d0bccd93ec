"""Anthropic Messages: the mock's replies and stream frames."""

from __future__ import annotations

from typing import Any

from devtools.mock.base import _sse, _stream_error_frame
from devtools.mock.plan import _Block, _Plan, _with_usage


def _anthropic_usage(plan: _Plan, output_tokens: int) -> dict[str, int]:
    """Anthropic's figures: ``input_tokens`` leaves out the cached prompt tokens."""
    read = plan.cache_read or 0
    write = plan.cache_write
    return {
        "input_tokens": max(plan.prompt_tokens - read - write, 0),
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
        "output_tokens": output_tokens,
    }


def _anthropic_block(plan: _Plan, block: _Block, *, whole: bool) -> dict[str, Any]:
    """A content block as a reply carries it (``whole``) or as its content_block_start does."""
    if block.kind == "text":
        return {"type": "text", "text": block.text if whole else ""}
    if block.kind == "thinking":
        if not whole:
            return {"type": "thinking", "thinking": "", "signature": ""}
        return {"type": "thinking", "thinking": block.text, "signature": plan.signature(block)}
    arguments = block.arguments if whole and block.complete else None
    return {"type": "tool_use", "id": block.call_id, "name": block.name, "input": arguments or {}}


def _anthropic_reply(reply_id: str, plan: _Plan) -> dict[str, Any]:
    reply = {
        "id": reply_id,
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": [_anthropic_block(plan, block, whole=True) for block in plan.blocks],
        "stop_reason": plan.anthropic_stop(),
        "stop_sequence": plan.stop_sequence,
        "usage": _anthropic_usage(plan, plan.count()),
    }
    return _with_usage(reply, plan)


class _AnthropicFrames:
    """Block 0 starts at once; each later block starts (after the previous one stopped) with
    its first piece, or at the end when it has none."""

    DELTAS = {"text": ("text_delta", "text"), "thinking": ("thinking_delta", "thinking"),
              "tool_use": ("input_json_delta", "partial_json")}  # fmt: skip

    def __init__(self, reply_id: str, plan: _Plan) -> None:
        self.reply_id = reply_id
        self.plan = plan
        self.current = 0  # the block started last

    def _start(self, index: int) -> bytes:
        block = _anthropic_block(self.plan, self.plan.blocks[index], whole=False)
        event = {"type": "content_block_start", "index": index, "content_block": block}
        return _sse("content_block_start", event)

    def _stop(self, index: int) -> list[bytes]:
        frames = []
        block = self.plan.blocks[index]
        if block.kind == "thinking":  # its signature comes just before its stop
            delta = {"type": "signature_delta", "signature": self.plan.signature(block)}
            event = {"type": "content_block_delta", "index": index, "delta": delta}
            frames.append(_sse("content_block_delta", event))
        event = {"type": "content_block_stop", "index": index}
        return [*frames, _sse("content_block_stop", event)]

    def _advance(self, to: int) -> list[bytes]:
        frames = []
        while self.current < to:
            frames += self._stop(self.current)
            self.current += 1
            if self.current < len(self.plan.blocks):
                frames.append(self._start(self.current))
        return frames

    def opening(self) -> list[bytes]:
        message: dict[str, Any] = {
            "id": self.reply_id,
            "type": "message",
            "role": "assistant",
            "model": self.plan.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _anthropic_usage(self.plan, 1),
        }
        return [
            _sse("message_start", {"type": "message_start", "message": message}),
            self._start(0),
            _sse("ping", {"type": "ping"}),
        ]

    def piece(self, block: int, text: str) -> list[bytes]:
        kind, field_name = self.DELTAS[self.plan.blocks[block].kind]
        delta = {"type": kind, field_name: text}
        event = {"type": "content_block_delta", "index": block, "delta": delta}
        return [*self._advance(block), _sse("content_block_delta", event)]

    def closing(self) -> list[bytes]:
        plan = self.plan
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": plan.anthropic_stop(), "stop_sequence": plan.stop_sequence},
            # Real streams repeat the input and cache counts here, cumulative like the output.
            "usage": _anthropic_usage(plan, plan.count()),
        }
        _with_usage(message_delta, plan)
        return [
            *self._advance(len(plan.blocks)),
            _sse("message_delta", message_delta),
            _sse("message_stop", {"type": "message_stop"}),
        ]

    def error(self, message: str) -> bytes:
        return _stream_error_frame("anthropic", message)
