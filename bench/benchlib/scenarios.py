"""What the benchmark sends: request specs, built once per scenario, and the scenarios."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .common import HOST, MOCK_KEY

ANTHROPIC_VERSION = "2023-06-01"

# A content piece as it appears on the wire. The frames that precede the content (OpenAI's
# role chunk, Anthropic's content_block_start) carry an empty string, so "a non-empty string"
# is exactly "the first content chunk". Both the mock and the proxy write compact JSON.
OPENAI_CONTENT = re.compile(rb'"content":"[^"]')
ANTHROPIC_CONTENT = re.compile(rb'"text":"[^"]')

MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Say hello in a few words."},
]


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


def _json_body(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def openai_spec(
    *, port: int, bearer: str, model: str, stream: bool, messages: Any = MESSAGES
) -> RequestSpec:
    """An OpenAI chat-completions request: to the mock directly, or to the proxy.

    `messages` is only ever something else for the soak's request the proxy must refuse.
    """
    body = {"model": model, "messages": messages, "stream": stream}
    return RequestSpec(
        port=port,
        path="/v1/chat/completions",
        headers={
            "Authorization": f"Bearer {bearer}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
        },
        body=_json_body(body),
        stream=stream,
        first_content=OPENAI_CONTENT if stream else None,
        complete=b"data: [DONE]" if stream else b'"usage"',
    )


def anthropic_spec(*, port: int, stream: bool) -> RequestSpec:
    """The Anthropic Messages request equivalent to the proxy's translated one, to the mock."""
    body: dict[str, Any] = {
        "model": "mock-claude",
        "system": MESSAGES[0]["content"],
        "messages": MESSAGES[1:],
        # What the proxy sends when the client names no limit (the tier's default_max_tokens).
        "max_tokens": 4096,
    }
    if stream:
        body["stream"] = True
    return RequestSpec(
        port=port,
        path="/v1/messages",
        headers={
            "x-api-key": MOCK_KEY,
            "anthropic-version": ANTHROPIC_VERSION,
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
        },
        body=_json_body(body),
        stream=stream,
        first_content=ANTHROPIC_CONTENT if stream else None,
        complete=b"message_stop" if stream else b'"usage"',
    )


@dataclass(frozen=True)
class Endpoint:
    """A second proxy to measure beside the current one: where it listens, and its token."""

    port: int
    token: str


@dataclass(frozen=True)
class Scenario:
    route: str  # "openai" or "anthropic": the kind of provider the proxy routes to
    stream: bool
    concurrency: int

    @property
    def label(self) -> str:
        return f"{self.route} {'stream' if self.stream else 'non-stream'} c={self.concurrency}"

    def specs(
        self, *, mock_port: int, proxy_port: int, token: str, baseline: Endpoint | None = None
    ) -> dict[str, RequestSpec]:
        model = "auto" if self.route == "openai" else "claude-bench"
        if self.route == "openai":
            direct = openai_spec(
                port=mock_port, bearer=MOCK_KEY, model="mock-model", stream=self.stream
            )
        else:
            direct = anthropic_spec(port=mock_port, stream=self.stream)
        specs = {
            "direct": direct,
            "proxy": openai_spec(port=proxy_port, bearer=token, model=model, stream=self.stream),
        }
        if baseline is not None:
            # Byte for byte the current proxy's request but for the port and the token, so
            # the two proxies are asked exactly the same thing.
            specs["baseline"] = openai_spec(
                port=baseline.port, bearer=baseline.token, model=model, stream=self.stream
            )
        return specs


def scenarios() -> list[Scenario]:
    """The same set in every mode: --quick only shortens the rounds."""
    return [
        Scenario("openai", False, 1),
        Scenario("openai", False, 32),
        Scenario("openai", True, 1),
        Scenario("openai", True, 32),
        Scenario("anthropic", False, 1),
        Scenario("anthropic", True, 1),
    ]
