"""``POST /v1/messages/count_tokens`` on Anthropic routes: the question, as asked, and its count.

The body goes to the provider's count endpoint as sent but for the model name, with the
client's ``anthropic-version`` and (allowed) betas; only the count comes back. Counting is
free at Anthropic, so nothing is reserved or billed, but it is a call on a pooled key: the
pipeline admits it against the tenant's rate and concurrency limits and the ledger keeps it,
at no cost (routing/pipeline.py ``acount_tokens``).
"""

from __future__ import annotations

import json

from django.conf import settings

from core.errors import ProxyError
from routing.codecs.anthropic_messages import MessagesRequest
from routing.codecs.base import StreamTranslator, UpstreamRequest, Usage, dumps
from routing.context import Route


def anthropic_headers(call: MessagesRequest) -> dict[str, str]:
    """What an Anthropic client's request takes to an Anthropic route: its API version, and
    the betas it asked for that PROXY_ANTHROPIC_BETAS allows (all of them when unset)."""
    headers = {"anthropic-version": call.version or settings.PROXY_ANTHROPIC_VERSION}
    allowed: frozenset[str] | None = settings.PROXY_ANTHROPIC_BETAS
    betas = [beta for beta in call.betas if allowed is None or beta in allowed]
    if betas:
        headers["anthropic-beta"] = ",".join(betas)
    return headers


class CountTokensPassthrough:
    def build(self, *, route: Route, call: MessagesRequest, max_tokens: int) -> UpstreamRequest:
        payload = {**call.body, "model": route.upstream_model}
        url = f"{route.provider.base_url}/v1/messages/count_tokens"
        return UpstreamRequest(url, payload, anthropic_headers(call))

    def completion(self, *, route: Route, call: MessagesRequest, raw: bytes) -> tuple[bytes, Usage]:
        # Only the count is passed on: nothing else of the provider's answer reaches a tenant.
        try:
            count = json.loads(raw).get("input_tokens")
        except (ValueError, AttributeError):
            count = None
        if type(count) is not int or count < 0:
            raise ProxyError(502, "The provider sent a malformed response.", code="upstream_error")
        return dumps({"input_tokens": count}), Usage(reported=True)

    def stream(self, *, route: Route, call: MessagesRequest) -> StreamTranslator:
        raise AssertionError("a token count is never streamed")


class Uncountable:
    """A provider kind with no count endpoint: the pipeline answers those from its estimate
    before any route is tried, so this only keeps such a route out of a failover."""

    def build(self, *, route: Route, call: MessagesRequest, max_tokens: int) -> UpstreamRequest:
        raise ProxyError(400, "This route cannot count tokens.", code="unsupported_for_provider")

    def completion(self, *, route: Route, call: MessagesRequest, raw: bytes) -> tuple[bytes, Usage]:
        raise AssertionError("never built")

    def stream(self, *, route: Route, call: MessagesRequest) -> StreamTranslator:
        raise AssertionError("never built")
