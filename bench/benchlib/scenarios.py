"""What the benchmark sends: request specs (the exact bytes, built once per scenario) in each
wire format, the format x provider-kind pairs, and the scenarios of each section."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from .common import HOST, MOCK_KEY

ANTHROPIC_VERSION = "2023-06-01"

# A content piece as it appears on the wire. The frames that precede the content (OpenAI's
# role chunk, Anthropic's content_block_start) carry an empty string, so "a non-empty string"
# is exactly "the first content chunk". The mock, the proxy and LiteLLM write compact JSON.
OPENAI_CONTENT = re.compile(rb'"content":"[^"]')
ANTHROPIC_CONTENT = re.compile(rb'"text":"[^"]')
RESPONSES_CONTENT = re.compile(rb'"delta":"[^"]')

MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Say hello in a few words."},
]
# What the proxy sends when the client names no limit (the tier's default_max_tokens); the
# Messages API requires a limit, so Anthropic-format requests always carry this one.
MAX_TOKENS = 4096

Format = Literal["chat", "messages", "responses"]
# The provider a request goes to: the OpenAI-kind provider (chat completions), the same kind
# marked responses_api (serving /v1/responses itself), or the Anthropic-kind provider.
Route = Literal["openai", "openai-responses", "anthropic"]

FORMAT_PATHS: dict[Format, str] = {
    "chat": "/v1/chat/completions",
    "messages": "/v1/messages",
    "responses": "/v1/responses",
}
# Each route's provider format: what a direct request to the mock speaks.
ROUTE_FORMATS: dict[Route, Format] = {
    "openai": "chat",
    "openai-responses": "responses",
    "anthropic": "messages",
}
# The model a client names for each route (bench/config.toml, and LiteLLM's config alike).
ROUTE_MODELS: dict[Route, str] = {
    "openai": "auto",
    "openai-responses": "auto-responses",
    "anthropic": "claude-bench",
}
# The model the provider is asked for (the routes' upstream_model).
UPSTREAM_MODELS: dict[Route, str] = {
    "openai": "mock-model",
    "openai-responses": "mock-model",
    "anthropic": "mock-claude",
}
ROUTE_LABELS: dict[Route, str] = {
    "openai": "OpenAI-kind",
    "openai-responses": "OpenAI-kind, responses_api",
    "anthropic": "Anthropic-kind",
}


@dataclass(frozen=True)
class RequestSpec:
    """One kind of request to one target, fixed for a whole scenario."""

    port: int
    path: str
    headers: dict[str, str]
    body: bytes
    stream: bool
    first_content: re.Pattern[bytes] | None  # streams: marks the first content chunk
    complete: bytes  # must occur in a successful response body

    def raw(self) -> bytes:
        """The whole HTTP/1.1 request, built once and written as is for every request."""
        lines = [f"POST {self.path} HTTP/1.1", f"Host: {HOST}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body

    def on_port(self, port: int) -> RequestSpec:
        """The same request to another process (the Host header follows the port)."""
        return RequestSpec(
            port,
            self.path,
            self.headers,
            self.body,
            self.stream,
            self.first_content,
            self.complete,
        )


def _json_body(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _accept(stream: bool) -> str:
    return "text/event-stream" if stream else "application/json"


def openai_spec(
    *, port: int, bearer: str, model: str, stream: bool, messages: Any = MESSAGES
) -> RequestSpec:
    """An OpenAI chat-completions request: to the mock directly, or to a gateway.

    `messages` is only ever something else for the soak's request the proxy must refuse.
    """
    body = {"model": model, "messages": messages, "stream": stream}
    return RequestSpec(
        port=port,
        path=FORMAT_PATHS["chat"],
        headers={
            "Authorization": f"Bearer {bearer}",
            "Content-Type": "application/json",
            "Accept": _accept(stream),
        },
        body=_json_body(body),
        stream=stream,
        first_content=OPENAI_CONTENT if stream else None,
        complete=b"data: [DONE]" if stream else b'"usage"',
    )


def anthropic_spec(
    *, port: int, stream: bool, key: str = MOCK_KEY, model: str = "mock-claude"
) -> RequestSpec:
    """An Anthropic Messages request: the one the proxy sends the mock when it translates an
    OpenAI request, or the same from a Messages client to a gateway."""
    body: dict[str, Any] = {
        "model": model,
        "system": MESSAGES[0]["content"],
        "messages": MESSAGES[1:],
        "max_tokens": MAX_TOKENS,
    }
    if stream:
        body["stream"] = True
    return RequestSpec(
        port=port,
        path=FORMAT_PATHS["messages"],
        headers={
            "x-api-key": key,
            "anthropic-version": ANTHROPIC_VERSION,
            "Content-Type": "application/json",
            "Accept": _accept(stream),
        },
        body=_json_body(body),
        stream=stream,
        first_content=ANTHROPIC_CONTENT if stream else None,
        complete=b"message_stop" if stream else b'"usage"',
    )


def responses_spec(
    *, port: int, bearer: str, model: str, stream: bool, direct: bool = False
) -> RequestSpec:
    """An OpenAI Responses request. Direct to the mock it carries what the proxy's
    pass-through adds (the reserved limit, store false), so both sides ask the same."""
    body: dict[str, Any] = {
        "model": model,
        "instructions": MESSAGES[0]["content"],
        "input": MESSAGES[1]["content"],
        "stream": stream,
    }
    if direct:
        body |= {"max_output_tokens": MAX_TOKENS, "store": False}
    return RequestSpec(
        port=port,
        path=FORMAT_PATHS["responses"],
        headers={
            "Authorization": f"Bearer {bearer}",
            "Content-Type": "application/json",
            "Accept": _accept(stream),
        },
        body=_json_body(body),
        stream=stream,
        first_content=RESPONSES_CONTENT if stream else None,
        complete=b"response.completed" if stream else b'"usage"',
    )


def client_spec(
    fmt: Format, *, port: int, credential: str, model: str, stream: bool
) -> RequestSpec:
    """A client's request in its own wire format to a gateway (the proxy or LiteLLM)."""
    if fmt == "chat":
        return openai_spec(port=port, bearer=credential, model=model, stream=stream)
    if fmt == "messages":
        return anthropic_spec(port=port, stream=stream, key=credential, model=model)
    return responses_spec(port=port, bearer=credential, model=model, stream=stream)


def direct_spec(route: Route, *, port: int, stream: bool) -> RequestSpec:
    """The request the route's provider gets, sent to the mock in its own format."""
    model = UPSTREAM_MODELS[route]
    if route == "anthropic":
        return anthropic_spec(port=port, stream=stream, model=model)
    if route == "openai-responses":
        return responses_spec(port=port, bearer=MOCK_KEY, model=model, stream=stream, direct=True)
    return openai_spec(port=port, bearer=MOCK_KEY, model=model, stream=stream)


@dataclass(frozen=True)
class Endpoint:
    """A gateway to send requests to: where it listens, and the credential it takes."""

    port: int
    token: str


@dataclass(frozen=True)
class Pair:
    """A client wire format on a provider route."""

    fmt: Format
    route: Route

    @property
    def passthrough(self) -> bool:
        return ROUTE_FORMATS[self.route] == self.fmt

    @property
    def label(self) -> str:
        return f"{self.fmt}>{self.route}"

    def describe(self) -> str:
        how = "pass-through" if self.passthrough else "translated"
        return f"{FORMAT_PATHS[self.fmt]} → {ROUTE_LABELS[self.route]} ({how})"


MAIN_PAIR = Pair("chat", "openai")
# Every client format on every provider kind. Responses has two OpenAI-kind routes: the
# provider marked responses_api gets it passed through, a plain one gets chat completions.
ALL_PAIRS = [
    MAIN_PAIR,
    Pair("chat", "anthropic"),
    Pair("messages", "anthropic"),
    Pair("messages", "openai"),
    Pair("responses", "openai-responses"),
    Pair("responses", "openai"),
    Pair("responses", "anthropic"),
]
# Where LiteLLM's own upstream call has the same format as the proxy's, so that the mock
# does the same work for both. LiteLLM sends a Messages client on an OpenAI model to
# /v1/responses, and a Responses client on one natively, where the proxy sends chat
# completions: those two pairs would compare different upstream work.
LITELLM_PAIRS = frozenset(
    {
        MAIN_PAIR,
        Pair("chat", "anthropic"),
        Pair("messages", "anthropic"),
        Pair("responses", "openai-responses"),
        Pair("responses", "anthropic"),
    }
)


@dataclass(frozen=True)
class Scenario:
    section: str  # "grid", "pairs" or "scaling"
    pair: Pair
    stream: bool
    concurrency: int

    @property
    def route(self) -> Route:
        return self.pair.route

    @property
    def label(self) -> str:
        kind = "stream" if self.stream else "non-stream"
        return f"{self.section} {self.pair.label} {kind} c={self.concurrency}"

    def gateway_spec(self, endpoint: Endpoint) -> RequestSpec:
        return client_spec(
            self.pair.fmt,
            port=endpoint.port,
            credential=endpoint.token,
            model=ROUTE_MODELS[self.route],
            stream=self.stream,
        )

    def direct(self, mock_port: int) -> RequestSpec:
        return direct_spec(self.route, port=mock_port, stream=self.stream)


GRID_CONCURRENCY = (1, 16, 64)
PAIRS_CONCURRENCY = 16
SCALING_CONCURRENCY = 64


def scenarios() -> list[Scenario]:
    """The same set in every mode: --quick only shortens the rounds.

    The main pair gets the full grid on every server and LiteLLM; every other pair one point
    (c = 16) on Daphne, which is what fits in the 15 minutes (bench/README.md).
    """
    out = [
        Scenario("grid", MAIN_PAIR, stream, c) for stream in (False, True) for c in GRID_CONCURRENCY
    ]
    out += [
        Scenario("pairs", pair, stream, PAIRS_CONCURRENCY)
        for pair in ALL_PAIRS[1:]
        for stream in (False, True)
    ]
    out += [Scenario("scaling", MAIN_PAIR, stream, SCALING_CONCURRENCY) for stream in (False, True)]
    return out
