"""The official OpenAI SDK through a live Daphne proxy to both provider kinds."""

from __future__ import annotations

import time

import openai
import pytest

from tests.conftest import LiveProxy, World, eventually
from tests.support.mockserver import MockServer
from usage.models import UsageRecord

pytestmark = pytest.mark.core


def client_for(proxy: LiveProxy, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.openai_base_url, api_key=token, max_retries=0)


@pytest.mark.parametrize("model", ["auto", "claude-haiku"])
def test_it_completes_a_chat(proxy: LiveProxy, world: World, mock: MockServer, model: str) -> None:
    client = client_for(proxy, world.token(world.alice))
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello"}]
    )
    sent = mock.requests()[-1]
    assert completion.choices[0].message.content == sent["text_sent"]
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == sent["usage"]["output_tokens"] == 8
    assert completion.usage.prompt_tokens == sent["usage"]["input_tokens"]


@pytest.mark.parametrize("model", ["auto", "claude-haiku"])
def test_it_streams_a_chat(proxy: LiveProxy, world: World, mock: MockServer, model: str) -> None:
    client = client_for(proxy, world.token(world.alice))
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    sent = mock.requests()[-1]
    assert text == sent["text_sent"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    # The proxy asked the provider for usage; the client did not, so it gets no usage chunk.
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


@pytest.mark.parametrize("model", ["auto", "claude-haiku"])
def test_it_passes_each_chunk_on_before_the_next_is_sent(
    proxy: LiveProxy, world: World, mock: MockServer, model: str
) -> None:
    mock.configure(chunk_delay=0.4, chunks=3)
    client = client_for(proxy, world.token(world.alice))
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello"}], stream=True
    )
    first_content_at = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first_content_at = time.time()
            break
    stream.close()
    assert first_content_at is not None
    chunk_times = mock.requests()[-1]["chunk_times"]
    # The first piece reached the client before the provider even sent the second one.
    assert len(chunk_times) == 1 or first_content_at < chunk_times[1]


@pytest.mark.parametrize("model", ["auto", "claude-haiku"])
def test_it_records_the_providers_usage(
    proxy: LiveProxy, world: World, mock: MockServer, model: str
) -> None:
    client = client_for(proxy, world.token(world.alice))
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "a b c"}])
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "d e f g"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0].choices == []

    sent = mock.requests()[-2:]

    def both_settled() -> list[UsageRecord]:
        records = list(UsageRecord.objects.order_by("created_at"))
        assert len(records) == 2  # the stream settles just after its last event
        return records

    records = eventually(both_settled)
    assert [(r.input_tokens, r.output_tokens) for r in records] == [
        (s["usage"]["input_tokens"], s["usage"]["output_tokens"]) for s in sent
    ]
    assert usage_chunks[0].usage is not None
    assert usage_chunks[0].usage.completion_tokens == sent[1]["usage"]["output_tokens"]
    assert [r.stream for r in records] == [False, True]
    assert all(r.tenant_id == world.alice.id and r.usage_reported for r in records)
    assert all(r.status == UsageRecord.Status.OK for r in records)
