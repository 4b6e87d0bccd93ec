"""The client codecs, and the provider codec each uses per provider kind.

See routing/codecs/base.py for the interface the pipeline sees and routing/codecs/model.py
for the internal model translations go through. Clients speak OpenAI chat completions
(``OPENAI_CHAT``) or Anthropic Messages (``ANTHROPIC_MESSAGES``); towards a provider of the
same format the request passes through, towards the other it is translated.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.conf import settings
from django.http import HttpResponse

from core.errors import ProxyError, error_body, error_response
from routing.codecs.anthropic_count import CountTokensPassthrough, Uncountable
from routing.codecs.anthropic_messages import (
    MessagesRequest,
    parse_count_tokens_request,
    parse_messages_request,
)
from routing.codecs.anthropic_passthrough import AnthropicPassthrough
from routing.codecs.base import (
    Call,
    ClientCodec,
    ProviderCodec,
    StreamTranslator,
    UpstreamRequest,
    Usage,
    dumps,
    sse_data,
)
from routing.codecs.chat_client import CHAT_CLIENT
from routing.codecs.chat_provider import CHAT_PROVIDER
from routing.codecs.messages_client import MESSAGES_CLIENT
from routing.codecs.messages_provider import MESSAGES_PROVIDER
from routing.codecs.openai_chat import ChatRequest, parse_chat_request
from routing.codecs.openai_passthrough import OpenAIPassthrough
from routing.codecs.responses_client import RESPONSES_CLIENT
from routing.codecs.responses_passthrough import ResponsesPassthrough
from routing.codecs.responses_request import ResponsesRequest, parse_responses_request
from routing.codecs.translate import Translation
from routing.context import Upstream


class OpenAIChatCodec:
    """Clients speaking OpenAI chat completions (`POST /v1/chat/completions`)."""

    name = "openai-chat"

    def __init__(self) -> None:
        self._providers: dict[str, ProviderCodec[ChatRequest]] = {
            "openai": OpenAIPassthrough(),
            "anthropic": Translation(CHAT_CLIENT, MESSAGES_PROVIDER),
        }

    def parse(self, raw: bytes, headers: Mapping[str, str]) -> ChatRequest:
        return parse_chat_request(raw, max_messages=settings.PROXY_MAX_MESSAGES)

    def provider_codec(self, provider: Upstream) -> ProviderCodec[ChatRequest]:
        return self._providers[provider.kind]

    def error_response(self, error: ProxyError) -> HttpResponse:
        return error_response(error)

    def stream_error(self, error: ProxyError) -> bytes:
        # OpenAI's own mid-stream failure: an error event, and no [DONE] after it.
        return sse_data(error_body(error))


class AnthropicMessagesCodec:
    """Clients speaking Anthropic Messages (`POST /v1/messages`)."""

    name = "anthropic-messages"

    def __init__(self) -> None:
        self._providers: dict[str, ProviderCodec[MessagesRequest]] = {
            "anthropic": AnthropicPassthrough(),
            "openai": Translation(MESSAGES_CLIENT, CHAT_PROVIDER),
        }

    def parse(self, raw: bytes, headers: Mapping[str, str]) -> MessagesRequest:
        return parse_messages_request(
            raw, headers=headers, max_messages=settings.PROXY_MAX_MESSAGES
        )

    def provider_codec(self, provider: Upstream) -> ProviderCodec[MessagesRequest]:
        return self._providers[provider.kind]

    def error_response(self, error: ProxyError) -> HttpResponse:
        return error_response(error, anthropic=True)

    def stream_error(self, error: ProxyError) -> bytes:
        # Anthropic's own mid-stream failure: `event: error`, and no message_stop after it.
        return b"event: error\ndata: " + dumps(error_body(error, anthropic=True)) + b"\n\n"


class AnthropicCountTokensCodec(AnthropicMessagesCodec):
    """Anthropic clients asking how many tokens a request would take
    (`POST /v1/messages/count_tokens`): Anthropic routes are asked."""

    name = "anthropic-count-tokens"

    def __init__(self) -> None:
        self._counting: ProviderCodec[MessagesRequest] = CountTokensPassthrough()
        self._uncountable: ProviderCodec[MessagesRequest] = Uncountable()

    def parse(self, raw: bytes, headers: Mapping[str, str]) -> MessagesRequest:
        return parse_count_tokens_request(
            raw, headers=headers, max_messages=settings.PROXY_MAX_MESSAGES
        )

    def provider_codec(self, provider: Upstream) -> ProviderCodec[MessagesRequest]:
        return self._counting if provider.kind == "anthropic" else self._uncountable


class OpenAIResponsesCodec:
    """Clients speaking the OpenAI Responses API (`POST /v1/responses`): Codex, the OpenAI
    Agents SDK. Passed through to providers that serve it (Provider.responses_api),
    translated for other OpenAI-compatible ones (chat completions) and for Anthropic."""

    name = "openai-responses"

    def __init__(self) -> None:
        self._native: ProviderCodec[ResponsesRequest] = ResponsesPassthrough()
        self._providers: dict[str, ProviderCodec[ResponsesRequest]] = {
            "openai": Translation(RESPONSES_CLIENT, CHAT_PROVIDER),
            "anthropic": Translation(RESPONSES_CLIENT, MESSAGES_PROVIDER),
        }

    def parse(self, raw: bytes, headers: Mapping[str, str]) -> ResponsesRequest:
        return parse_responses_request(
            raw, headers=headers, max_messages=settings.PROXY_MAX_MESSAGES
        )

    def provider_codec(self, provider: Upstream) -> ProviderCodec[ResponsesRequest]:
        if provider.kind == "openai" and provider.responses_api:
            return self._native
        return self._providers[provider.kind]

    def error_response(self, error: ProxyError) -> HttpResponse:
        return error_response(error)

    def stream_error(self, error: ProxyError) -> bytes:
        # Only before any event of the provider's (the stream held open by keep-alives):
        # later failures are the translator's, numbered after what was sent.
        event = {
            "type": "error",
            "code": "rate_limit_exceeded" if error.status == 429 else "server_error",
            "message": error.message,
            "param": None,
            "sequence_number": 0,
        }
        return b"event: error\ndata: " + dumps(event) + b"\n\n"


OPENAI_CHAT: ClientCodec[ChatRequest] = OpenAIChatCodec()
ANTHROPIC_MESSAGES: ClientCodec[MessagesRequest] = AnthropicMessagesCodec()
ANTHROPIC_COUNT_TOKENS: ClientCodec[MessagesRequest] = AnthropicCountTokensCodec()
OPENAI_RESPONSES: ClientCodec[ResponsesRequest] = OpenAIResponsesCodec()

__all__ = [
    "ANTHROPIC_COUNT_TOKENS",
    "ANTHROPIC_MESSAGES",
    "OPENAI_CHAT",
    "OPENAI_RESPONSES",
    "Call",
    "ClientCodec",
    "ProviderCodec",
    "StreamTranslator",
    "UpstreamRequest",
    "Usage",
]
