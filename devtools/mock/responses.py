"""OpenAI's Responses API: the mock's replies and stream frames."""

from __future__ import annotations

import time
from typing import Any

from devtools.mock.base import _sse
from devtools.mock.plan import _Block, _Plan, _with_usage


def _item_prefix(block: _Block) -> str:
    """OpenAI's prefix for the id of an output item of this kind."""
    if block.kind == "text":
        return "msg_"
    if block.kind == "thinking":
        return "rs_"
    return "ctc_" if block.custom else "fc_"


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _summary_text(text: str) -> dict[str, Any]:
    return {"type": "summary_text", "text": text}


def _responses_item(plan: _Plan, block: _Block, *, done: bool) -> dict[str, Any]:
    """An output item as ``response.output_item.added`` carries it, or (``done``) as
    ``response.output_item.done`` and the whole response do."""
    status = ("completed" if block.complete else "incomplete") if done else "in_progress"
    text = block.text if done else ""
    if block.kind == "text":
        content = [_output_text(text)] if done else []
        return {
            "id": block.item_id,
            "type": "message",
            "status": status,
            "content": content,
            "role": "assistant",
        }
    if block.kind == "thinking":
        item: dict[str, Any] = {"id": block.item_id, "type": "reasoning"}
        if plan.encrypt_reasoning:
            item["encrypted_content"] = plan.sealed(block)
        item["summary"] = [_summary_text(text)] if done else []
        return item
    if block.custom:
        return {
            "id": block.item_id,
            "type": "custom_tool_call",
            "status": status,
            "call_id": block.call_id,
            "input": text,
            "name": block.name,
        }
    return {
        "id": block.item_id,
        "type": "function_call",
        "status": status,
        "arguments": text,
        "call_id": block.call_id,
        "name": block.name,
    }


def _responses_usage(plan: _Plan) -> dict[str, Any]:
    """The Responses API's figures: ``input_tokens`` counts the cached ones too."""
    output = plan.count()
    return {
        "input_tokens": plan.prompt_tokens,
        "input_tokens_details": {"cached_tokens": plan.cache_read or 0, "cache_write_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": plan.count("thinking")},
        "total_tokens": plan.prompt_tokens + output,
    }


def _responses_object(
    reply_id: str,
    plan: _Plan,
    payload: dict[str, Any],
    *,
    created: int,
    status: str,
    output: list[dict[str, Any]],
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``response`` object: the request's settings echoed, as OpenAI does."""
    reasoning, text = payload.get("reasoning"), payload.get("text")
    reasoning = reasoning if isinstance(reasoning, dict) else {}
    text = text if isinstance(text, dict) else {}
    finished = status in ("completed", "incomplete")
    return {
        "id": reply_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": payload.get("instructions"),
        "max_output_tokens": payload.get("max_output_tokens"),
        "max_tool_calls": payload.get("max_tool_calls"),
        "model": plan.model,
        "output": output,
        "parallel_tool_calls": payload.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "prompt_cache_key": payload.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": payload.get("safety_identifier"),
        "service_tier": "default",
        "store": payload.get("store", True),
        "temperature": payload.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium", **text},
        "tool_choice": payload.get("tool_choice", "auto"),
        "tools": payload.get("tools", []),
        "top_logprobs": 0,
        "top_p": payload.get("top_p", 1.0),
        "truncation": payload.get("truncation", "disabled"),
        "usage": _responses_usage(plan) if finished else None,
        "user": payload.get("user"),
        "metadata": payload.get("metadata") or {},
    }


def _responses_reply(
    reply_id: str, plan: _Plan, payload: dict[str, Any], created: int | None = None
) -> dict[str, Any]:
    """The whole response: a non-streamed reply, and what a stream's last event carries."""
    reply = _responses_object(
        reply_id,
        plan,
        payload,
        created=int(time.time()) if created is None else created,
        status="incomplete" if plan.truncated else "completed",
        output=[_responses_item(plan, block, done=True) for block in plan.blocks],
    )
    return _with_usage(reply, plan)


class _ResponsesFrames:
    """OpenAI's Responses events: each numbered; item 0 opens at once, each later item (after
    the previous one's done events) with its first piece."""

    DELTAS = {"text": "response.output_text.delta",
              "thinking": "response.reasoning_summary_text.delta"}  # fmt: skip

    def __init__(self, reply_id: str, plan: _Plan, payload: dict[str, Any]) -> None:
        self.reply_id = reply_id
        self.plan = plan
        self.payload = payload
        self.created = int(time.time())
        self.sequence = 0
        self.current = 0  # the item opened last

    def _event(self, kind: str, **fields: Any) -> bytes:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return _sse(kind, event)

    def _where(self, index: int) -> dict[str, Any]:
        return {"item_id": self.plan.blocks[index].item_id, "output_index": index}

    def _start(self, index: int) -> list[bytes]:
        block = self.plan.blocks[index]
        item = _responses_item(self.plan, block, done=False)
        frames = [self._event("response.output_item.added", output_index=index, item=item)]
        where = self._where(index)
        if block.kind == "text":
            part = _output_text("")
            frames.append(
                self._event("response.content_part.added", **where, content_index=0, part=part)
            )
        elif block.kind == "thinking":
            part = _summary_text("")
            frames.append(
                self._event(
                    "response.reasoning_summary_part.added", **where, summary_index=0, part=part
                )
            )
        return frames

    def _stop(self, index: int) -> list[bytes]:
        block, where = self.plan.blocks[index], self._where(index)
        text = block.text
        if block.kind == "text":
            frames = [
                self._event(
                    "response.output_text.done", **where, content_index=0, text=text, logprobs=[]
                ),
                self._event(
                    "response.content_part.done", **where, content_index=0, part=_output_text(text)
                ),
            ]
        elif block.kind == "thinking":
            frames = [
                self._event(
                    "response.reasoning_summary_text.done", **where, summary_index=0, text=text
                ),
                self._event(
                    "response.reasoning_summary_part.done",
                    **where,
                    summary_index=0,
                    part=_summary_text(text),
                ),
            ]
        elif block.custom:
            frames = [self._event("response.custom_tool_call_input.done", **where, input=text)]
        else:
            frames = [
                self._event(
                    "response.function_call_arguments.done",
                    **where,
                    name=block.name,
                    arguments=text,
                )
            ]
        item = _responses_item(self.plan, block, done=True)
        frames.append(self._event("response.output_item.done", output_index=index, item=item))
        return frames

    def _advance(self, to: int) -> list[bytes]:
        frames = []
        while self.current < to:
            frames += self._stop(self.current)
            self.current += 1
            if self.current < len(self.plan.blocks):
                frames += self._start(self.current)
        return frames

    def opening(self) -> list[bytes]:
        response = _responses_object(
            self.reply_id,
            self.plan,
            self.payload,
            created=self.created,
            status="in_progress",
            output=[],
        )
        frames = [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]
        return frames + (self._start(0) if self.plan.blocks else [])

    def piece(self, block: int, text: str) -> list[bytes]:
        sent = self.plan.blocks[block]
        if sent.kind in self.DELTAS:
            kind = self.DELTAS[sent.kind]
        elif sent.custom:
            kind = "response.custom_tool_call_input.delta"
        else:
            kind = "response.function_call_arguments.delta"
        fields: dict[str, Any] = self._where(block)
        if sent.kind == "text":
            fields.update(content_index=0, delta=text, logprobs=[])
        elif sent.kind == "thinking":
            fields.update(summary_index=0, delta=text)
        else:
            fields["delta"] = text
        return [*self._advance(block), self._event(kind, **fields)]

    def closing(self) -> list[bytes]:
        frames = self._advance(len(self.plan.blocks))
        reply = _responses_reply(self.reply_id, self.plan, self.payload, self.created)
        kind = "response.incomplete" if self.plan.truncated else "response.completed"
        return [*frames, self._event(kind, response=reply)]

    def error(self, message: str) -> bytes:
        # What OpenAI sends when a stream fails after it started: an `error` event, its
        # error nested as on the wire (the SDK raises APIError on it), or `response.failed`.
        error = {"code": "rate_limit_exceeded", "message": message}
        if self.plan.error_event == "response.failed":
            response = _responses_object(
                self.reply_id,
                self.plan,
                self.payload,
                created=self.created,
                status="failed",
                output=[],
                error=error,
            )
            return self._event("response.failed", response=response)
        return self._event("error", error={"type": "tokens", **error, "param": None})
