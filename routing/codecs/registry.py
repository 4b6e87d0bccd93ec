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
from routing.codecs.anthropic_messages import MessagesRequest, parse_messages_request
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
from routing.codecs.translate import Translation


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

    def provider_codec(self, kind: str) -> ProviderCodec[ChatRequest]:
        return self._providers[kind]

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

    def provider_codec(self, kind: str) -> ProviderCodec[MessagesRequest]:
        return self._providers[kind]

    def error_response(self, error: ProxyError) -> HttpResponse:
        return error_response(error, anthropic=True)

    def stream_error(self, error: ProxyError) -> bytes:
        # Anthropic's own mid-stream failure: `event: error`, and no message_stop after it.
        return b"event: error\ndata: " + dumps(error_body(error, anthropic=True)) + b"\n\n"


OPENAI_CHAT: ClientCodec[ChatRequest] = OpenAIChatCodec()
ANTHROPIC_MESSAGES: ClientCodec[MessagesRequest] = AnthropicMessagesCodec()

__all__ = [
    "ANTHROPIC_MESSAGES",
    "OPENAI_CHAT",
    "Call",
    "ClientCodec",
    "ProviderCodec",
    "StreamTranslator",
    "UpstreamRequest",
    "Usage",
]
