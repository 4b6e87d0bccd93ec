"""Codecs: one per client wire format, and per (client format, provider kind) pair.

See routing/codecs/base.py for the interface. Today the proxy speaks OpenAI chat
completions to its clients (``OPENAI_CHAT``); towards an OpenAI-kind provider that is plain
pass-through, towards Anthropic a translation.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse

from core.errors import ProxyError, error_body, error_response
from routing.codecs.anthropic_from_chat import AnthropicFromChat
from routing.codecs.base import (
    Call,
    ClientCodec,
    ProviderCodec,
    StreamTranslator,
    UpstreamRequest,
    Usage,
    sse_data,
)
from routing.codecs.openai_chat import ChatRequest, parse_chat_request
from routing.codecs.openai_passthrough import OpenAIPassthrough


class OpenAIChatCodec:
    """Clients speaking OpenAI chat completions (`POST /v1/chat/completions`)."""

    name = "openai-chat"

    def __init__(self) -> None:
        self._providers: dict[str, ProviderCodec[ChatRequest]] = {
            "openai": OpenAIPassthrough(),
            "anthropic": AnthropicFromChat(),
        }

    def parse(self, raw: bytes) -> ChatRequest:
        return parse_chat_request(
            raw,
            max_messages=settings.PROXY_MAX_MESSAGES,
            extra_fields=settings.PROXY_EXTRA_CHAT_FIELDS,
        )

    def provider_codec(self, kind: str) -> ProviderCodec[ChatRequest]:
        return self._providers[kind]

    def error_response(self, error: ProxyError) -> HttpResponse:
        return error_response(error)

    def stream_error(self, error: ProxyError) -> bytes:
        # OpenAI's own mid-stream failure: an error event, and no [DONE] after it.
        return sse_data(error_body(error))


OPENAI_CHAT: ClientCodec[ChatRequest] = OpenAIChatCodec()

__all__ = [
    "OPENAI_CHAT",
    "Call",
    "ClientCodec",
    "ProviderCodec",
    "StreamTranslator",
    "UpstreamRequest",
    "Usage",
]
