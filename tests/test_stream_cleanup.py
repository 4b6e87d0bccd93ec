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


async def test_it_leaves_a_relay_that_ran_alone() -> None:
    meter = FakeMeter()
    meter.settled = True  # the relay's own finally settled it
    opened = FakeOpened()
    _event_stream(never_pulled(), meter, opened=opened).close()  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert meter.status is None and not opened.response.closed
