"""Property: whatever JSON a client sends, the proxy answers without a 500.

Hypothesis builds a few hundred chat-completions bodies, mostly well-formed in shape with
hostile values in every field, and sends them to the live proxy. Every answer is either a
success or an error in OpenAI's shape with a 4xx status; the process stays up.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import LiveProxy, World
from tests.support.mockserver import MockServer

pytestmark = pytest.mark.core

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
roles = st.sampled_from(["user", "assistant", "system", "developer", "tool", "wizard", ""]) | values
content = (
    st.text(max_size=60)
    | st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "image_url", "x"]), "text": values}
        ),
        max_size=3,
    )
    | values
)
messages = st.lists(st.fixed_dictionaries({"role": roles, "content": content}), max_size=4) | values
fields = {
    "model": st.sampled_from(["auto", "claude-haiku", "claude-sonnet-4-5", "nope"]) | values,
    "messages": messages,
    "stream": st.booleans() | values,
    "max_tokens": st.integers(min_value=-10, max_value=10**8) | values,
    "temperature": st.floats(min_value=-1, max_value=3) | values,
    "top_p": values,
    "n": values,
    "stop": values,
    "stream_options": values,
    "tools": values,
    "user": values,
    "seed": values,
}
bodies = st.fixed_dictionaries(
    {},
    optional={**fields, "surprise": values},
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies)
def test_it_never_answers_500(
    proxy: LiveProxy, world: World, mock: MockServer, body: dict[str, Any]
) -> None:
    response = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {world.token(world.alice)}"},
        timeout=30,
    )
    assert response.status_code < 500 or response.status_code in (502, 504), response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
    assert proxy.process.poll() is None
