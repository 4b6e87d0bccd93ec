"""An incremental parser for server-sent events, as providers stream them.

It keeps each event's raw bytes so an OpenAI-compatible stream can be passed on to the
client byte for byte, and exposes the parsed ``event`` and ``data`` fields for the proxy's
own reading (usage, finish reason, translation).
"""

from __future__ import annotations

from dataclasses import dataclass


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
    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buffer = self._buffer + chunk
        if b"\r" in buffer:
            # Rare (CRLF framing); normalise so one rule finds event boundaries. A \r that
            # ends the chunk waits: the next chunk may begin with its \n.
            held = buffer.endswith(b"\r")
            body = (buffer[:-1] if held else buffer).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            buffer = body + b"\r" if held else body
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
        self._buffer = buffer[start:]
        return events
