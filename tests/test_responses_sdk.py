"""The official `openai` SDK's Responses API (`POST /v1/responses`) through a live proxy, on
each of its three routes.

- **native**: an OpenAI-kind provider that serves Responses itself (``responses_api=True``):
  the request passes through;
- **chat**: alice's "auto", an OpenAI-compatible provider (Moonshot): translated to chat
  completions;
- **messages**: bob's "claude-sonnet-4-5", an Anthropic provider: translated to Messages.

Each runs plain text, a round trip of two tools called in one turn, an image input, JSON-schema
output and reasoning, whole (``responses.create`` / ``responses.parse``) and streamed (the
SDK's ``responses.stream`` helper and its accumulator, or raw ``stream=True`` events), and its
parsed objects are checked field by field, then the usage the client sees and the ledger row
of every call, by hand, against the mock provider's documented counts
(devtools/mockprovider.py). Then the refusals (over the cap, stored state), a provider failing
mid-stream, a stream the client cuts, unknown fields, the token limit, and reasoning items sent
back with tool outputs as the Agents SDK and Codex send them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import httpx
import openai
import pydantic
import pytest
from openai.types.responses import (
    Response,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseReasoningItem,
)

from routing.models import Provider
from routing.services import provider_create, provider_key_create, route_create
from tenants.models import Tenant
from tenants.services import tenant_create, tier_create
from tests.conftest import LiveProxy, World, eventually, ledger_rows, unique
from tests.support.mockserver import MockServer
from usage.models import UsageRecord

pytestmark = pytest.mark.core

Name = Literal["native", "chat", "messages"]
Mode = Literal["whole", "stream"]
MODES: tuple[Mode, ...] = ("whole", "stream")
WIRE_FORMAT = "openai-responses"

PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)  # fmt: skip
PNG_DATA_URL = f"data:image/png;base64,{PNG_B64}"
INSTRUCTIONS = "Be brief."
QUESTION = "Say hello in three words"
# (3 + 2 words of INSTRUCTIONS) + (3 + 5 words of QUESTION), whichever format carries them.
QUESTION_PROMPT_TOKENS = 13
DEFAULT_REPLY = "Hello from the mock provider. Every piece"  # the mock's 8 default pieces
CACHE = {"read": 3, "write": 2}
THINKING = "Let me think about this one step at a time"  # 10 words: 5 pieces of two
THINKING_PIECES = 5

TOOL_SPECS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "get_weather",
        "The current weather in a city.",
        {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    ),
    (
        "get_time",
        "The local time in a time zone.",
        {
            "type": "object",
            "properties": {"tz": {"type": "string"}},
            "required": ["tz"],
            "additionalProperties": False,
        },
    ),
]
TOOLS: list[Any] = [
    {"type": "function", "name": n, "description": d, "parameters": p, "strict": True}
    for n, d, p in TOOL_SPECS
]
MOCK_TOOL_CALLS = [
    {"name": "get_weather", "arguments": {"city": "Paris"}},
    {"name": "get_time", "arguments": {"tz": "Europe/Paris"}},
]
TOOL_RESULTS = {"get_weather": "18C and sunny", "get_time": "14:05"}
FINAL_TOOL_TEXT = "Tool results: 18C and sunny | 14:05"
TOOL_QUESTION = "What is the weather and the time in Paris?"


class Weather(pydantic.BaseModel):
    city: str
    celsius: int
    sunny: bool


WEATHER = {"city": "Paris", "celsius": 18, "sunny": True}
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "celsius": {"type": "integer"},
        "sunny": {"type": "boolean"},
    },
    "required": ["city", "celsius", "sunny"],
    "additionalProperties": False,
}
# The JSON document as the mock's text pieces (one token each).
WEATHER_PIECES = ['{"city":', '"Paris",', '"celsius":', "18,", '"sunny":', "true}"]


@dataclass(frozen=True)
class RouteCase:
    name: Name

    @property
    def model(self) -> str:
        return {"native": "gpt-5", "chat": "auto", "messages": "claude-sonnet-4-5"}[self.name]

    @property
    def upstream(self) -> str:
        """The model name the route sends its provider."""
        return {
            "native": "gpt-5-2025-08-07",
            "chat": "kimi-k2",
            "messages": "claude-sonnet-4-5-20250929",
        }[self.name]

    @property
    def api(self) -> str:
        """What the mock records as the API it was called with."""
        return {"native": "responses", "chat": "openai", "messages": "anthropic"}[self.name]

    @property
    def prices(self) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        """Input, output, cache read, cache write per Mtok: the routes' prices (no cache write
        price on the OpenAI-kind ones: such writes bill as input, and none are reported)."""
        if self.name == "native":
            return NATIVE_PRICES
        if self.name == "chat":
            return Decimal("0.60"), Decimal("2.50"), Decimal("0.15"), Decimal("0.60")
        return Decimal("3"), Decimal("15"), Decimal("0.30"), Decimal("3.75")

    def cache_write(self) -> int:
        # Only Anthropic reports cache writes; OpenAI's APIs report reads.
        return CACHE["write"] if self.name == "messages" else 0

    def reasoning(self, record: dict[str, Any]) -> int:
        """The reasoning tokens the provider reports: OpenAI's APIs count them apart;
        Anthropic counts thinking only within output_tokens."""
        if self.name == "messages":
            return 0
        count: int = record["usage"].get("reasoning_tokens", 0)
        return count

    def __str__(self) -> str:
        return self.name


NATIVE_PRICES = (Decimal("1.25"), Decimal("10"), Decimal("0.125"), Decimal("1.25"))
ROUTES = [RouteCase("native"), RouteCase("chat"), RouteCase("messages")]


@dataclass
class Routes:
    tenants: dict[Name, Tenant]
    clients: dict[Name, openai.OpenAI]
    tokens: dict[Name, str]
    native: Provider  # the provider speaking Responses natively


@pytest.fixture
def routes(proxy: LiveProxy, world: World, mock: MockServer) -> Iterator[Routes]:
    """alice (chat), bob (messages), and carol on a provider speaking Responses natively."""
    provider = provider_create(
        slug=unique("openai"), kind="openai", base_url=mock.openai_base_url, responses_api=True
    )
    provider_key_create(provider=provider, label="pool-1", secret=f"sk-proj-{unique('key')}")
    tier = tier_create(slug=unique("native"), name="Native", requests_per_minute=10_000)
    price_in, price_out, price_read, _ = NATIVE_PRICES
    route_create(
        tier=tier,
        model="gpt-5",
        provider=provider,
        upstream_model=RouteCase("native").upstream,
        input_usd_per_mtok=price_in,
        output_usd_per_mtok=price_out,
        cache_read_usd_per_mtok=price_read,
    )
    carol = tenant_create(slug=unique("carol"), name="Carol", tier=tier)
    tenants: dict[Name, Tenant] = {"native": carol, "chat": world.alice, "messages": world.bob}
    tokens = {name: world.token(tenant) for name, tenant in tenants.items()}
    clients = {
        name: openai.OpenAI(base_url=proxy.openai_base_url, api_key=token, max_retries=0)
        for name, token in tokens.items()
    }
    yield Routes(tenants=tenants, clients=clients, tokens=tokens, native=provider)
    for client in clients.values():
        client.close()


@pytest.fixture
def cached(mock: MockServer) -> MockServer:
    mock.configure(cache=CACHE)
    return mock


# --- the stream, as a strict client checks it ---------------------------------------------

# Event types with an item (output_index and item_id), and those with only an output_index.
_ITEM_EVENTS = (
    "response.content_part.",
    "response.output_text.",
    "response.function_call_arguments.",
    "response.reasoning_summary_",
    "response.reasoning_text.",
    "response.refusal.",
    "response.custom_tool_call_input.",
)
# Those of them with a content_index too.
_CONTENT_EVENTS = ("response.content_part.", "response.output_text.", "response.refusal.")


SDK_ADDED = frozenset({"parsed", "parsed_arguments"})


def plain(value: Any) -> Any:
    """A model_dump() without the SDK's own additions (ParsedResponse*: ``parsed``,
    ``parsed_arguments``), which are not on the wire."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if k not in SDK_ADDED}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def check_events(events: list[Any]) -> Any:
    """The invariants of a Responses stream; its ``response.completed`` event."""
    assert events, "an empty stream"
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds
    assert kinds[-1] == "response.completed", kinds
    assert kinds.count("response.completed") == 1
    numbers = [event.sequence_number for event in events]
    assert all(isinstance(n, int) for n in numbers)
    assert numbers == sorted(set(numbers)), numbers  # strictly increasing
    added: dict[int, str] = {}  # output_index -> item id
    done: dict[int, Any] = {}
    texts: dict[str, str] = {}
    arguments: dict[str, str] = {}
    for event in events:
        kind = event.type
        if kind == "response.output_item.added":
            assert event.output_index not in added
            assert event.item.id
            added[event.output_index] = event.item.id
        elif kind == "response.output_item.done":
            assert added.get(event.output_index) == event.item.id
            done[event.output_index] = event.item
        elif kind.startswith(_ITEM_EVENTS):
            # Its item was announced first, under this index and id.
            assert added.get(event.output_index) == event.item_id, (kind, event)
            assert event.output_index not in done, kind
            if kind.startswith(_CONTENT_EVENTS):
                assert isinstance(event.content_index, int), kind
            if kind == "response.output_text.delta":
                texts[event.item_id] = texts.get(event.item_id, "") + event.delta
            elif kind == "response.function_call_arguments.delta":
                arguments[event.item_id] = arguments.get(event.item_id, "") + event.delta
            elif kind == "response.output_text.done":
                assert event.text == texts.get(event.item_id, "")
            elif kind == "response.function_call_arguments.done":
                assert event.arguments == arguments.get(event.item_id, "")
                assert event.name  # the issue: done carries name and arguments
    assert sorted(added) == list(range(len(added)))
    assert sorted(done) == sorted(added)
    completed = events[-1].response
    assert completed.status == "completed"
    assert completed.usage is not None
    # The whole output, item by item as output_item.done gave it (LiteLLM #32724).
    assert plain([item.model_dump() for item in completed.output]) == plain(
        [done[index].model_dump() for index in sorted(done)]
    )
    for item in completed.output:
        if isinstance(item, ResponseOutputMessage):
            text = "".join(c.text for c in item.content if c.type == "output_text")
            assert text == texts.get(item.id, "")
        elif isinstance(item, ResponseFunctionToolCall):
            assert item.id is not None and item.arguments == arguments.get(item.id, "")
    return events[-1]


def ask(
    client: openai.OpenAI, *, mode: Mode, text_format: type[pydantic.BaseModel] | None = None,
    **kwargs: Any,
) -> Response:  # fmt: skip
    """One call, whole or through the SDK's stream helper (its events checked)."""
    if mode == "whole":
        if text_format is not None:
            parsed: Response = client.responses.parse(text_format=text_format, **kwargs)
            return parsed
        created: Response = client.responses.create(**kwargs)
        return created
    if text_format is not None:
        kwargs["text_format"] = text_format
    with client.responses.stream(**kwargs) as stream:
        events = list(stream)
        final = stream.get_final_response()
    completed = check_events(events)
    assert plain([item.model_dump() for item in final.output]) == plain(
        [item.model_dump() for item in completed.response.output]
    )
    assert final.usage == completed.response.usage
    return final


# --- what the mock reported, and what each side must show of it ---------------------------


def prompt_total(record: dict[str, Any]) -> int:
    total: int = record["usage"]["input_tokens"]
    return total


def output_count(record: dict[str, Any]) -> int:
    count: int = record["usage"]["output_tokens"]
    return count


def check_usage(route: RouteCase, response: Response, record: dict[str, Any]) -> None:
    usage = response.usage
    assert usage is not None
    total, output = prompt_total(record), output_count(record)
    # Responses' input_tokens counts every prompt token, the cached ones among them.
    assert usage.input_tokens == total
    assert usage.input_tokens_details.cached_tokens == CACHE["read"]
    assert usage.input_tokens_details.cache_write_tokens == route.cache_write()
    assert usage.output_tokens == output
    assert usage.output_tokens_details.reasoning_tokens == route.reasoning(record)
    assert usage.total_tokens == total + output


def check_ledger(
    route: RouteCase, routes: Routes, records: list[dict[str, Any]], *, stream: bool
) -> None:
    rows = ledger_rows(routes.tenants[route.name], len(records))
    for row, record in zip(rows, records, strict=True):
        total, output = prompt_total(record), output_count(record)
        assert row.status == UsageRecord.Status.OK
        assert row.http_status == 200
        assert row.stream is stream
        assert row.model == route.model
        assert row.wire_format == WIRE_FORMAT
        assert (row.input_tokens, row.output_tokens) == (total, output)
        assert row.cache_read_tokens == CACHE["read"]
        assert row.cache_write_tokens == route.cache_write()
        assert row.reasoning_tokens == route.reasoning(record)
        assert row.usage_reported and not row.usage_invalid
        # By hand, each kind of prompt token at its own price.
        price_in, price_out, price_read, price_write = route.prices
        read, write = CACHE["read"], route.cache_write()
        cost = (
            (total - read - write) * price_in
            + read * price_read
            + write * price_write
            + output * price_out
        ) / Decimal(1_000_000)
        assert row.cost_usd == cost.quantize(Decimal("1e-9"))


def function_calls(items: list[Any]) -> list[ResponseFunctionToolCall]:
    """The function calls among output items (the only other kind here: messages)."""
    calls = [item for item in items if isinstance(item, ResponseFunctionToolCall)]
    assert all(item.type in ("function_call", "message") for item in items)
    return calls


def only_text(response: Response) -> str:
    messages = [item for item in response.output if item.type == "message"]
    assert len(messages) == 1
    assert messages[0].role == "assistant" and messages[0].status == "completed"
    return response.output_text


# --- (a) plain text ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_it_answers_plain_text(
    routes: Routes, cached: MockServer, route: RouteCase, mode: Mode
) -> None:
    response = ask(
        routes.clients[route.name],
        mode=mode,
        model=route.model,
        instructions=INSTRUCTIONS,
        input=QUESTION,
    )
    [record] = cached.requests()
    assert record["api"] == route.api
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.model == route.model  # the tenant's name, never the upstream's
    assert response.status == "completed"
    assert only_text(response) == record["text_sent"] == DEFAULT_REPLY
    body = record["body"]
    assert body["model"] == route.upstream
    if route.api == "responses":
        # As sent but for the model and store (the proxy keeps nothing, nor may the provider).
        assert (body["instructions"], body["input"], body["store"]) == (
            INSTRUCTIONS,
            QUESTION,
            False,
        )
    elif route.api == "openai":
        assert body["messages"] == [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": QUESTION},
        ]
    else:
        assert body["system"] == INSTRUCTIONS
        [message] = body["messages"]
        assert message["role"] == "user"
        assert message["content"] in (QUESTION, [{"type": "text", "text": QUESTION}])
    assert prompt_total(record) == QUESTION_PROMPT_TOKENS
    assert output_count(record) == 8
    check_usage(route, response, record)
    check_ledger(route, routes, [record], stream=mode == "stream")


# --- (b) two tools in one turn, and the answer after their results -----------------------


def sent_tools(route: RouteCase, record: dict[str, Any]) -> list[tuple[str, Any]]:
    """The tools the provider was offered, (name, parameters), in its own format."""
    offered = record["body"]["tools"]
    if route.api == "responses":
        return [(t["name"], t["parameters"]) for t in offered]
    if route.api == "openai":
        return [(t["function"]["name"], t["function"]["parameters"]) for t in offered]
    return [(t["name"], t["input_schema"]) for t in offered]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_it_round_trips_two_tools_called_in_one_turn(
    routes: Routes, cached: MockServer, route: RouteCase, mode: Mode
) -> None:
    cached.configure(tool_calls=MOCK_TOOL_CALLS)
    client = routes.clients[route.name]
    question: list[Any] = [{"role": "user", "content": TOOL_QUESTION}]
    first = ask(
        client, mode=mode, model=route.model, instructions=INSTRUCTIONS, input=question,
        tools=TOOLS,
    )  # fmt: skip
    calls = function_calls(first.output)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        (call["name"], call["arguments"]) for call in MOCK_TOOL_CALLS
    ]
    assert all(isinstance(c, ResponseFunctionToolCall) and c.status == "completed" for c in calls)
    [call_record] = cached.requests()
    # The call ids are the provider's own, not ones the proxy made up along the way.
    assert [c.call_id for c in calls] == [call["id"] for call in call_record["tool_calls"]]
    assert len({c.call_id for c in calls}) == 2
    assert first.output_text == ""
    assert sent_tools(route, call_record) == [(n, p) for n, _, p in TOOL_SPECS]

    # As the SDK docs show: the model's function_call items, then an output for each.
    followup = [
        *question,
        *[c.model_dump(exclude_none=True) for c in calls],
        *[
            {"type": "function_call_output", "call_id": c.call_id, "output": TOOL_RESULTS[c.name]}
            for c in calls
        ],
    ]
    second = ask(
        client, mode=mode, model=route.model, instructions=INSTRUCTIONS, input=followup,
        tools=TOOLS,
    )  # fmt: skip
    records = cached.requests()
    assert len(records) == 2
    result_record = records[1]
    # Both results reached the provider, each under the id of the call it answers.
    assert [(r["tool_use_id"], r["text"]) for r in result_record["tool_results"]] == [
        (c.call_id, TOOL_RESULTS[c.name]) for c in calls
    ]
    assert only_text(second) == FINAL_TOOL_TEXT
    assert [item.type for item in second.output] == ["message"]
    check_usage(route, first, call_record)
    check_usage(route, second, result_record)
    check_ledger(route, routes, records, stream=mode == "stream")


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_it_streams_the_raw_events_of_two_tool_calls(
    routes: Routes, cached: MockServer, route: RouteCase
) -> None:
    """The events themselves (``stream=True``, no accumulator): each call its own item, its
    id and name first, its arguments in pieces, then the completed response with them all."""
    cached.configure(tool_calls=MOCK_TOOL_CALLS)
    stream = routes.clients[route.name].responses.create(
        model=route.model, input=TOOL_QUESTION, tools=TOOLS, stream=True
    )
    events = list(stream)
    completed = check_events(events)
    [record] = cached.requests()
    added = function_calls([e.item for e in events if e.type == "response.output_item.added"])
    assert len(added) == len(record["tool_calls"])
    assert [(item.type, item.name, item.call_id) for item in added] == [
        ("function_call", call["name"], call["id"]) for call in record["tool_calls"]
    ]
    assert all(item.arguments == "" for item in added)
    pieces: dict[str, int] = {}
    for event in events:
        if event.type == "response.function_call_arguments.delta":
            pieces[event.item_id] = pieces.get(event.item_id, 0) + 1
    # The mock streams arguments in several pieces; they reach the client as pieces too.
    assert len(pieces) == 2 and all(count > 1 for count in pieces.values())
    finals = function_calls(completed.response.output)
    assert [(c.name, json.loads(c.arguments)) for c in finals] == [
        (call["name"], call["arguments"]) for call in MOCK_TOOL_CALLS
    ]
    check_usage(route, completed.response, record)
    check_ledger(route, routes, [record], stream=True)


# --- (c) an image ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_it_carries_an_image_in_the_providers_own_format(
    routes: Routes, cached: MockServer, route: RouteCase, mode: Mode
) -> None:
    content = [
        {"type": "input_text", "text": "What is in this picture?"},
        {"type": "input_image", "image_url": PNG_DATA_URL, "detail": "auto"},
    ]
    response = ask(
        routes.clients[route.name],
        mode=mode,
        model=route.model,
        input=[{"role": "user", "content": content}],
    )
    [record] = cached.requests()
    assert record["images"] == 1
    assert only_text(response).startswith("I see 1 image(s). ")
    assert response.output_text == record["text_sent"]
    body = record["body"]
    if route.api == "responses":
        assert body["input"] == [{"role": "user", "content": content}]
    else:
        parts = body["messages"][-1]["content"]
        if route.api == "openai":
            images = [part for part in parts if part["type"] == "image_url"]
            assert [part["image_url"]["url"] for part in images] == [PNG_DATA_URL]
        else:
            images = [part for part in parts if part["type"] == "image"]
            source = {"type": "base64", "media_type": "image/png", "data": PNG_B64}
            assert images == [{"type": "image", "source": source}]
    check_usage(route, response, record)
    check_ledger(route, routes, [record], stream=mode == "stream")


# --- (d) JSON-schema output --------------------------------------------------------------


def untitled(schema: Any) -> Any:
    """A schema without pydantic's ``title`` annotations (the SDK sends them; none matter)."""
    if isinstance(schema, dict):
        return {k: untitled(v) for k, v in schema.items() if k != "title"}
    return schema


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_it_answers_in_a_json_schema(
    routes: Routes, cached: MockServer, route: RouteCase, mode: Mode
) -> None:
    """Through ``responses.parse`` / ``stream(text_format=...)``: the SDK sends the schema as
    ``text.format`` and parses the answer's text into the model."""
    if route.api == "anthropic":
        # Anthropic has no response format: the route forces a tool named after the schema,
        # whose input comes back as the answer's text.
        cached.configure(tool_calls=[{"name": "Weather", "arguments": WEATHER}])
    else:
        cached.configure(text=WEATHER_PIECES, chunks=len(WEATHER_PIECES))
    response = ask(
        routes.clients[route.name],
        mode=mode,
        text_format=Weather,
        model=route.model,
        input="What is the weather in Paris?",
    )
    [record] = cached.requests()
    assert json.loads(only_text(response)) == WEATHER
    parsed = getattr(response, "output_parsed", None)
    assert isinstance(parsed, Weather) and parsed.model_dump() == WEATHER
    assert response.text is not None and response.text.format is not None
    assert response.text.format.type == "json_schema"
    body = record["body"]
    if route.api == "responses":
        fmt = body["text"]["format"]
        assert (fmt["type"], fmt["name"], fmt["strict"]) == ("json_schema", "Weather", True)
        assert untitled(fmt["schema"]) == WEATHER_SCHEMA
    elif route.api == "openai":
        fmt = body["response_format"]
        assert fmt["type"] == "json_schema"
        assert fmt["json_schema"]["name"] == "Weather"
        assert untitled(fmt["json_schema"]["schema"]) == WEATHER_SCHEMA
    else:
        [tool] = body["tools"]
        assert tool["name"] == "Weather"
        assert untitled(tool["input_schema"]) == WEATHER_SCHEMA
        assert body["tool_choice"]["type"] == "tool"
    check_usage(route, response, record)
    check_ledger(route, routes, [record], stream=mode == "stream")


def test_it_sends_the_strict_json_schema_format_as_given(
    routes: Routes, cached: MockServer
) -> None:
    """A client writing ``text.format`` itself (not through ``parse``)."""
    cached.configure(text=WEATHER_PIECES, chunks=len(WEATHER_PIECES))
    fmt = {"type": "json_schema", "name": "weather", "schema": WEATHER_SCHEMA, "strict": True}
    response = routes.clients["native"].responses.create(
        model="gpt-5", input="Weather in Paris?", text={"format": fmt}
    )  # type: ignore[call-overload]
    assert json.loads(response.output_text) == WEATHER
    assert cached.requests()[-1]["body"]["text"] == {"format": fmt}
    response = routes.clients["chat"].responses.create(
        model="auto", input="Weather in Paris?", text={"format": fmt}
    )  # type: ignore[call-overload]
    assert json.loads(response.output_text) == WEATHER
    sent = cached.requests()[-1]["body"]["response_format"]
    assert sent == {
        "type": "json_schema",
        "json_schema": {"name": "weather", "schema": WEATHER_SCHEMA, "strict": True},
    }


# --- reasoning ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_it_reports_reasoning_and_its_tokens(
    routes: Routes, cached: MockServer, route: RouteCase, mode: Mode
) -> None:
    cached.configure(thinking=THINKING)
    response = ask(
        routes.clients[route.name],
        mode=mode,
        model=route.model,
        input=QUESTION,
        reasoning={"effort": "low", "summary": "auto"},
        max_output_tokens=4096,
    )
    [record] = cached.requests()
    assert record["thinking"] == THINKING
    [reasoning] = [item for item in response.output if item.type == "reasoning"]
    assert isinstance(reasoning, ResponseReasoningItem)
    assert [s.text for s in reasoning.summary] == [THINKING]
    assert response.output[0].type == "reasoning"
    assert response.output_text == DEFAULT_REPLY
    assert output_count(record) == 8 + THINKING_PIECES
    if route.api != "anthropic":
        assert record["usage"]["reasoning_tokens"] == THINKING_PIECES
    check_usage(route, response, record)
    check_ledger(route, routes, [record], stream=mode == "stream")


# --- refusals in OpenAI's shape, before anything reaches the provider --------------------


def post_responses(proxy: LiveProxy, token: str | None, body: dict[str, Any]) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.post(f"{proxy.openai_base_url}/responses", json=body, headers=headers, timeout=10)


def openai_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert {"message", "type", "code", "param"} <= set(error)
    assert isinstance(error["message"], str) and error["message"]
    return error


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_it_refuses_a_request_over_the_weekly_cap_in_openais_shape(
    proxy: LiveProxy, routes: Routes, world: World, mock: MockServer, route: RouteCase
) -> None:
    # The route the case's tenant has, on a tier capped below any reservation.
    tier = tier_create(
        slug=unique("capped"), name="Capped", requests_per_minute=10_000, weekly_token_cap=10
    )
    provider = {"native": routes.native, "chat": world.moonshot, "messages": world.anthropic}[
        route.name
    ]
    route_create(
        tier=tier,
        model=route.model,
        provider=provider,
        upstream_model="up-model",
        input_usd_per_mtok=Decimal("1"),
        output_usd_per_mtok=Decimal("2"),
    )
    tenant = tenant_create(slug=unique("capped"), name="Capped", tier=tier)
    token = world.token(tenant)
    body = {"model": route.model, "input": QUESTION}
    error = openai_error(post_responses(proxy, token, body), 429)
    assert error["code"] == "insufficient_quota"
    client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=token, max_retries=0)
    with client, pytest.raises(openai.RateLimitError) as refused:
        client.responses.create(model=route.model, input=QUESTION, stream=True)
    assert refused.value.code == "insufficient_quota"
    assert mock.calls() == 0


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_it_refuses_a_previous_response_id_it_cannot_hold(
    proxy: LiveProxy, routes: Routes, mock: MockServer, route: RouteCase
) -> None:
    body = {"model": route.model, "input": QUESTION, "previous_response_id": "resp_abc123"}
    error = openai_error(post_responses(proxy, routes.tokens[route.name], body), 400)
    assert error["code"] == "previous_response_not_found"
    assert error["param"] == "previous_response_id"
    with pytest.raises(openai.BadRequestError) as refused:
        routes.clients[route.name].responses.create(
            model=route.model, input=QUESTION, previous_response_id="resp_abc123"
        )
    assert refused.value.code == "previous_response_not_found"
    assert mock.calls() == 0


def test_it_answers_a_stored_response_lookup_with_404_after_auth(
    proxy: LiveProxy, routes: Routes, mock: MockServer
) -> None:
    url = f"{proxy.openai_base_url}/responses/resp_abc123"
    # Without a token: refused as any endpoint refuses it, saying nothing of the id.
    anonymous = openai_error(httpx.get(url, timeout=10), 401)
    assert anonymous["code"] != "response_not_found" and "resp_abc123" not in anonymous["message"]
    with pytest.raises(openai.NotFoundError) as missing:
        routes.clients["native"].responses.retrieve("resp_abc123")
    assert missing.value.status_code == 404
    assert missing.value.code == "response_not_found"
    error = openai_error(missing.value.response, 404)
    assert "resp_abc123" in error["message"]
    stranger = openai.OpenAI(base_url=proxy.openai_base_url, api_key="not-a-token", max_retries=0)
    with stranger, pytest.raises(openai.AuthenticationError):
        stranger.responses.retrieve("resp_abc123")
    assert mock.calls() == 0


# --- a provider failing mid-stream -------------------------------------------------------

Fault = dict[str, Any]
FAULTS: list[tuple[Name, Fault, str]] = [
    ("native", {"type": "stream_error", "chunks": 2, "event": "error"}, "error"),
    ("native", {"type": "stream_error", "chunks": 2, "event": "response.failed"}, "error"),
    ("native", {"type": "break_after", "chunks": 2}, "error"),
    ("chat", {"type": "stream_error", "chunks": 2}, "response.failed"),
    ("chat", {"type": "break_after", "chunks": 2}, "response.failed"),
    ("messages", {"type": "stream_error", "chunks": 2}, "response.failed"),
    ("messages", {"type": "break_after", "chunks": 2}, "response.failed"),
]


@pytest.mark.parametrize(
    ("name", "fault", "last"),
    FAULTS,
    ids=[f"{n}-{f['type']}-{f.get('event', '')}".rstrip("-") for n, f, _ in FAULTS],
)
def test_it_ends_a_stream_the_provider_broke_with_a_failure_event(
    routes: Routes, mock: MockServer, name: Name, fault: Fault, last: str
) -> None:
    mock.configure(faults=[{"action": fault}])
    route = RouteCase(name)
    events: list[Any] = []
    raised: openai.APIError | None = None
    stream = routes.clients[name].responses.create(model=route.model, input=QUESTION, stream=True)
    try:
        for event in stream:
            events.append(event)
    except openai.APIError as error:  # the SDK raises on an `error` event with a nested error
        raised = error
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds
    assert "response.completed" not in kinds
    assert sum(kind == "response.output_text.delta" for kind in kinds) == 2
    numbers = [event.sequence_number for event in events]
    assert numbers == sorted(set(numbers))
    if raised is None:
        # Never a silent close: the last event says the response failed.
        assert kinds[-1] == last, kinds
        if last == "response.failed":
            failed = events[-1].response
            assert failed.status == "failed" and failed.error is not None
        else:
            assert events[-1].message
    else:
        assert last == "error", f"raised {raised!r} where {last} was due"
    # The provider's own words (they quote its key) never reach the tenant.
    for secret in (m["api_key"] for m in mock.requests()):
        assert all(secret not in json.dumps(e.model_dump()) for e in events)
        assert raised is None or secret not in str(raised)

    def settled() -> UsageRecord:
        [row] = ledger_rows(routes.tenants[name], 1)
        return row

    row = eventually(settled)
    assert row.status == UsageRecord.Status.UPSTREAM_ERROR
    assert row.wire_format == WIRE_FORMAT and row.stream


# --- a stream the client cuts ------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_it_bills_a_stream_the_client_closed_after_the_first_delta(
    routes: Routes, mock: MockServer, route: RouteCase
) -> None:
    # Slow enough pieces that the client leaves long before the end (no sleep here: the mock
    # waits, and notices the client has gone).
    mock.configure(chunks=40, chunk_delay=0.1)
    client = routes.clients[route.name]
    with client.responses.stream(model=route.model, input=QUESTION) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                break
    [row] = ledger_rows(routes.tenants[route.name], 1)
    assert row.status == UsageRecord.Status.CLIENT_DISCONNECTED
    assert row.stream and row.wire_format == WIRE_FORMAT and row.model == route.model
    assert row.input_tokens > 0 and row.output_tokens >= 1
    assert row.cost_usd > 0
    record = eventually(lambda: _disconnected(mock))
    assert record["chunks_sent"] < 40


def _disconnected(mock: MockServer) -> dict[str, Any]:
    [record] = mock.requests()
    assert record["disconnected"] and record["finished_at"] is not None
    return record


# --- what the proxy does not know --------------------------------------------------------

UNKNOWN_FIELD = "future_knob"


@pytest.mark.parametrize("mode", MODES)
def test_it_forwards_an_unknown_field_unchanged_to_a_native_provider(
    routes: Routes, mock: MockServer, mode: Mode
) -> None:
    response = ask(
        routes.clients["native"],
        mode=mode,
        model="gpt-5",
        input=QUESTION,
        extra_body={UNKNOWN_FIELD: {"level": [1, 2, 3]}},
    )
    assert response.output_text == DEFAULT_REPLY
    sent = mock.requests()[-1]["body"]
    assert sent[UNKNOWN_FIELD] == {"level": [1, 2, 3]}
    assert sent["input"] == QUESTION


@pytest.mark.parametrize("name", ["chat", "messages"])
@pytest.mark.parametrize("stream", [False, True])
def test_it_refuses_an_unknown_field_it_cannot_translate_naming_it(
    routes: Routes, mock: MockServer, name: Name, stream: bool
) -> None:
    route = RouteCase(name)
    with pytest.raises(openai.BadRequestError) as refused:
        routes.clients[name].responses.create(
            model=route.model,
            input=QUESTION,
            stream=stream,
            extra_body={UNKNOWN_FIELD: {"level": 3}},
        )
    assert refused.value.status_code == 400
    error = refused.value.response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert UNKNOWN_FIELD in error["message"]
    assert mock.calls() == 0


# --- the token limit ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_it_reports_an_answer_cut_at_max_output_tokens_as_incomplete(
    routes: Routes, cached: MockServer, route: RouteCase, mode: Mode
) -> None:
    client = routes.clients[route.name]
    kwargs: dict[str, Any] = {"model": route.model, "input": QUESTION, "max_output_tokens": 3}
    if mode == "whole":
        response = client.responses.create(**kwargs)
    else:
        events = list(client.responses.create(**kwargs, stream=True))
        kinds = [event.type for event in events]
        assert kinds[-1] == "response.incomplete" and "response.completed" not in kinds, kinds
        numbers = [event.sequence_number for event in events]
        assert numbers == sorted(set(numbers))
        response = events[-1].response
    [record] = cached.requests()
    assert record["body"].get("max_output_tokens", record["body"].get("max_tokens")) == 3 or (
        record["body"].get("max_completion_tokens") == 3
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == record["text_sent"] == "Hello from the"
    check_usage(route, response, record)
    check_ledger(route, routes, [record], stream=mode == "stream")


# --- reasoning sent back -----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_it_round_trips_reasoning_and_tools_sent_back_as_output_items(
    routes: Routes, cached: MockServer, route: RouteCase, mode: Mode
) -> None:
    """As the Agents SDK and Codex do: every output item of the turn goes back in ``input``
    (the reasoning item with its encrypted content), then the tools' outputs."""
    cached.configure(tool_calls=MOCK_TOOL_CALLS, thinking=THINKING)
    client = routes.clients[route.name]
    question: list[Any] = [{"role": "user", "content": TOOL_QUESTION}]
    kwargs: dict[str, Any] = {
        "model": route.model,
        "tools": TOOLS,
        "reasoning": {"effort": "low", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
        "max_output_tokens": 4096,
    }
    first = ask(client, mode=mode, input=question, **kwargs)
    assert [item.type for item in first.output] == ["reasoning", "function_call", "function_call"]
    reasoning = first.output[0]
    assert isinstance(reasoning, ResponseReasoningItem)
    assert [s.text for s in reasoning.summary] == [THINKING]
    if route.api != "openai":  # an OpenAI-compatible provider's reasoning is not signed
        assert reasoning.encrypted_content
    calls = function_calls(first.output[1:])
    followup = [
        *question,
        *[item.model_dump(exclude_none=True) for item in first.output],
        *[
            {"type": "function_call_output", "call_id": c.call_id, "output": TOOL_RESULTS[c.name]}
            for c in calls
        ],
    ]
    second = ask(client, mode=mode, input=followup, **kwargs)
    assert second.output_text == FINAL_TOOL_TEXT
    records = cached.requests()
    assert len(records) == 2
    assert [r["tool_use_id"] for r in records[1]["tool_results"]] == [c.call_id for c in calls]
    if route.api == "anthropic":
        # The signed thinking went back, so the provider thought again.
        [assistant] = [m for m in records[1]["body"]["messages"] if m["role"] == "assistant"]
        assert assistant["content"][0]["type"] == "thinking"
        assert assistant["content"][0]["thinking"] == THINKING
    for response, record in zip((first, second), records, strict=True):
        check_usage(route, response, record)
    check_ledger(route, routes, records, stream=mode == "stream")


@pytest.mark.parametrize("mode", MODES)
def test_it_keeps_a_text_answer_to_a_json_schema_request_on_anthropic(
    routes: Routes, cached: MockServer, mode: Mode
) -> None:
    """The route forces a tool for the schema; a provider answering in text anyway (the mock
    does, offered no tool it was told to call) must not see its answer dropped silently."""
    cached.configure(text=WEATHER_PIECES, chunks=len(WEATHER_PIECES))
    response = ask(
        routes.clients["messages"],
        mode=mode,
        text_format=Weather,
        model="claude-sonnet-4-5",
        input="What is the weather in Paris?",
    )
    [record] = cached.requests()
    assert record["tool_calls"] == [] and record["text_sent"] == "".join(WEATHER_PIECES)
    assert response.output_text == record["text_sent"]
