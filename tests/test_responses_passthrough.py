"""OpenAI Responses clients on providers that speak Responses natively
(routing/codecs/responses_passthrough.py): the request and the answer go through as they are
but for the model name, the reserved limit and ``store``; the usage is read exactly; provider
failures raise. On recorded-shape fixtures (tests/fixtures/wire/responses/passthrough_*) and on
the mock provider's own output."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from core.errors import ProxyError
from devtools.mockprovider import build_app
from routing.codecs.responses_passthrough import ResponsesPassthrough, ResponsesPassthroughStream
from routing.codecs.responses_request import ResponsesRequest, parse_responses_request
from routing.context import Route
from routing.sse import SSEParser
from tests.support.routes import make_route

pytestmark = pytest.mark.core

WIRE = Path(__file__).parent / "fixtures" / "wire" / "responses"
UPSTREAM = "gpt-5-mini-2025-08-07"  # the model the fixtures' provider names
CODEC = ResponsesPassthrough()
EVENTS: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)


def wire(name: str) -> bytes:
    return (WIRE / name).read_bytes()


@pytest.fixture(scope="module")
def route() -> Route:
    return make_route("openai", base_url="https://api.openai.com/v1", upstream_model=UPSTREAM)


def request(**fields: Any) -> ResponsesRequest:
    body: dict[str, Any] = {"model": "auto", "input": "Say hello"}
    body.update(fields)
    return parse_responses_request(json.dumps(body).encode(), headers={}, max_messages=100)


def public(raw: bytes, upstream: str = UPSTREAM) -> bytes:
    """The provider's bytes as the tenant must see them: its own model name in their place."""
    return re.sub(rb'"model": ?"' + re.escape(upstream.encode()) + rb'"', b'"model":"auto"', raw)


def translate(translator: ResponsesPassthroughStream, raw: bytes, *, piece: int = 61) -> bytes:
    """What the client receives: the provider's bytes cut into network-sized pieces."""
    parser = SSEParser()
    out, seen = b"", b""
    for start in range(0, len(raw), piece):
        for event in parser.feed(raw[start : start + piece]):
            seen += event.raw
            out += translator.feed(event)
    assert seen == raw  # every event was complete, and fed
    return out


def failure(run: Any) -> ProxyError:
    with pytest.raises(ProxyError) as caught:
        run()
    return caught.value


# --- build ------------------------------------------------------------------------------------


def test_it_forwards_the_body_as_sent_but_for_model_limit_and_store(route: Route) -> None:
    tools = [{"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}}]
    call = request(
        instructions="Be brief.",
        max_output_tokens=9000,
        store=True,
        stream=True,
        tools=tools,
        include=["reasoning.encrypted_content"],
        prompt_cache_key="session-7",
        brand_new_field={"nested": [1, 2]},
    )
    sent = json.loads(json.dumps(call.body))

    upstream = CODEC.build(route=route, call=call, max_tokens=512)

    assert upstream.url == "https://api.openai.com/v1/responses"
    assert upstream.headers == {}
    assert upstream.payload == {
        **sent,
        "model": UPSTREAM,
        "max_output_tokens": 512,
        "store": False,
    }  # include: the client asked for encrypted reasoning already
    assert call.body == sent  # the client's body itself is left alone


def test_it_sets_the_reserved_limit_and_no_store_when_the_client_set_neither(
    route: Route,
) -> None:
    upstream = CODEC.build(route=route, call=request(), max_tokens=300)

    assert upstream.payload == {
        "model": UPSTREAM,
        "input": "Say hello",
        "max_output_tokens": 300,
        "store": False,
        # Unstored, a reasoning item goes back next turn only as its encrypted content.
        "include": ["reasoning.encrypted_content"],
    }


def test_it_asks_for_encrypted_reasoning_with_what_the_client_included(route: Route) -> None:
    asked = CODEC.build(
        route=route, call=request(include=["web_search_call.action.sources"]), max_tokens=300
    )
    already = CODEC.build(
        route=route, call=request(include=["reasoning.encrypted_content"]), max_tokens=300
    )

    assert asked.payload["include"] == [
        "web_search_call.action.sources",
        "reasoning.encrypted_content",
    ]
    assert already.payload["include"] == ["reasoning.encrypted_content"]


# --- completion -------------------------------------------------------------------------------


def test_it_returns_a_whole_response_as_sent_but_for_the_model(route: Route) -> None:
    raw = wire("passthrough_response.json")

    body, usage = CODEC.completion(route=route, call=request(), raw=raw)

    assert body == public(raw)
    assert Response.model_validate_json(body).model == "auto"
    assert (usage.input_tokens, usage.output_tokens) == (1840, 75)
    assert (usage.cache_read_tokens, usage.cache_write_tokens) == (1536, 0)
    assert usage.reasoning_tokens == 64
    assert usage.reported and not usage.invalid
    assert usage.output_estimate > 0


@pytest.mark.parametrize(
    "change",
    [
        {"input_tokens": 1.5},
        {"output_tokens": -1},
        {"input_tokens_details": {"cached_tokens": 5000}},  # more cached than sent
        {"output_tokens_details": {"reasoning_tokens": 76}},  # more reasoning than produced
        {"input_tokens": "1840"},
    ],
)
def test_it_marks_impossible_usage_invalid(route: Route, change: dict[str, Any]) -> None:
    obj = json.loads(wire("passthrough_response.json"))
    obj["usage"].update(change)

    _, usage = CODEC.completion(route=route, call=request(), raw=json.dumps(obj).encode())

    assert usage.invalid and not usage.reported
    assert usage.output_estimate > 0  # what is billed instead


def test_it_marks_a_response_without_usage_invalid(route: Route) -> None:
    obj = json.loads(wire("passthrough_response.json"))
    del obj["usage"]

    _, usage = CODEC.completion(route=route, call=request(), raw=json.dumps(obj).encode())

    assert usage.invalid


def test_it_fails_on_an_error_sent_with_a_200(route: Route) -> None:
    raw = b'{"error":{"message":"Upstream overloaded","type":"server_error","code":null}}'

    error = failure(lambda: CODEC.completion(route=route, call=request(), raw=raw))

    assert error.status == 502
    assert "Upstream overloaded" in str(error)


def test_it_fails_on_a_failed_response(route: Route) -> None:
    obj = json.loads(wire("passthrough_response.json"))
    obj.update(status="failed", output=[], error={"code": "server_error", "message": "Boom."})

    error = failure(
        lambda: CODEC.completion(route=route, call=request(), raw=json.dumps(obj).encode())
    )

    assert error.status == 502
    assert "Boom." in str(error)


def test_it_fails_on_a_malformed_body(route: Route) -> None:
    error = failure(lambda: CODEC.completion(route=route, call=request(), raw=b"<html>"))

    assert error.status == 502


# --- stream -----------------------------------------------------------------------------------


def test_it_passes_a_stream_on_byte_for_byte_but_for_the_model(route: Route) -> None:
    raw = wire("passthrough_stream.sse")
    translator = CODEC.stream(route=route, call=request(stream=True))

    out = translate(translator, raw)

    assert out == public(raw)
    assert b'"obfuscation"' in out  # fields the proxy does not know go through
    events = [EVENTS.validate_json(event.data or "") for event in SSEParser().feed(out)]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert translator.complete
    assert translator.content_deltas == 7
    usage = translator.usage
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens) == (1840, 75, 1536)
    assert usage.reasoning_tokens == 64 and usage.reported


def test_it_reads_the_usage_of_an_incomplete_stream(route: Route) -> None:
    raw = wire("passthrough_stream.sse").replace(b"response.completed", b"response.incomplete")
    translator = CODEC.stream(route=route, call=request(stream=True))

    out = translate(translator, raw)

    assert out == public(raw)
    assert translator.complete and translator.usage.output_tokens == 75


def test_it_is_not_complete_before_the_last_event(route: Route) -> None:
    raw = wire("passthrough_stream.sse")
    cut = raw[: raw.index(b"event: response.completed")]
    translator = CODEC.stream(route=route, call=request(stream=True))

    translate(translator, cut)

    assert not translator.complete and not translator.usage.reported
    assert translator.content_deltas == 7  # what is billed instead


def relayed_failure(translator: ResponsesPassthroughStream, raw: bytes) -> tuple[bytes, str]:
    """A stream ending in the provider's own failure event: what the client got before it,
    the proxy's own error event that ends it (numbered next), and the failure the pipeline
    bills and redacts (the provider's words never pass as they are: they may name its
    set-up)."""
    out = b""
    for event in SSEParser().feed(raw):
        try:
            out += translator.feed(event)
        except ProxyError as error:
            caught = error
            break
    else:
        raise AssertionError("the provider's failure event was passed on")
    assert not translator.complete
    assert caught.status == 502 and caught.code == "upstream_error"
    ending = translator.error_event(caught)
    assert ending is not None
    (last,) = SSEParser().feed(ending)
    sent = [json.loads(event.data or "")["sequence_number"] for event in SSEParser().feed(out)]
    assert json.loads(last.data or "")["sequence_number"] == len(sent)
    assert sent == list(range(len(sent)))
    return out, str(caught)


def test_it_ends_on_a_providers_error_event_with_its_own(route: Route) -> None:
    raw = wire("passthrough_stream_error.sse")
    translator = CODEC.stream(route=route, call=request(stream=True))

    out, error = relayed_failure(translator, raw)

    assert out == public(raw[: raw.index(b"event: error")])  # everything before it, as sent
    assert "The server had an error while processing your request" in error


def test_it_reads_an_error_event_as_the_api_reference_writes_it(route: Route) -> None:
    flat = {"type": "error", "code": "server_error", "message": "Flat.", "param": None,
            "sequence_number": 0}  # fmt: skip
    raw = b"event: error\ndata: " + json.dumps(flat).encode() + b"\n\n"
    translator = CODEC.stream(route=route, call=request(stream=True))

    out, error = relayed_failure(translator, raw)

    assert out == b"" and "Flat." in error


def test_it_replaces_a_malformed_error_event_numbering_after_what_was_sent(
    route: Route,
) -> None:
    raw = wire("passthrough_stream.sse")
    head = raw[: raw.index(b"event: response.output_item.added")]
    raw = head + b'event: error\ndata: {"type":"error","error":"boom"}\n\n'
    translator = CODEC.stream(route=route, call=request(stream=True))

    error = failure(lambda: translate(translator, raw))
    ending = translator.error_event(error)
    assert ending is not None

    sent = len(SSEParser().feed(head))
    (event,) = SSEParser().feed(ending)
    assert json.loads(event.data or "")["sequence_number"] == sent  # the bad one not counted
    assert error.status == 502 and error.code == "upstream_error"


def test_it_ends_on_a_failed_response_event_reading_its_usage(route: Route) -> None:
    raw = wire("passthrough_stream.sse")
    head = raw[: raw.index(b"event: response.output_item.added")]
    failed = {
        "type": "response.failed",
        "sequence_number": 2,
        "response": {"id": "resp_1", "model": UPSTREAM, "status": "failed",
                     "error": {"code": "server_error", "message": "Gave up."},
                     "usage": {"input_tokens": 12, "output_tokens": 3}},
    }  # fmt: skip
    tail = b"event: response.failed\ndata: " + json.dumps(failed).encode() + b"\n\n"
    translator = CODEC.stream(route=route, call=request(stream=True))

    out, error = relayed_failure(translator, head + tail)

    assert out == public(head)
    assert "Gave up." in error
    usage = translator.usage
    assert (usage.input_tokens, usage.output_tokens, usage.reported) == (12, 3, True)


def test_it_renames_the_model_in_an_event_written_some_other_way(route: Route) -> None:
    created = {"type": "response.created", "sequence_number": 0,
               "response": {"id": "r", "model" : UPSTREAM, "output": []}}  # fmt: skip
    raw = b"data: " + json.dumps(created, indent=1).encode().replace(b"\n", b"") + b"\n\n"
    translator = CODEC.stream(route=route, call=request(stream=True))

    (event,) = SSEParser().feed(translate(translator, raw))

    assert json.loads(event.data or "")["response"]["model"] == "auto"


# --- on the mock provider's own output --------------------------------------------------------


def _mock(body: dict[str, Any], **config: Any) -> bytes:
    """The mock provider's bytes for one Responses call, in process."""
    app = build_app(chunks=6)
    app.configure(config)

    async def call() -> bytes:
        transport = httpx.ASGITransport(app=cast(Any, app))
        async with httpx.AsyncClient(transport=transport, base_url="http://mock") as client:
            headers = {"authorization": "Bearer sk-test"}
            response = await client.post("/v1/responses", json=body, headers=headers)
            assert response.status_code == 200, response.text
            return response.content

    return asyncio.run(call())


TOOLS = [
    {"type": "function", "name": "get_weather", "parameters": {"type": "object"}},
    {"type": "custom", "name": "apply_patch"},
]
CONFIG: dict[str, Any] = {
    "thinking": "I will call both tools now.",
    "tool_calls": [
        {"name": "get_weather", "arguments": {"city": "Paris"}},
        {"name": "apply_patch", "arguments": {"input": "*** Begin Patch"}},
    ],
    "tool_text": "Checking.",
    "cache": {"read": 3, "write": 0},
}


@pytest.mark.parametrize("stream", [False, True])
def test_it_passes_the_mocks_answers_through_with_exact_usage(route: Route, stream: bool) -> None:
    body = {"model": UPSTREAM, "input": "Weather?", "tools": TOOLS, "stream": stream,
            "include": ["reasoning.encrypted_content"]}  # fmt: skip
    raw = _mock(body, **CONFIG)
    call = request(stream=stream, input="Weather?", tools=TOOLS)
    # Input: 3 + 1 (the input), 3 + 3 (two tools without descriptions). Output: thinking 6
    # words = 3 pieces, "Checking." 1, the arguments' 16 characters 2, the patch's 15 2.
    want = (10, 8, 3, 3)  # input, output, cached, reasoning

    if stream:
        translator = CODEC.stream(route=route, call=call)
        out = translate(translator, raw)
        usage = translator.usage
        assert translator.complete
        assert translator.content_deltas == 8
    else:
        out, usage = CODEC.completion(route=route, call=call, raw=raw)

    assert out == public(raw)
    assert b'"model":"auto"' in out and UPSTREAM.encode() not in out
    got = (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens)
    assert (*got, usage.reasoning_tokens) == want
    assert usage.reported and not usage.invalid


def test_it_ends_the_mocks_mid_stream_failures_with_its_own_event(route: Route) -> None:
    body = {"model": UPSTREAM, "input": "Hi", "stream": True}
    for event in ("error", "response.failed"):
        fault = {"type": "stream_error", "chunks": 2, "event": event}
        raw = _mock(body, faults=[{"action": fault}])
        translator = CODEC.stream(route=route, call=request(stream=True))

        out, error = relayed_failure(translator, raw)

        assert f"event: {event}".encode() not in out, event
        # The pipeline redacts this (the key, the provider's address...) before it is sent.
        assert "Rate limit reached for key sk-test" in error
