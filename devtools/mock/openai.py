"""OpenAI chat completions: the mock's replies and stream frames."""

from __future__ import annotations

import time
from typing import Any

from devtools.mock.base import _json, _stream_error_frame
from devtools.mock.plan import _Plan, _with_usage


def _openai_usage(plan: _Plan) -> dict[str, Any]:
    completion = plan.count()
    usage: dict[str, Any] = {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": plan.prompt_tokens + completion,
    }
    # The details objects only when they have something to say, as OpenAI-compatible
    # providers (Moonshot, DeepSeek) send them.
    if plan.cache_read is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": plan.cache_read, "audio_tokens": 0}
    reasoning = plan.count("thinking")
    if reasoning:
        usage["completion_tokens_details"] = {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return usage


def _openai_reply(reply_id: str, plan: _Plan) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": plan.text(),
        "refusal": None,
        "annotations": [],
    }
    thinking = [block.text for block in plan.blocks if block.kind == "thinking"]
    if thinking:
        message["reasoning_content"] = "".join(thinking)
    if plan.tools():
        message["tool_calls"] = [
            {
                "id": block.call_id,
                "type": "function",
                "function": {"name": block.name, "arguments": block.text},
            }
            for block in plan.tools()
        ]
    reply = {
        "id": reply_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": plan.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": plan.openai_finish(),
            }
        ],
        "usage": _openai_usage(plan),
        "service_tier": "default",
        "system_fingerprint": "fp_mock",
    }
    return _with_usage(reply, plan)


class _OpenAIFrames:
    def __init__(self, reply_id: str, plan: _Plan, *, include_usage: bool) -> None:
        self.plan = plan
        self.include_usage = include_usage
        self.head = {
            "id": reply_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": plan.model,
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
        }
        tools = [i for i, block in enumerate(plan.blocks) if block.kind == "tool_use"]
        self.tool_index = {block: index for index, block in enumerate(tools)}
        self.started: set[int] = set()

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        chunk: dict[str, Any] = {**self.head, "choices": [choice]}
        if self.include_usage:
            chunk["usage"] = None
        return b"data: " + _json(chunk) + b"\n\n"

    def opening(self) -> list[bytes]:
        # A reply of tool calls only has null content, as OpenAI sends it.
        content = None if self.plan.text() is None else ""
        return [self._chunk({"role": "assistant", "content": content, "refusal": None}, None)]

    def piece(self, block: int, text: str) -> list[bytes]:
        kind = self.plan.blocks[block].kind
        if kind == "text":
            return [self._chunk({"content": text}, None)]
        if kind == "thinking":  # Moonshot's and DeepSeek's field for it
            return [self._chunk({"reasoning_content": text}, None)]
        frames = []
        index = self.tool_index[block]
        if block not in self.started:  # a call opens with its id and name, no arguments
            self.started.add(block)
            call = self.plan.blocks[block]
            function = {"name": call.name, "arguments": ""}
            opening = {"index": index, "id": call.call_id, "type": "function", "function": function}
            frames.append(self._chunk({"tool_calls": [opening]}, None))
        arguments = {"index": index, "function": {"arguments": text}}
        frames.append(self._chunk({"tool_calls": [arguments]}, None))
        return frames

    def closing(self) -> list[bytes]:
        plan = self.plan
        frames = [self._chunk({}, plan.openai_finish())]
        if self.include_usage:
            chunk = _with_usage({**self.head, "choices": [], "usage": _openai_usage(plan)}, plan)
            frames.append(b"data: " + _json(chunk) + b"\n\n")
        frames.append(b"data: [DONE]\n\n")
        return frames

    def error(self, message: str) -> bytes:
        return _stream_error_frame("openai", message)
