"""Reading a provider's answer within bounds: decoded step by step, capped in size.

httpx decodes ``Content-Encoding`` itself, but inflates each raw chunk in one go: one 64 KiB
read of a gzip bomb becomes 64 MiB at once, and the whole answer is held before anyone can
look at its size, all while the event loop serves nobody else. So the proxy reads the raw
bytes (``Response.aiter_raw``) and inflates them here with zlib's ``max_length``: at most
:data:`STEP` bytes per step, handing the event loop back between steps, so that a hostile
answer costs at most the caller's cap in memory and never stalls the other requests.

Identity-encoded answers (most streams) pass through as httpx reads them, with no extra work.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Iterator

import httpx

from core.errors import ProxyError

# What the proxy asks providers for (core/http.py). Not httpx's default, which also offers
# br and zstd when their packages happen to be installed: answers this module would refuse.
# Not identity either: providers compress big JSON answers, which saves real bandwidth, and
# asking for identity would protect nothing, since a hostile provider can send a bomb
# whatever it was asked; decoding within bounds is what protects.
ACCEPT_ENCODING = "gzip, deflate"

# Output bytes per inflate step: big enough that a normal compressed answer is one or a few
# steps, small enough (a fraction of a millisecond of zlib) that the event loop never waits.
STEP = 256 * 1024

_GZIP = zlib.MAX_WBITS | 16
_ZLIB = zlib.MAX_WBITS
_RAW_DEFLATE = -zlib.MAX_WBITS


def undecodable() -> ProxyError:
    # Another route may well answer properly: transient, like a provider's 5xx.
    return ProxyError(
        502,
        "The provider's answer could not be decoded.",
        code="upstream_bad_encoding",
        transient=True,
    )


def too_large(what: str, limit: int) -> ProxyError:
    return ProxyError(
        502,
        f"The provider sent {what} larger than the proxy's limit of {limit} bytes.",
        code="upstream_answer_too_large",
    )


def content_encoding(headers: httpx.Headers) -> str:
    """The answer's encoding, "identity", "gzip" or "deflate"; any other is ProxyError(502).

    Only one coding is accepted: the proxy never asks for a chain of them (a gzip inside a
    gzip is a bomb inside a bomb), and never for one it cannot decode within bounds.
    """
    value = headers.get("content-encoding", "").strip().lower()
    if value in ("", "identity"):
        return "identity"
    if value in ("gzip", "x-gzip"):
        return "gzip"
    if value == "deflate":
        return "deflate"
    raise undecodable()


class Inflater:
    """One gzip or deflate body, inflated incrementally and never more than STEP at a time."""

    def __init__(self, encoding: str) -> None:
        self._inflate = zlib.decompressobj(_GZIP if encoding == "gzip" else _ZLIB)
        # HTTP's "deflate" is a zlib stream, but some servers send raw deflate (as httpx
        # allows too): the input is kept until its header proves it one or the other.
        self._undecided: bytes | None = b"" if encoding == "deflate" else None

    def pieces(self, data: bytes) -> Iterator[bytes]:
        """What ``data`` inflates to, in pieces of at most STEP bytes."""
        inflate = self._inflate
        if inflate.eof:
            # Bytes after the end of the body: ignored, as httpx does (and not kept: zlib
            # would pile them up in unused_data).
            return
        try:
            try:
                piece = inflate.decompress(data, STEP)
            except zlib.error:
                if self._undecided is None:
                    raise
                inflate = self._inflate = zlib.decompressobj(_RAW_DEFLATE)
                data, self._undecided = self._undecided + data, None
                piece = inflate.decompress(data, STEP)
            seen = self._undecided
            if seen is not None:
                # zlib checks its two-byte header first: past that, it is a zlib stream.
                seen += data
                self._undecided = None if len(seen) >= 2 else seen
            while True:
                if piece:
                    yield piece
                # A full piece may leave output pending even with all input taken: only a
                # short one says this input is done.
                if inflate.eof or (len(piece) < STEP and not inflate.unconsumed_tail):
                    return
                piece = inflate.decompress(inflate.unconsumed_tail, STEP)
        except zlib.error:
            raise undecodable() from None


async def _ainflated(chunks: AsyncIterator[bytes], inflater: Inflater) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        stepped = False
        for piece in inflater.pieces(chunk):
            if stepped:
                # A raw chunk can inflate to a thousand times its size: between its steps,
                # the event loop serves everyone else.
                await asyncio.sleep(0)
            stepped = True
            yield piece


def decoded(response: httpx.Response) -> AsyncIterator[bytes]:
    """The answer's body, decoded, in pieces of at most STEP bytes (or as read, if identity).

    Raises ProxyError(502) for an encoding the proxy does not decode (at once) or a body that
    does not decode (when it gets there).
    """
    encoding = content_encoding(response.headers)
    if encoding == "identity":
        return response.aiter_raw()
    return _ainflated(response.aiter_raw(), Inflater(encoding))


async def aread_capped(response: httpx.Response, *, limit: int, truncate: bool = False) -> bytes:
    """The answer's decoded body, refused (ProxyError 502) once it passes ``limit`` bytes.

    With ``truncate``, its first ``limit`` bytes instead (an error body, read only for its
    message). Past the limit nothing more is read: the caller closes the response.
    """
    if not truncate and content_encoding(response.headers) == "identity":
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large("an answer", limit)  # said so up front: nothing to read
    # One growing buffer rather than a list of pieces: past the allocator's mmap threshold
    # it is a single mapping, returned to the system whole when the answer is done.
    body = bytearray()
    async for piece in decoded(response):
        if len(body) + len(piece) > limit:
            if not truncate:
                raise too_large("an answer", limit)
            body += piece[: limit - len(body)]
            break
        body += piece
    return bytes(body)
