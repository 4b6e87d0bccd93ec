"""An incremental parser for server-sent events, as providers stream them.

It keeps each event's raw bytes so an OpenAI-compatible stream can be passed on to the
client byte for byte, and exposes the parsed ``event`` and ``data`` fields for the proxy's
own reading (usage, finish reason, translation).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.decoding import too_large


@dataclass(frozen=True, slots=True)
class SSEEvent:
    raw: bytes  # the event as received, terminator included
    event: str | None
    data: str | None  # None for comment-only events (": keep-alive")


def _parse(block: bytes) -> tuple[str | None, str | None]:
    event: str | None = None
    data_lines: list[str] = []
    # Split on \n only: str.splitlines() would also split on U+2028, U+2029 and U+0085,
    # which JSON strings may carry raw.
    for line in block.decode("utf-8", errors="replace").split("\n"):
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            data_lines.append(value)
        elif field == "event":
            event = value
    return event, ("\n".join(data_lines) if data_lines else None)


class SSEParser:
    """Events out of a provider's bytes, however they are cut.

    An event still incomplete is held as the pieces it came in, joined once when its end
    arrives: a long event (a 20 MB line) costs its size once, not once per chunk. What is
    held may not grow past ``max_event_bytes`` (None: no limit), ProxyError(502) instead; so
    no event is longer than that plus the one chunk that ends it.
    """

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self._held: list[bytes] = []  # the start of an event, as it came
        self._held_bytes = 0
        self._cr = False  # the last chunk ended with a \r, whose \n may begin the next
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if self._cr or b"\r" in chunk:
            # Rare (CRLF framing); normalise so one rule finds event boundaries. A \r that
            # ends the chunk waits: the next chunk may begin with its \n.
            if self._cr:
                chunk = b"\r" + chunk
            self._cr = chunk.endswith(b"\r")
            if self._cr:
                chunk = chunk[:-1]
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if not chunk:
            return []
        held = self._held
        if held and b"\n\n" not in chunk and not (held[-1][-1:] == b"\n" == chunk[:1]):
            # Still inside the held event: no boundary here, nor across the cut.
            held.append(chunk)
            self._held_bytes += len(chunk)
            if self._max is not None and self._held_bytes > self._max:
                raise too_large("an event", self._max)
            return []
        buffer = b"".join([*held, chunk]) if held else chunk
        events: list[SSEEvent] = []
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            block = buffer[start : end + 2]
            event, data = _parse(block)
            events.append(SSEEvent(block, event, data))
            start = end + 2
        rest = buffer[start:]
        self._held = [rest] if rest else []
        self._held_bytes = len(rest)
        if self._max is not None and self._held_bytes > self._max:
            raise too_large("an event", self._max)
        return events
