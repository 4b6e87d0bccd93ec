"""Thinking in tool loops, through the live proxy: signatures kept intact turn after turn.

The mock (devtools/mockprovider.py) signs each thinking block it writes and, like Anthropic,
refuses a later turn whose thinking text or signature changed, or whose last tool-calling
assistant turn lost its thinking block while thinking is on. So a loop that completes proves
the blocks went out and came back byte for byte.
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import LiveProxy, World
from tests.support.mockserver import MockServer

pytestmark = [
    pytest.mark.core,
    pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning"),
]

THOUGHT = "The user wants the weather, so I call the tool first."
WEATHER = {"name": "get_weather", "arguments": {"city": "Paris"}}
ASK = "What is the weather in Paris?"


def test_it_keeps_anthropic_signatures_through_a_tool_loop(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    mock.configure(thinking=THOUGHT, tool_calls=[WEATHER])
    client = anthropic.Anthropic(base_url=proxy.url, api_key=world.token(world.bob), max_retries=0)
    tools: Any = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    first = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=4000,
        thinking=thinking,
        tools=tools,
        messages=[{"role": "user", "content": ASK}],
    )
    kinds = [block.type for block in first.content]
    assert kinds == ["thinking", "tool_use"]
    call = first.content[1]
    assert call.type == "tool_use"
    history: Any = [
        {"role": "user", "content": ASK},
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C"}],
        },
    ]
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=4000, thinking=thinking, tools=tools, messages=history
    ) as stream:
        final = stream.get_final_message()
    assert final.content[-1].type == "text"
    assert "Tool results: 18C" in final.content[-1].text
    # And a thinking block altered on the way is refused, as Anthropic refuses it.
    history[1]["content"][0]["thinking"] = "Something else."
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(
            model="claude-sonnet-4-5", max_tokens=4000, thinking=thinking, tools=tools,
            messages=history,
        )  # fmt: skip


@pytest.mark.parametrize("send_back", [True, False])
def test_it_carries_an_openai_clients_reasoning_through_an_anthropic_tool_loop(
    proxy: LiveProxy, world: World, mock: MockServer, send_back: bool
) -> None:
    """An OpenAI client on an Anthropic route: the signed thinking comes back as
    ``thinking_blocks``; sent back, it keeps thinking on in the next turn. Left out (the
    OpenAI Agents SDK and LangChain do not know the field), the next turn is answered without
    thinking rather than refused."""
    mock.configure(thinking=THOUGHT, tool_calls=[WEATHER])
    client = openai.OpenAI(
        base_url=proxy.openai_base_url, api_key=world.token(world.bob), max_retries=0
    )
    tools: Any = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    ]
    first = client.chat.completions.create(
        model="claude-sonnet-4-5",
        max_tokens=4000,
        reasoning_effort="low",
        tools=tools,
        messages=[{"role": "user", "content": ASK}],
    )
    message = first.choices[0].message
    extra = message.model_extra or {}
    assert extra["reasoning_content"] == THOUGHT
    (block,) = extra["thinking_blocks"]
    assert block["type"] == "thinking" and block["signature"]
    assert message.tool_calls is not None
    call = message.tool_calls[0]
    assistant: dict[str, Any] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [call.model_dump()],
    }
    if send_back:
        assistant["thinking_blocks"] = extra["thinking_blocks"]
    history: Any = [
        {"role": "user", "content": ASK},
        assistant,
        {"role": "tool", "tool_call_id": call.id, "content": "18C"},
    ]
    second = client.chat.completions.create(
        model="claude-sonnet-4-5",
        max_tokens=4000,
        reasoning_effort="low",
        tools=tools,
        messages=history,
    )
    assert "Tool results: 18C" in (second.choices[0].message.content or "")
    sent = mock.requests()[-1]["body"]
    assert ("thinking" in sent) is send_back
    if send_back:
        assert sent["messages"][1]["content"][0] == {
            "type": "thinking",
            "thinking": THOUGHT,
            "signature": block["signature"],
        }
