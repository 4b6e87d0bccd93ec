"""A stream whose client left before its first event still closes the provider and settles."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from routing.views import _event_stream

pytestmark = pytest.mark.core


class FakeMeter:
    def __init__(self) -> None:
        self.settled = False
        self.status: str | None = None

    def failed(self, *, status: str, http_status: int) -> None:
        self.status = status

    async def asettle(self) -> None:
        self.settled = True


class FakeResponse:
    closed = False

    async def aclose(self) -> None:
        self.closed = True


class FakeOpened:
    def __init__(self) -> None:
        self.response = FakeResponse()


async def never_pulled() -> AsyncIterator[bytes]:
    raise AssertionError("the relay must not run")
    yield b""  # pragma: no cover


async def test_it_settles_and_closes_a_stream_that_never_started() -> None:
    meter, opened = FakeMeter(), FakeOpened()
    response = _event_stream(never_pulled(), meter, opened=opened)  # type: ignore[arg-type]
    response.close()  # what the handler does once the client is gone
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert meter.settled and meter.status == "client_disconnected"
    assert opened.response.closed


async def test_it_cancels_an_answer_still_being_opened() -> None:
    meter = FakeMeter()
    opening: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    response = _event_stream(never_pulled(), meter, opening=opening)  # type: ignore[arg-type]
    response.close()
    await asyncio.sleep(0)
    assert opening.cancelled() and meter.settled


async def test_it_lets_a_relay_that_started_settle_in_its_own_finally() -> None:
    meter, opened = FakeMeter(), FakeOpened()

    async def relay() -> AsyncIterator[bytes]:
        try:
            yield b"data: one\n\n"
            yield b"data: two\n\n"
        finally:
            meter.status = "billed by the relay"
            await meter.asettle()

    events = relay()
    response = _event_stream(events, meter, opened=opened)  # type: ignore[arg-type]
    assert await anext(aiter(response)) == b"data: one\n\n"
    response.close()  # the client left mid-stream; Django closed only its own wrapper
    for _ in range(3):
        await asyncio.sleep(0)
    assert meter.settled and meter.status == "billed by the relay"
    assert not opened.response.closed  # the relay's finally owns that (here: a fake relay)
