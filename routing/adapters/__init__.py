"""Provider adapters: how a chat request goes out and how the answer comes back.

The proxy speaks OpenAI chat completions to its clients. An adapter turns that request into
the provider's wire format, and turns the provider's answer (a JSON body, or an SSE stream
event by event) back into OpenAI's, reading the token usage on the way.
"""

from __future__ import annotations

from routing.adapters.anthropic import AnthropicAdapter
from routing.adapters.base import Adapter, StreamTranslator, Usage
from routing.adapters.openai import OpenAIAdapter

_ADAPTERS: dict[str, Adapter] = {"openai": OpenAIAdapter(), "anthropic": AnthropicAdapter()}


def adapter_for(kind: str) -> Adapter:
    return _ADAPTERS[kind]


__all__ = ["Adapter", "StreamTranslator", "Usage", "adapter_for"]
