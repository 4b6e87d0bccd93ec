"""The mock provider's ASGI application: ``MockProvider``, its control API and ``build_app``."""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from devtools.mock.anthropic import _anthropic_reply, _AnthropicFrames
from devtools.mock.base import (
    CONFIG_KEYS,
    DEFAULT_TEXT,
    JSON_TYPE,
    MAX_RECORDS,
    MODEL_LIST,
    SSE_HEADERS,
    Api,
    Receive,
    Scope,
    Send,
    _api_error,
    _disconnected,
    _encode,
    _json,
    _openai_error,
    _read_body,
)
from devtools.mock.config import Config, ConfigError, _count, _parse_fault, _seconds
from devtools.mock.inspection import (
    _check_responses_input,
    _check_thinking_kept,
    _cut_at_stop,
    _inspect,
    _inspect_responses,
)
from devtools.mock.openai import _openai_reply, _OpenAIFrames
from devtools.mock.plan import _Block, _Call, _Frames, _Plan, _Reject
from devtools.mock.responses import _item_prefix, _responses_reply, _ResponsesFrames
from devtools.mock.tokens import _parse_tool_calls, _word_pieces


class MockProvider:
    """The mock provider's state (configuration, records, call count) and its ASGI entry."""

    def __init__(self, *, chunks: int = 8, chunk_delay: float = 0.0, ttft: float = 0.0) -> None:
        self.config = Config(chunks=0, chunk_delay=0.0, ttft=0.0)
        self.configure({"chunks": chunks, "chunk_delay": chunk_delay, "ttft": ttft})
        self._defaults = copy.copy(self.config)
        # Signs the thinking blocks this process makes, so it can tell them when they return.
        self._secret = secrets.token_bytes(32)
        self.records: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDS)
        self.calls = 0

    def reset(self) -> None:
        self.records.clear()
        self.calls = 0
        self.config = copy.copy(self._defaults)

    def configure(self, changes: Mapping[str, Any]) -> None:
        """Merge `changes` into the configuration, all or nothing; ConfigError if invalid.

        Keys: ``chunks`` (int), ``chunk_delay`` and ``ttft`` (seconds), ``text`` (a list of
        pieces, or null for the default words) and ``faults``, a list that replaces the current
        one, of rules ``{"match": {"api_key"?, "model"?, "api"?}, "times": N | null,
        "action": {...}}`` with one of these actions:

        - ``{"type": "status", "status": S, "headers": {...}?, "body": {...}?}``: answer S with
          those headers and body (default: the API's own error shape for S);
        - ``{"type": "delay_headers", "seconds": S}``: wait S seconds, then answer normally;
        - ``{"type": "break_after", "chunks": K}``: stream K pieces, then drop the connection
          (a non-streamed call gets its headers and half its body first);
        - ``{"type": "drip", "interval": S, "max_seconds": T}``: after the headers, send an SSE
          comment every S seconds, never any content, and end the body after T seconds;
        - ``{"type": "echo_key"}``: a 400 error whose message contains the request's API key;
        - ``{"type": "echo_key_in_answer"}``: a normal 200 answer whose first piece quotes the
          request's API key (as a provider quoting it in an error-like text would);
        - ``{"type": "stream_error", "chunks": K, "event"?: "error" | "response.failed"}``: a
          stream of K pieces, then the API's own mid-stream error event quoting the request's
          API key, and the end of the body (Responses: an ``error`` event, its error nested as
          OpenAI sends it, or with ``"event": "response.failed"`` a failed response);
        - ``{"type": "usage", "usage": {...} | null}``: the reply (and a stream's usage
          event) reports this usage object instead of the true one, in the API's own field
          names (``prompt_tokens``... or ``input_tokens``...), or none at all for null;
        - ``{"type": "garbage_line", "chunks": K}``: a stream of K pieces, then a data line
          that is not JSON, then the rest of the stream as usual;
        - ``{"type": "body", "body": {...}}``: a 200 whose JSON body is this (an error sent
          as a 200, say), streamed or not;
        - ``{"type": "prefer_max_tokens"}``: an OpenAI call keeps to ``max_tokens`` even when
          ``max_completion_tokens`` is set (as some OpenAI-compatible servers do).

        Agent keys (the module docs say what each reply does with them):

        - ``tool_calls``: ``[{"name": str, "arguments": {...}}, ...]`` or null: the calls a
          request offering those tools gets, all in one turn;
        - ``tool_text``: a non-empty string or null: a text piece before the tool calls;
        - ``arguments_chunk`` (int, at least 1; default 8): characters of arguments JSON per
          streamed piece;
        - ``thinking``: a non-empty string or null: the reply's thinking / reasoning text;
        - ``cache``: ``{"read": R, "write": W}`` or null: the cache figures replies report.
        """
        unknown = set(changes) - CONFIG_KEYS
        if unknown:
            raise ConfigError(f"unknown config keys: {sorted(unknown)}")
        new = copy.copy(self.config)
        if "chunks" in changes:
            new.chunks = _count(changes, "chunks")
        if "chunk_delay" in changes:
            new.chunk_delay = _seconds(changes, "chunk_delay")
        if "ttft" in changes:
            new.ttft = _seconds(changes, "ttft")
        if "text" in changes:
            text = changes["text"]
            if text is not None and (
                not isinstance(text, list) or not text or not all(isinstance(t, str) for t in text)
            ):
                raise ConfigError("text must be null or a non-empty list of strings")
            new.text = None if text is None else list(text)
        if "faults" in changes:
            if not isinstance(changes["faults"], list):
                raise ConfigError("faults must be a list")
            new.faults = [_parse_fault(rule) for rule in changes["faults"]]
        if "tool_calls" in changes:
            new.tool_calls = _parse_tool_calls(changes["tool_calls"])
        for name in ("tool_text", "thinking"):
            if name in changes:
                value = changes[name]
                if value is not None and (not isinstance(value, str) or not value):
                    raise ConfigError(f"{name} must be null or a non-empty string")
                setattr(new, name, value)
        if "arguments_chunk" in changes:
            new.arguments_chunk = _count(changes, "arguments_chunk")
            if new.arguments_chunk < 1:
                raise ConfigError("arguments_chunk must be at least 1")
        if "cache" in changes:
            cache = changes["cache"]
            if cache is not None:
                if not isinstance(cache, dict) or set(cache) != {"read", "write"}:
                    raise ConfigError('cache must be null or {"read": N, "write": M}')
                cache = {"read": _count(cache, "read"), "write": _count(cache, "write")}
            new.cache = cache
        self.config = new

    def stats(self) -> dict[str, Any]:
        return {"calls": self.calls, "requests": list(self.records)}

    def _take_fault(self, api: Api, api_key: str, model: str) -> dict[str, Any] | None:
        for fault in self.config.faults:
            if fault.times != 0 and fault.fits(api, api_key, model):
                if fault.times is not None:
                    fault.times -= 1
                return fault.action
        return None

    # --- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        if body is None:
            return
        method, path = scope["method"], scope["path"]
        if method == "POST" and path == "/v1/chat/completions":
            await self._provider_call("openai", scope, body, receive, send)
        elif method == "POST" and path == "/v1/messages":
            await self._provider_call("anthropic", scope, body, receive, send)
        elif method == "POST" and path == "/v1/responses":
            await self._provider_call("responses", scope, body, receive, send)
        elif method == "POST" and path == "/v1/messages/count_tokens":
            await self._provider_call("anthropic", scope, body, receive, send)
        elif method == "GET" and path == "/v1/models":
            await _send_json(send, 200, MODEL_LIST)
        elif path.startswith("/_mock/"):
            await self._control(method, path, body, send)
        else:
            await _send_json(send, 404, _openai_error(f"Unknown route: {method} {path}"))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _control(self, method: str, path: str, body: bytes, send: Send) -> None:
        if method == "GET" and path == "/_mock/stats":
            await _send_json(send, 200, self.stats())
        elif method == "POST" and path == "/_mock/reset":
            self.reset()
            await _send_json(send, 200, self.config.as_json())
        elif method == "GET" and path == "/_mock/config":
            await _send_json(send, 200, self.config.as_json())
        elif method == "POST" and path == "/_mock/config":
            try:
                changes = json.loads(body or b"{}")
                if not isinstance(changes, dict):
                    raise ConfigError("the config must be a JSON object")
                self.configure(changes)
            except ValueError as exc:  # ConfigError and JSONDecodeError alike
                await _send_json(send, 400, {"error": str(exc)})
                return
            await _send_json(send, 200, self.config.as_json())
        else:
            await _send_json(send, 404, {"error": f"unknown control route: {method} {path}"})

    async def _provider_call(
        self, api: Api, scope: Scope, body: bytes, receive: Receive, send: Send
    ) -> None:
        self.calls += 1
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        prefix = {"openai": "chatcmpl-", "anthropic": "msg_", "responses": "resp_"}[api]
        record: dict[str, Any] = {
            "id": prefix + secrets.token_hex(12),
            "api": api,
            "path": scope["path"],
            "query": scope.get("query_string", b"").decode("latin-1"),
            "api_key": _api_key(api, headers),
            "model": None,
            "stream": False,
            "body": None,
            "headers": headers,
            "status": None,
            "started_at": time.time(),
            "first_chunk_at": None,
            "chunk_times": [],
            "chunks_sent": 0,
            "text_sent": "",
            "finished_at": None,
            "disconnected": False,
            "disconnected_at": None,
            "usage": None,
            "fault": None,
            "images": 0,
            "tool_results": None,
            "tool_calls": [],
            "thinking": None,
            "stop_sequence": None,
        }
        self.records.append(record)
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await self._serve(_Call(api, send, record, gone), body)
        finally:
            gone.cancel()
            record["finished_at"] = time.time()

    async def _serve(self, call: _Call, body: bytes) -> None:
        api, record = call.api, call.record
        api_key: str = record["api_key"]
        if not api_key:
            if api != "anthropic":
                message = (
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                )
                await call.error(401, message, code="invalid_api_key")
            else:
                await call.error(401, "x-api-key header is required")
            return
        if api == "anthropic" and not record["headers"].get("anthropic-version"):
            await call.error(400, "anthropic-version: header is required")
            return
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            await call.error(400, "We could not parse the JSON body of your request.")
            return
        record["body"] = payload
        record["stream"] = payload.get("stream") is True
        model = payload.get("model")
        record["model"] = model if isinstance(model, str) else None
        if record["path"] == "/v1/messages/count_tokens":
            await self._count_tokens(call, payload)
            return
        plan = await self._plan(call, payload)
        if plan is None:
            return
        record["usage"] = {"input_tokens": plan.prompt_tokens, "output_tokens": 0}
        if plan.cache_read is not None:
            record["usage"]["cache_read_tokens"] = plan.cache_read
            record["usage"]["cache_write_tokens"] = plan.cache_write

        action = self._take_fault(api, api_key, plan.model)
        record["fault"] = None if action is None else action["type"]
        if action is not None and await self._fault(call, plan, action):
            return
        record["tool_calls"] = [
            {"id": block.call_id, "name": block.name, "arguments": block.arguments}
            for block in plan.tools()
        ]
        thinking = [block.text for block in plan.blocks if block.kind == "thinking"]
        record["thinking"] = thinking[0] if thinking else None
        if thinking:
            record["usage"]["reasoning_tokens"] = 0
        record["stop_sequence"] = plan.stop_sequence
        if record["stream"]:
            await self._stream(call, plan, payload)
        else:
            await self._complete(call, plan)

    async def _count_tokens(self, call: _Call, payload: dict[str, Any]) -> None:
        """Anthropic's token counter: the prompt-token rule, on a request checked as
        ``/v1/messages`` checks it (but without ``max_tokens``)."""
        model, messages = payload.get("model"), payload.get("messages")
        for name, value, kind in (("model", model, str), ("messages", messages, list)):
            if not isinstance(value, kind):
                await call.error(400, f"{name}: Field required")
                return
        assert isinstance(messages, list)
        try:
            seen = _inspect("anthropic", payload, messages, self._secret)
        except _Reject as exc:
            await call.error(400, exc.message)
            return
        call.record["images"] = seen.images
        call.record["tool_results"] = seen.tool_results
        call.record["usage"] = {"input_tokens": seen.prompt_tokens, "output_tokens": 0}
        await call.json(200, {"input_tokens": seen.prompt_tokens})

    async def _fault(self, call: _Call, plan: _Plan, action: dict[str, Any]) -> bool:
        """Apply a fault action; True when it has answered the call itself."""
        kind = action["type"]
        if kind == "status":
            await self._status_fault(call, action)
        elif kind == "echo_key":
            call.record["usage"] = None
            await call.error(400, f"Incorrect API key provided: {call.record['api_key']}.")
        elif kind == "drip":
            await self._drip(call, action["interval"], action["max_seconds"])
        elif kind == "delay_headers":
            return await call.pause(action["seconds"])
        elif kind == "echo_key_in_answer":
            quote = f"Rate limit reached for key {call.record['api_key']}. "
            texts = [block for block in plan.blocks if block.kind == "text"]
            if texts:
                texts[0].pieces = [quote, *texts[0].pieces[1:]]
            else:
                plan.blocks.insert(0, _Block("text", [quote]))
            return False
        elif kind == "stream_error":
            plan.error_at = action["chunks"]
            plan.error_event = action.get("event", "error")
            plan.error_message = f"Rate limit reached for key {call.record['api_key']}."
            return False
        elif kind == "usage":
            plan.usage_override, plan.usage_replaced = action["usage"], True
            return False
        elif kind == "body":
            call.record["usage"] = None
            await call.json(200, action["body"])
        elif kind == "garbage_line":
            plan.garbage_at = action["chunks"]
            return False
        elif kind == "prefer_max_tokens":
            limit = call.record["body"].get("max_tokens")
            if call.api == "openai" and isinstance(limit, int) and not isinstance(limit, bool):
                plan.limit_to(limit)
            return False
        else:  # break_after: the normal reply, cut short
            plan.break_at = action["chunks"]
            return False
        return True

    async def _plan(self, call: _Call, payload: dict[str, Any]) -> _Plan | None:
        """Validate the call as the real API would, then fix its output; None if rejected."""
        model, messages = payload.get("model"), payload.get("messages")
        required: tuple[tuple[str, Any, type], ...] = (("model", model, str),)
        if call.api != "responses":  # a Responses request has `input`, checked below
            required += (("messages", messages, list),)
        for name, value, kind in required:
            if not isinstance(value, kind):
                if call.api != "anthropic":
                    message = f"Missing required parameter: '{name}'."
                    await call.error(400, message, param=name, code="missing_required_parameter")
                else:
                    await call.error(400, f"{name}: Field required")
                return None
        assert isinstance(model, str)
        if call.api == "responses":
            limit_name = "max_output_tokens"
        elif call.api == "openai":
            limit_name = "max_completion_tokens"
            if payload.get(limit_name) is None:
                limit_name = "max_tokens"
        else:
            limit_name = "max_tokens"
        limit = payload.get(limit_name)
        if limit is None and call.api == "anthropic":
            await call.error(400, "max_tokens: Field required")
            return None
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            message = f"Invalid '{limit_name}': expected an integer of at least 1."
            await call.error(400, message, param=limit_name, code="invalid_value")
            return None

        try:
            if call.api == "responses":
                _check_responses_input(payload)
                seen = _inspect_responses(payload, self._secret)
            else:
                assert isinstance(messages, list)
                seen = _inspect(call.api, payload, messages, self._secret)
                if call.api == "anthropic" and seen.thinking and self.config.thinking is not None:
                    _check_thinking_kept(messages)
        except _Reject as exc:
            await call.error(400, exc.message, param=exc.param, code=exc.code)
            return None
        call.record["images"] = seen.images
        call.record["tool_results"] = seen.tool_results

        config = self.config
        blocks: list[_Block] = []
        if config.thinking is not None and (call.api != "anthropic" or seen.thinking):
            blocks.append(_Block("thinking", _word_pieces(config.thinking)))
        mention = [f"I see {seen.images} image(s). "] if seen.images else []
        calls = [] if not seen.tools_allowed or seen.tool_results is not None else [
            tool for tool in config.tool_calls or [] if tool["name"] in seen.offered
        ]  # fmt: skip
        if seen.tool_results is not None:
            text = "Tool results: " + " | ".join(r["text"] for r in seen.tool_results)
            blocks.append(_Block("text", [*mention, *_word_pieces(text)]))
        elif calls:
            if config.tool_text is not None:
                blocks.append(_Block("text", [*mention, *_word_pieces(config.tool_text)]))
            id_prefix = "toolu_" if call.api == "anthropic" else "call_"
            size = config.arguments_chunk
            for tool in calls:
                # A Responses `custom` tool (Codex's apply_patch) takes free text: the
                # configured "input" string, else the arguments' JSON.
                custom = seen.offered[tool["name"]] == "custom"
                given = tool["arguments"].get("input")
                text = given if custom and isinstance(given, str) else _encode(tool["arguments"])
                pieces = [text[i : i + size] for i in range(0, len(text), size)]
                call_id = id_prefix + secrets.token_hex(12)
                block = _Block("tool_use", pieces, call_id, tool["name"], tool["arguments"])
                block.custom = custom
                blocks.append(block)
        else:
            words = config.text or DEFAULT_TEXT
            pieces = [words[i % len(words)] for i in range(config.chunks)]
            blocks.append(_Block("text", [*mention, *pieces]))
        plan = _Plan(
            model=model,
            full=blocks,
            prompt_tokens=seen.prompt_tokens,
            ttft=config.ttft,
            chunk_delay=config.chunk_delay,
            secret=self._secret,
            cut_at=_cut_at_stop(blocks, seen.stops),
        )
        if config.cache is not None:
            plan.cache_read = config.cache["read"]
            plan.cache_write = config.cache["write"] if call.api == "anthropic" else 0
        if call.api == "responses":
            plan.encrypt_reasoning = seen.encrypt_reasoning
            for block in blocks:
                block.item_id = _item_prefix(block) + secrets.token_hex(24)
        plan.limit_to(limit)
        return plan

    async def _status_fault(self, call: _Call, action: dict[str, Any]) -> None:
        status: int = action["status"]
        call.record["usage"] = None
        headers = [(str(k).encode(), str(v).encode()) for k, v in action.get("headers", {}).items()]
        body = action.get("body")
        await call.json(status, _api_error(call.api, status) if body is None else body, headers)

    async def _drip(self, call: _Call, interval: float, max_seconds: float) -> None:
        await call.start(200, SSE_HEADERS)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_seconds
        while (remaining := deadline - loop.time()) > 0:
            if await call.pause(min(interval, remaining)):
                return
            if loop.time() < deadline:
                await call.body(b": drip\n\n")
        await call.body(b"", more=False)

    async def _complete(self, call: _Call, plan: _Plan) -> None:
        """A non-streamed reply, sent once the whole generation time has passed."""
        count = len(plan.pieces)
        if await call.pause(plan.ttft + plan.chunk_delay * max(count - 1, 0)):
            return
        if call.api == "responses":
            payload = _responses_reply(call.record["id"], plan, call.record["body"])
        else:
            reply = _openai_reply if call.api == "openai" else _anthropic_reply
            payload = reply(call.record["id"], plan)
        if plan.break_at is not None:
            data = _json(payload)
            await call.start(200, [JSON_TYPE])
            await call.body(data[: len(data) // 2])
            await call.abort()
            return
        record = call.record
        record["first_chunk_at"] = time.time()
        record["chunks_sent"] = count
        record["text_sent"] = plan.text() or ""
        record["usage"]["output_tokens"] = count
        if "reasoning_tokens" in record["usage"]:
            record["usage"]["reasoning_tokens"] = plan.count("thinking")
        await call.json(200, payload)

    async def _stream(self, call: _Call, plan: _Plan, payload: dict[str, Any]) -> None:
        if call.api == "openai":
            options = payload.get("stream_options")
            usage = isinstance(options, dict) and options.get("include_usage") is True
            frames: _Frames = _OpenAIFrames(call.record["id"], plan, include_usage=usage)
        elif call.api == "responses":
            frames = _ResponsesFrames(call.record["id"], plan, payload)
        else:
            frames = _AnthropicFrames(call.record["id"], plan)
        await call.start(200, SSE_HEADERS)
        for frame in frames.opening():
            await call.body(frame)
        for index, (block, piece) in enumerate(plan.pieces):
            if index == plan.break_at:
                await call.abort()
                return
            if index == plan.error_at:
                await call.body(frames.error(plan.error_message), more=False)
                return
            if index == plan.garbage_at:
                await call.body(b"data: <html>upstream proxy error</html>\n\n")
            if await call.pause(plan.ttft if index == 0 else plan.chunk_delay):
                return
            await call.piece(frames.piece(block, piece), piece, plan.blocks[block].kind)
        if plan.break_at is not None:
            await call.abort()
            return
        *middle, last = frames.closing()
        for frame in middle:
            await call.body(frame)
        await call.body(last, more=False)


def _api_key(api: Api, headers: Mapping[str, str]) -> str:
    """The caller's key: a Bearer token, or for Anthropic preferably its x-api-key header."""
    if api == "anthropic" and headers.get("x-api-key"):
        return headers["x-api-key"]
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def _send_json(send: Send, status: int, payload: Any) -> None:
    data = _json(payload)
    headers = [JSON_TYPE, (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def build_app(*, chunks: int = 8, chunk_delay: float = 0.0, ttft: float = 0.0) -> MockProvider:
    """A fresh mock provider (an ASGI application) with these start-up defaults."""
    return MockProvider(chunks=chunks, chunk_delay=chunk_delay, ttft=ttft)
