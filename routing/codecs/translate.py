"""A translation: a client's wire format towards a provider speaking another one.

It is the two halves of routing/codecs/model.py put together: the client side decodes the
request into the internal model and the provider side encodes that for the provider; the
provider side decodes the answer (or each stream event) into the internal model and the
client side encodes that for the client. Neither half knows the other, so each new format
is one client side and one provider side, not one translation per pair.
"""

from __future__ import annotations

from typing import Any

from core.errors import ProxyError
from routing.codecs.base import UpstreamRequest, Usage
from routing.codecs.model import ClientSide, ProviderSide, StreamDecoder, StreamEncoder
from routing.context import Route
from routing.sse import SSEEvent


class TranslatedStream:
    """Provider events in, client bytes out; the bill reads the decoder's counts."""

    __slots__ = ("decoder", "encoder")

    def __init__(self, decoder: StreamDecoder, encoder: StreamEncoder) -> None:
        self.decoder, self.encoder = decoder, encoder

    @property
    def usage(self) -> Usage:
        return self.decoder.usage

    @property
    def content_deltas(self) -> int:
        return self.decoder.content_deltas

    @property
    def complete(self) -> bool:
        return self.decoder.complete

    def error_event(self, error: ProxyError) -> bytes | None:
        return self.encoder.error_event(error)

    def feed(self, event: SSEEvent) -> bytes:
        events = self.decoder.feed(event)
        if not events:
            return b""
        encode = self.encoder.feed
        return b"".join(encode(internal) for internal in events)


class Translation:
    """A ProviderCodec for a client format the route's provider does not speak."""

    def __init__(self, client: ClientSide, provider: ProviderSide) -> None:
        self.client, self.provider = client, provider

    def build(self, *, route: Route, call: Any, max_tokens: int) -> UpstreamRequest:
        # Raises the 400 that names what this provider cannot be given; aopen then tries the
        # next route, which may speak the client's format.
        return self.provider.encode(self.client.decode(call), route=route, max_tokens=max_tokens)

    def completion(self, *, route: Route, call: Any, raw: bytes) -> tuple[bytes, Usage]:
        # Decoded again rather than kept from build(): a pure function of the request, and
        # the parsed call stays an immutable value the pipeline can hand around.
        answer = self.provider.decode_answer(raw, call=self.client.decode(call))
        return self.client.encode_answer(answer, call=call, model=route.model), answer.usage

    def stream(self, *, route: Route, call: Any) -> TranslatedStream:
        decoder = self.provider.decoder(call=self.client.decode(call))
        return TranslatedStream(decoder, self.client.encoder(call=call, model=route.model))
