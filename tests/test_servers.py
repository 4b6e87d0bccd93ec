"""The same app on the other ASGI servers `make bench` compares (uvicorn with uvloop and
httptools, granian), and warming up at start on each, Daphne included."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from django.test import AsyncClient

from proxy_site import warmup
from tests.conftest import JwtKeys, LiveProxy, World, ledger_rows, start_proxy, stop_proxy
from tests.support.mockserver import MockServer

GUARD_WARNING = "slow clients will NOT be cut off"


@pytest.fixture(scope="module", params=["uvicorn", "granian"])
def served(
    request: pytest.FixtureRequest,
    django_db_setup: None,
    tmp_path_factory: pytest.TempPathFactory,
    jwt_keys: JwtKeys,
) -> Iterator[LiveProxy]:
    proxy = start_proxy(
        tmp_dir=tmp_path_factory.mktemp(request.param), jwt_keys=jwt_keys, server=request.param
    )
    yield proxy
    stop_proxy(proxy)


def chat(proxy: LiveProxy, token: str, model: str, *, stream: bool) -> str:
    client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=token, max_retries=0)
    messages: Any = [{"role": "user", "content": "Say hello"}]
    if not stream:
        completion = client.chat.completions.create(model=model, messages=messages)
        return completion.choices[0].message.content or ""
    chunks = client.chat.completions.create(model=model, messages=messages, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.mark.parametrize("model", ["auto", "claude-haiku"])
def test_it_serves_answers_and_streams_on_another_server(
    served: LiveProxy, world: World, mock: MockServer, model: str
) -> None:
    token = world.token(world.alice)
    for stream in (False, True):
        assert chat(served, token, model, stream=stream) == mock.requests()[-1]["text_sent"]
    rows = ledger_rows(world.alice, 2)
    assert {row.status for row in rows} == {"ok"}
    assert {row.stream for row in rows} == {False, True}


def test_it_warms_up_before_the_server_listens(served: LiveProxy) -> None:
    log = served.log()
    warmed = re.search(r"warmed up in \d+ ms \(database \d+ ms, redis \d+ ms", log)
    assert warmed, log[-3000:]
    # uvicorn serves once the lifespan start-up event has been answered, and says so.
    started = re.search(r"Application startup complete", log)
    if started is not None:
        assert warmed.start() < started.start(), log[-3000:]


def test_it_warns_once_that_slow_readers_are_not_cut_off(
    served: LiveProxy, world: World, mock: MockServer
) -> None:
    token = world.token(world.alice)
    for _ in range(2):
        chat(served, token, "auto", stream=True)
    # The slow-reader guard reads Daphne's internals: elsewhere it says so, once.
    assert served.log().count(GUARD_WARNING) == 1, served.log()[-3000:]


def test_it_warms_up_on_daphne_too(proxy: LiveProxy, world: World) -> None:
    chat(proxy, world.token(world.alice), "auto", stream=False)
    assert re.search(r"warmed up in \d+ ms \(database \d+ ms", proxy.log())
    assert GUARD_WARNING not in proxy.log()


@pytest.mark.core
@pytest.mark.django_db
async def test_it_is_not_ready_while_warming_up(monkeypatch: pytest.MonkeyPatch) -> None:
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    monkeypatch.setattr(warmup, "_started", never)
    monkeypatch.setattr(warmup, "_done", False)
    response = await AsyncClient().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["warm-up"] == "warming"
    assert "warm-up" in response.json()["failing"]
    monkeypatch.setattr(warmup, "_done", True)
    response = await AsyncClient().get("/readyz")
    assert "warm-up" not in response.json()["checks"]


@pytest.mark.core
def test_it_freezes_what_start_up_made_out_of_the_collectors_view() -> None:
    import gc

    threshold = gc.get_threshold()
    try:
        warmup._settle_the_heap()
        assert gc.get_freeze_count() > 10_000  # the modules, settings and contexts
        assert gc.get_threshold() == warmup.GC_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
