"""The official `openai` and `anthropic` SDKs as agents, through a live proxy, to both kinds.

Four pairs, each whole and streamed (through the SDK's own stream helper): the OpenAI SDK to
alice's "auto" (an OpenAI-kind route: pass-through) and to bob's "claude-sonnet-4-5" (an
Anthropic-kind route: translated), the Anthropic SDK (`POST /v1/messages`) to bob
(pass-through) and to alice (translated to OpenAI chat). Each runs plain text, a round trip of
two tools called in one turn, an image input and a stop sequence, and its SDK's parsed objects
are checked field by field: text, tool names, arguments and ids, stop reason, usage and cache
tokens, then the ledger row of every call.

Expected counts are the mock's documented ones (devtools/mockprovider.py): the prompt-token
formula applied to the body the mock received, one output token per piece, and the cache
counts it is configured to report (CACHE). The raw `stream=True` events are checked once per
pair on the tool turn, where the block indexes matter most.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import anthropic
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionMessageFunctionToolCall

from devtools.mockprovider import prompt_tokens
from routing.services import route_create
from tenants.models import Tenant
from tenants.services import tenant_create, tier_create
from tests.conftest import LiveProxy, World, ledger_rows, unique
from tests.support.mockserver import MockServer
from usage.models import UsageRecord

pytestmark = [
    pytest.mark.core,
    # The anthropic SDK warns of its own model names' end of life; the names are just routes.
    pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning"),
]

Sdk = Literal["openai", "anthropic"]
Mode = Literal["whole", "stream"]
MODES: tuple[Mode, ...] = ("whole", "stream")

# A 1x1 PNG, valid to any image decoder.
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)  # fmt: skip
PNG_DATA_URL = f"data:image/png;base64,{PNG_B64}"
SYSTEM = "Be brief."
QUESTION = "Say hello in three words"
# (3 + 2 words of SYSTEM) + (3 + 5 words of QUESTION), whichever format carries them.
QUESTION_PROMPT_TOKENS = 13
DEFAULT_REPLY = "Hello from the mock provider. Every piece"  # the mock's 8 default pieces
CACHE = {"read": 3, "write": 2}
ANTHROPIC_MAX_TOKENS = 1024

TOOL_SPECS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "get_weather",
        "The current weather in a city.",
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    ),
    (
        "get_time",
        "The local time in a time zone.",
        {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
    ),
]
MOCK_TOOL_CALLS = [
    {"name": "get_weather", "arguments": {"city": "Paris"}},
    {"name": "get_time", "arguments": {"tz": "Europe/Paris"}},
]
TOOL_RESULTS = {"get_weather": "18C and sunny", "get_time": "14:05"}
FINAL_TOOL_TEXT = "Tool results: 18C and sunny | 14:05"

OPENAI_TOOLS: list[Any] = [
    {"type": "function", "function": {"name": n, "description": d, "parameters": p}}
    for n, d, p in TOOL_SPECS
]
ANTHROPIC_TOOLS: list[Any] = [
    {"name": n, "description": d, "input_schema": p} for n, d, p in TOOL_SPECS
]


@dataclass(frozen=True)
class Pair:
    sdk: Sdk
    tenant: Literal["alice", "bob"]

    @property
    def model(self) -> str:
        return "auto" if self.tenant == "alice" else "claude-sonnet-4-5"

    @property
    def provider(self) -> Sdk:
        """The API of the route's provider (alice: Moonshot, OpenAI-kind; bob: Anthropic)."""
        return "openai" if self.tenant == "alice" else "anthropic"

    @property
    def translated(self) -> bool:
        return self.sdk != self.provider

    @property
    def wire_format(self) -> str:
        return "openai-chat" if self.sdk == "openai" else "anthropic-messages"

    @property
    def prices(self) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        """The world's route prices: input, output, cache read, cache write (alice's route
        prices no cache writes: those are billed as input, and Moonshot reports none)."""
        if self.tenant == "alice":
            return Decimal("0.60"), Decimal("2.50"), Decimal("0.15"), Decimal("0.60")
        return Decimal("3"), Decimal("15"), Decimal("0.30"), Decimal("3.75")

    def __str__(self) -> str:
        return f"{self.sdk}-sdk-to-{self.provider}"


PAIRS = [
    Pair("openai", "alice"),
    Pair("openai", "bob"),
    Pair("anthropic", "bob"),
    Pair("anthropic", "alice"),
]


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]  # as the SDK parsed them
    arguments_text: str  # as the model wrote them (what an OpenAI client sends back)


@dataclass
class Reply:
    """One answer, read from the SDK's own parsed object."""

    text: str
    tool_calls: list[ToolCall]
    stop_reason: str | None
    stop_sequence: str | None  # Anthropic's; None for OpenAI clients
    usage: Any  # the SDK's usage object
    blocks: list[dict[str, Any]]  # the assistant's turn, as the client sends it back


class OpenAIAgent:
    def __init__(self, client: openai.OpenAI, model: str) -> None:
        self.client, self.model = client, model

    def user(self, text: str, *, image: bool = False) -> Any:
        if not image:
            return {"role": "user", "content": text}
        return {
            "role": "user",
            "content": [
                {"type": "text", "text": text},
                {"type": "image_url", "image_url": {"url": PNG_DATA_URL}},
            ],
        }

    def ask(
        self, messages: list[Any], *, mode: Mode, tools: bool = False, stop: str | None = None
    ) -> Reply:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "system", "content": SYSTEM}, *messages],
        }
        if tools:
            kwargs["tools"] = OPENAI_TOOLS
        if stop is not None:
            kwargs["stop"] = [stop]
        completion: ChatCompletion
        if mode == "whole":
            completion = self.client.chat.completions.create(**kwargs)
        else:
            with self.client.chat.completions.stream(
                **kwargs, stream_options={"include_usage": True}
            ) as stream:
                completion = stream.get_final_completion()
        assert len(completion.choices) == 1
        choice = completion.choices[0]
        assert choice.message.role == "assistant"
        calls = []
        for call in choice.message.tool_calls or []:
            assert isinstance(call, ChatCompletionMessageFunctionToolCall)
            assert call.type == "function"
            text = call.function.arguments
            calls.append(ToolCall(call.id, call.function.name, json.loads(text), text))
        return Reply(
            text=choice.message.content or "",
            tool_calls=calls,
            stop_reason=choice.finish_reason,
            stop_sequence=None,
            usage=completion.usage,
            blocks=[],
        )

    def with_results(self, messages: list[Any], reply: Reply) -> list[Any]:
        assistant = {
            "role": "assistant",
            "content": reply.text or None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_text},
                }
                for call in reply.tool_calls
            ],
        }
        results = [
            {"role": "tool", "tool_call_id": call.id, "content": TOOL_RESULTS[call.name]}
            for call in reply.tool_calls
        ]
        return [*messages, assistant, *results]


class AnthropicAgent:
    def __init__(self, client: anthropic.Anthropic, model: str) -> None:
        self.client, self.model = client, model

    def user(self, text: str, *, image: bool = False) -> Any:
        if not image:
            return {"role": "user", "content": text}
        source = {"type": "base64", "media_type": "image/png", "data": PNG_B64}
        return {
            "role": "user",
            "content": [{"type": "text", "text": text}, {"type": "image", "source": source}],
        }

    def ask(
        self, messages: list[Any], *, mode: Mode, tools: bool = False, stop: str | None = None
    ) -> Reply:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": ANTHROPIC_MAX_TOKENS,
            "system": SYSTEM,
            "messages": messages,
        }
        if tools:
            kwargs["tools"] = ANTHROPIC_TOOLS
        if stop is not None:
            kwargs["stop_sequences"] = [stop]
        message: anthropic.types.Message
        if mode == "whole":
            message = self.client.messages.create(**kwargs)
        else:
            with self.client.messages.stream(**kwargs) as stream:
                message = stream.get_final_message()
        assert message.type == "message" and message.role == "assistant"
        assert message.model == self.model  # the tenant's name, never the upstream's
        texts: list[str] = []
        calls: list[ToolCall] = []
        blocks: list[dict[str, Any]] = []
        for block in message.content:
            if block.type == "text":
                texts.append(block.text)
                blocks.append({"type": "text", "text": block.text})
            else:
                assert block.type == "tool_use"
                assert isinstance(block.input, dict)
                calls.append(ToolCall(block.id, block.name, block.input, json.dumps(block.input)))
                blocks.append(
                    {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
                )
        return Reply(
            text="".join(texts),
            tool_calls=calls,
            stop_reason=message.stop_reason,
            stop_sequence=message.stop_sequence,
            usage=message.usage,
            blocks=blocks,
        )

    def with_results(self, messages: list[Any], reply: Reply) -> list[Any]:
        results = [
            {"type": "tool_result", "tool_use_id": call.id, "content": TOOL_RESULTS[call.name]}
            for call in reply.tool_calls
        ]
        return [
            *messages,
            {"role": "assistant", "content": reply.blocks},
            {"role": "user", "content": results},
        ]


Agent = OpenAIAgent | AnthropicAgent


@pytest.fixture
def clients(proxy: LiveProxy, world: World) -> Iterator[dict[tuple[Sdk, str], Any]]:
    """The SDK clients of alice and bob, made once per test (the tokens are per world)."""
    made: dict[tuple[Sdk, str], Any] = {}
    for name, tenant in (("alice", world.alice), ("bob", world.bob)):
        token = world.token(tenant)
        made["openai", name] = openai.OpenAI(
            base_url=proxy.openai_base_url, api_key=token, max_retries=0
        )
        made["anthropic", name] = anthropic.Anthropic(
            base_url=proxy.url, api_key=token, max_retries=0
        )
    yield made
    for client in made.values():
        client.close()


def agent_for(pair: Pair, clients: dict[tuple[Sdk, str], Any]) -> Agent:
    client = clients[pair.sdk, pair.tenant]
    if pair.sdk == "openai":
        return OpenAIAgent(client, pair.model)
    return AnthropicAgent(client, pair.model)


def tenant_of(pair: Pair, world: World) -> Tenant:
    return world.alice if pair.tenant == "alice" else world.bob


# --- what the mock reported, and what each side must show of it ---------------------------


def prompt_total(record: dict[str, Any]) -> int:
    """Every prompt token of the call the mock received, cached ones included."""
    body = record["body"]
    system = body.get("system") if record["api"] == "anthropic" else None
    total = prompt_tokens(body["messages"], system, body.get("tools"))
    assert record["usage"]["input_tokens"] == total  # what the mock says it counted
    return total


def output_count(record: dict[str, Any]) -> int:
    count: int = record["usage"]["output_tokens"]
    return count


def cache_write(pair: Pair) -> int:
    # OpenAI-compatible providers report cache reads only: nothing is ever "written".
    return CACHE["write"] if pair.provider == "anthropic" else 0


def check_usage(pair: Pair, reply: Reply, record: dict[str, Any]) -> None:
    total, output = prompt_total(record), output_count(record)
    usage = reply.usage
    assert usage is not None
    if pair.sdk == "openai":
        # OpenAI's prompt_tokens counts every prompt token, the cached ones among them.
        assert usage.prompt_tokens == total
        assert usage.completion_tokens == output
        assert usage.total_tokens == total + output
        assert usage.prompt_tokens_details is not None
        assert usage.prompt_tokens_details.cached_tokens == CACHE["read"]
    else:
        # Anthropic's input_tokens counts the prompt tokens that are neither read from nor
        # written to the cache.
        assert usage.input_tokens == total - CACHE["read"] - cache_write(pair)
        assert usage.cache_read_input_tokens == CACHE["read"]
        assert usage.cache_creation_input_tokens == cache_write(pair)
        assert usage.output_tokens == output


def check_ledger(pair: Pair, world: World, records: list[dict[str, Any]], *, stream: bool) -> None:
    rows = ledger_rows(tenant_of(pair, world), len(records))
    for row, record in zip(rows, records, strict=True):
        total, output = prompt_total(record), output_count(record)
        assert row.status == UsageRecord.Status.OK
        assert row.http_status == 200
        assert row.stream is stream
        assert row.model == pair.model
        assert (row.input_tokens, row.output_tokens) == (total, output)
        assert row.cache_read_tokens == CACHE["read"]
        assert row.cache_write_tokens == cache_write(pair)
        assert row.wire_format == pair.wire_format
        assert row.usage_reported and not row.usage_invalid
        # By hand, not through usage.bill.Price: the prices the world's routes carry, each
        # kind of prompt token at its own.
        price_in, price_out, price_read, price_write = pair.prices
        read, write = CACHE["read"], cache_write(pair)
        cost = (
            (total - read - write) * price_in
            + read * price_read
            + write * price_write
            + output * price_out
        ) / Decimal(1_000_000)
        assert row.cost_usd == cost.quantize(Decimal("1e-9"))


def stop_words(pair: Pair) -> tuple[str, str]:
    """(end of turn, tool use) in the client's words."""
    return ("stop", "tool_calls") if pair.sdk == "openai" else ("end_turn", "tool_use")


@pytest.fixture
def cached(mock: MockServer) -> MockServer:
    mock.configure(cache=CACHE)
    return mock


# --- (a) plain text ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pair", PAIRS, ids=str)
def test_it_answers_plain_text(
    world: World, cached: MockServer, clients: Any, pair: Pair, mode: Mode
) -> None:
    agent = agent_for(pair, clients)
    reply = agent.ask([agent.user(QUESTION)], mode=mode)
    [record] = cached.requests()
    assert record["api"] == pair.provider
    assert reply.text == record["text_sent"] == DEFAULT_REPLY
    assert reply.tool_calls == []
    assert reply.stop_reason == stop_words(pair)[0]
    assert reply.stop_sequence is None
    assert prompt_total(record) == QUESTION_PROMPT_TOKENS
    assert output_count(record) == 8
    check_usage(pair, reply, record)
    check_ledger(pair, world, [record], stream=mode == "stream")


@pytest.mark.parametrize("pair", [p for p in PAIRS if p.sdk == "anthropic"], ids=str)
def test_it_answers_the_anthropic_beta_client(
    world: World, cached: MockServer, clients: Any, pair: Pair
) -> None:
    """The SDK's beta client, at /v1/messages?beta=true as Claude Code calls it."""
    client = clients[pair.sdk, pair.tenant]
    raw = client.beta.messages.with_raw_response.create(
        model=pair.model,
        max_tokens=ANTHROPIC_MAX_TOKENS,
        system=SYSTEM,
        messages=[{"role": "user", "content": QUESTION}],
        # Claude Code and older SDKs put it in the URL; this SDK keeps it to itself.
        extra_query={"beta": "true"},
    )
    assert raw.http_request.url.path == "/v1/messages"
    assert raw.http_request.url.params["beta"] == "true"
    message = raw.parse()
    [record] = cached.requests()
    assert record["api"] == pair.provider
    assert [block.text for block in message.content if block.type == "text"] == [DEFAULT_REPLY]
    assert message.stop_reason == "end_turn"
    reply = Reply(DEFAULT_REPLY, [], message.stop_reason, None, message.usage, [])
    check_usage(pair, reply, record)
    check_ledger(pair, world, [record], stream=False)


# --- (b) two tools in one turn, and the answer after their results -----------------------


def mock_tool_ids(record: dict[str, Any]) -> list[str]:
    """The ids the mock gave its tool calls, read from the answer it recorded."""
    calls = record["tool_calls"]
    return [call["id"] for call in calls]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pair", PAIRS, ids=str)
def test_it_round_trips_two_tools_called_in_one_turn(
    world: World, cached: MockServer, clients: Any, pair: Pair, mode: Mode
) -> None:
    cached.configure(tool_calls=MOCK_TOOL_CALLS)
    agent = agent_for(pair, clients)
    messages = [agent.user("What is the weather and the time in Paris?")]
    first = agent.ask(messages, mode=mode, tools=True)

    assert [(c.name, c.arguments) for c in first.tool_calls] == [
        (call["name"], call["arguments"]) for call in MOCK_TOOL_CALLS
    ]
    assert first.stop_reason == stop_words(pair)[1]
    ids = [call.id for call in first.tool_calls]
    assert len(set(ids)) == 2
    [call_record] = cached.requests()
    # The ids are the provider's own, not ones the proxy made up along the way.
    assert ids == mock_tool_ids(call_record)
    offered = call_record["body"]["tools"]
    if pair.provider == "openai":
        assert [t["function"]["name"] for t in offered] == ["get_weather", "get_time"]
        assert [t["function"]["parameters"] for t in offered] == [p for _, _, p in TOOL_SPECS]
    else:
        assert [t["name"] for t in offered] == ["get_weather", "get_time"]
        assert [t["input_schema"] for t in offered] == [p for _, _, p in TOOL_SPECS]

    second = agent.ask(agent.with_results(messages, first), mode=mode, tools=True)
    records = cached.requests()
    assert len(records) == 2
    result_record = records[1]
    # Both results reached the provider, each under the id of the call it answers.
    assert [
        (r["tool_use_id"], r["text"], r["is_error"]) for r in result_record["tool_results"]
    ] == [(call.id, TOOL_RESULTS[call.name], False) for call in first.tool_calls]
    assert second.text == FINAL_TOOL_TEXT
    assert second.tool_calls == []
    assert second.stop_reason == stop_words(pair)[0]
    check_usage(pair, first, call_record)
    check_usage(pair, second, result_record)
    check_ledger(pair, world, records, stream=mode == "stream")


@pytest.mark.parametrize("pair", PAIRS, ids=str)
def test_it_streams_the_raw_events_of_two_tool_calls(
    world: World, cached: MockServer, clients: Any, pair: Pair
) -> None:
    """The events themselves, as a client without the SDK's accumulator reads them: each
    tool call under its own index, its id and name first, its arguments in pieces."""
    cached.configure(tool_calls=MOCK_TOOL_CALLS)
    client = clients[pair.sdk, pair.tenant]
    question = "What is the weather and the time in Paris?"
    calls: dict[int, dict[str, Any]] = {}
    pieces: dict[int, int] = {}
    if pair.sdk == "openai":
        stream = client.chat.completions.create(
            model=pair.model,
            messages=[{"role": "user", "content": question}],
            tools=OPENAI_TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
        finish, usage = None, None
        for chunk in stream:
            if chunk.usage is not None:
                assert chunk.choices == []
                usage = chunk.usage
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for delta in choice.delta.tool_calls or []:
                    if delta.index not in calls:
                        # The first delta of a call names it.
                        assert delta.id and delta.function and delta.function.name
                        calls[delta.index] = {
                            "id": delta.id,
                            "name": delta.function.name,
                            "args": "",
                        }
                    else:
                        assert delta.id is None
                    if delta.function and delta.function.arguments:
                        calls[delta.index]["args"] += delta.function.arguments
                        pieces[delta.index] = pieces.get(delta.index, 0) + 1
        assert finish == "tool_calls"
        assert usage is not None
    else:
        events = list(
            client.messages.create(
                model=pair.model,
                max_tokens=ANTHROPIC_MAX_TOKENS,
                messages=[{"role": "user", "content": question}],
                tools=ANTHROPIC_TOOLS,
                stream=True,
            )
        )
        kinds = [event.type for event in events]
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
        open_block: int | None = None
        for event in events:
            if event.type == "content_block_start":
                # Anthropic's blocks never interleave: one opens after the last one closed.
                assert open_block is None
                open_block = event.index
                block = event.content_block
                if block.type == "tool_use":
                    assert block.input == {}
                    calls[event.index] = {"id": block.id, "name": block.name, "args": ""}
            elif event.type == "content_block_delta":
                assert event.index == open_block
                if event.delta.type == "input_json_delta":
                    calls[event.index]["args"] += event.delta.partial_json
                    pieces[event.index] = pieces.get(event.index, 0) + 1
            elif event.type == "content_block_stop":
                assert event.index == open_block
                open_block = None
            elif event.type == "message_delta":
                assert event.delta.stop_reason == "tool_use"
        starts = [e.index for e in events if e.type == "content_block_start"]
        assert starts == list(range(len(starts)))
    [record] = cached.requests()
    ordered = [calls[index] for index in sorted(calls)]
    assert [(c["name"], json.loads(c["args"])) for c in ordered] == [
        (call["name"], call["arguments"]) for call in MOCK_TOOL_CALLS
    ]
    assert [c["id"] for c in ordered] == mock_tool_ids(record)
    # The mock streams arguments in several pieces; they reach the client as pieces too.
    assert all(count > 1 for count in pieces.values()) and len(pieces) == 2
    check_ledger(pair, world, [record], stream=True)


# --- (c) an image ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pair", PAIRS, ids=str)
def test_it_carries_an_image_in_the_providers_own_format(
    world: World, cached: MockServer, clients: Any, pair: Pair, mode: Mode
) -> None:
    agent = agent_for(pair, clients)
    reply = agent.ask([agent.user("What is in this picture?", image=True)], mode=mode)
    [record] = cached.requests()
    assert record["images"] == 1
    assert reply.text.startswith("I see 1 image(s). ")
    assert reply.text == record["text_sent"]
    assert reply.stop_reason == stop_words(pair)[0]
    parts = record["body"]["messages"][-1]["content"]
    if pair.provider == "anthropic":
        images = [part for part in parts if part["type"] == "image"]
        assert images == [
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
            }
        ]
    else:
        images = [part for part in parts if part["type"] == "image_url"]
        assert [part["image_url"]["url"] for part in images] == [PNG_DATA_URL]
    assert base64.b64decode(PNG_B64).startswith(b"\x89PNG")
    check_usage(pair, reply, record)
    check_ledger(pair, world, [record], stream=mode == "stream")


# --- (d) a stop sequence -----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pair", PAIRS, ids=str)
def test_it_stops_at_a_stop_sequence(
    world: World, cached: MockServer, clients: Any, pair: Pair, mode: Mode
) -> None:
    cached.configure(text=["Alpha", " beta", " HALT", " gamma"], chunks=4)
    agent = agent_for(pair, clients)
    reply = agent.ask([agent.user(QUESTION)], mode=mode, stop="HALT")
    [record] = cached.requests()
    assert reply.text == record["text_sent"] == "Alpha beta "
    if pair.sdk == "openai":
        assert reply.stop_reason == "stop"  # OpenAI says no more than that
    elif pair.provider == "anthropic":
        assert (reply.stop_reason, reply.stop_sequence) == ("stop_sequence", "HALT")
    else:
        # An OpenAI-compatible provider does not say which sequence stopped it, nor that one
        # did: the Anthropic client reads a plain end of turn (README, translation table).
        assert (reply.stop_reason, reply.stop_sequence) == ("end_turn", None)
    sent = record["body"]
    assert (sent["stop"] if pair.provider == "openai" else sent["stop_sequences"]) == ["HALT"]
    check_usage(pair, reply, record)
    check_ledger(pair, world, [record], stream=mode == "stream")


# --- refusals in Anthropic's shape -------------------------------------------------------


def capped_tenant(world: World, **tier_fields: Any) -> Tenant:
    fields = {"requests_per_minute": 100_000, "max_concurrent_requests": 10_000, **tier_fields}
    tier = tier_create(slug=unique("capped"), name="Capped", **fields)
    route_create(
        tier=tier,
        model="claude-sonnet-4-5",
        provider=world.anthropic,
        upstream_model="claude-sonnet-4-5-20250929",
        input_usd_per_mtok=Decimal("3"),
        output_usd_per_mtok=Decimal("15"),
    )
    return tenant_create(slug=unique("capped"), name="Capped", tier=tier)


def post_messages(proxy: LiveProxy, token: str) -> httpx.Response:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": QUESTION}],
    }
    headers = {"x-api-key": token, "anthropic-version": "2023-06-01"}
    return httpx.post(f"{proxy.url}/v1/messages", json=body, headers=headers, timeout=10)


def assert_anthropic_rate_limit_error(response: httpx.Response) -> None:
    assert response.status_code == 429
    body = response.json()
    assert set(body) == {"type", "error"} and body["type"] == "error"
    assert body["error"]["type"] == "rate_limit_error"
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert int(response.headers["Retry-After"]) > 0


def test_it_refuses_a_messages_request_over_the_weekly_cap_in_anthropics_shape(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    tenant = capped_tenant(world, weekly_token_cap=10)  # less than any reservation
    token = world.token(tenant)
    assert_anthropic_rate_limit_error(post_messages(proxy, token))
    client = anthropic.Anthropic(base_url=proxy.url, api_key=token, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as refused:
        client.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=64,
            messages=[{"role": "user", "content": QUESTION}],
        )
    assert refused.value.status_code == 429
    assert mock.calls() == 0


def test_it_refuses_a_messages_request_over_the_rate_limit_in_anthropics_shape(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    tenant = capped_tenant(world, requests_per_minute=1)
    token = world.token(tenant)
    assert post_messages(proxy, token).status_code == 200
    assert_anthropic_rate_limit_error(post_messages(proxy, token))
    assert mock.calls() == 1


# --- what the proxy does not know --------------------------------------------------------

UNKNOWN_FIELD = "future_knob"
UNKNOWN_BLOCK = {"type": "future_block", "payload": {"nested": [1, 2, 3]}}


def test_it_forwards_unknown_fields_and_blocks_unchanged_to_anthropic(
    world: World, mock: MockServer, clients: Any
) -> None:
    client = clients["anthropic", "bob"]
    message = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION}, UNKNOWN_BLOCK]}],
        extra_body={UNKNOWN_FIELD: {"level": 3}},
    )
    assert message.content
    sent = mock.requests()[-1]["body"]
    assert sent[UNKNOWN_FIELD] == {"level": 3}
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": QUESTION}, UNKNOWN_BLOCK]}
    ]


def test_it_forwards_unknown_fields_and_parts_unchanged_to_openai(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    # Raw HTTP: the OpenAI SDK's types would not let an unknown part through.
    part = {"type": "future_part", "payload": {"nested": [1, 2, 3]}}
    messages = [{"role": "user", "content": [{"type": "text", "text": QUESTION}, part]}]
    body = {"model": "auto", "messages": messages, UNKNOWN_FIELD: {"level": 3}}
    headers = {"Authorization": f"Bearer {world.token(world.alice)}"}
    response = httpx.post(
        f"{proxy.openai_base_url}/chat/completions", json=body, headers=headers, timeout=10
    )
    assert response.status_code == 200, response.text
    sent = mock.requests()[-1]["body"]
    assert sent[UNKNOWN_FIELD] == {"level": 3}
    assert sent["messages"] == messages


def test_it_refuses_unknown_fields_it_cannot_translate_naming_them(
    world: World, mock: MockServer, clients: Any
) -> None:
    to_openai = clients["anthropic", "alice"]
    with pytest.raises(anthropic.BadRequestError) as refused:
        to_openai.messages.create(
            model="auto",
            max_tokens=64,
            messages=[{"role": "user", "content": QUESTION}],
            extra_body={UNKNOWN_FIELD: {"level": 3}},
        )
    assert refused.value.status_code == 400
    error = refused.value.response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert UNKNOWN_FIELD in error["error"]["message"]

    with pytest.raises(anthropic.BadRequestError) as refused:
        to_openai.messages.create(
            model="auto",
            max_tokens=64,
            messages=[
                {"role": "user", "content": [{"type": "text", "text": QUESTION}, UNKNOWN_BLOCK]}
            ],
        )
    assert "future_block" in refused.value.response.json()["error"]["message"]

    to_anthropic = clients["openai", "bob"]
    with pytest.raises(openai.BadRequestError) as bad:
        to_anthropic.chat.completions.create(
            model="claude-sonnet-4-5",
            messages=[{"role": "user", "content": QUESTION}],
            extra_body={UNKNOWN_FIELD: {"level": 3}},
        )
    assert bad.value.status_code == 400 and UNKNOWN_FIELD in bad.value.message

    part: Any = {"type": "future_part", "payload": {}}
    with pytest.raises(openai.BadRequestError) as bad:
        to_anthropic.chat.completions.create(
            model="claude-sonnet-4-5",
            messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION}, part]}],
        )
    assert bad.value.status_code == 400 and "future_part" in bad.value.message
    assert mock.calls() == 0
