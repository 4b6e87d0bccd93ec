"""The SSE parser: event boundaries however the provider's bytes are cut."""

from __future__ import annotations

import pytest

from routing.sse import SSEParser

pytestmark = pytest.mark.core


def parse(*chunks: bytes) -> list[tuple[str | None, str | None]]:
    parser = SSEParser()
    events = []
    for chunk in chunks:
        events += [(e.event, e.data) for e in parser.feed(chunk)]
    return events


def test_it_finds_events_across_any_cut() -> None:
    stream = b'event: message_start\ndata: {"a": 1}\n\n: ping\n\ndata: [DONE]\n\n'
    expected = [("message_start", '{"a": 1}'), (None, None), (None, "[DONE]")]
    for cut in range(len(stream)):
        assert parse(stream[:cut], stream[cut:]) == expected


def test_it_reads_crlf_framing_even_when_a_chunk_ends_between_cr_and_lf() -> None:
    assert parse(b"event: x\r", b'\ndata: {"a":1}\r\n\r\n') == [("x", '{"a":1}')]
    assert parse(b"data: one\r\n\r", b"\ndata: two\r\n\r\n") == [(None, "one"), (None, "two")]


def test_it_keeps_unicode_line_separators_inside_data() -> None:
    text = 'data: {"text": "a\u2028b\u2029c\u0085d"}\n\n'
    assert parse(text.encode()) == [(None, '{"text": "a\u2028b\u2029c\u0085d"}')]


def test_it_joins_multi_line_data() -> None:
    assert parse(b"data: one\ndata: two\n\n") == [(None, "one\ntwo")]
