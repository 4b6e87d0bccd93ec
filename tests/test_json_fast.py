"""The fast JSON parse of provider answers and stream events (routing/codecs/base.py
``loads``) accepts exactly what ``json.loads`` does, and gives the same values."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing.codecs.base import loads
from usage.ledger import record_to_json

pytestmark = pytest.mark.core

_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@given(_values)
def test_it_parses_what_json_loads_parses_to_the_same_values(value: Any) -> None:
    text = json.dumps(value)  # NaN, Infinity, lone surrogates (\\ud800) and big integers too
    assert _same(loads(text), json.loads(text))
    assert _same(loads(text.encode()), json.loads(text.encode()))


@pytest.mark.parametrize(
    "text",
    ['{"a": 1', "", "nul", '{"a": 1} x', b"\xff\xfe{\x00}\x00", "[1,]", "{'a': 1}"],
)
def test_it_refuses_what_json_loads_refuses(text: str | bytes) -> None:
    try:
        expected = json.loads(text)
    except ValueError:
        expected = None
    assert loads(text) == expected


def test_it_encodes_a_ledger_record_that_reads_back_the_same() -> None:
    record = {"request_id": "req_1", "model": "kimi ☃ ü", "tokens": 2**62, "ok": True, "x": None}
    assert json.loads(record_to_json(record)) == record
