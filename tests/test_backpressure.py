"""The slow-client guard's footing: the start-up check of the installed Daphne and Twisted,
the warnings when it cannot see a transport's buffer, and the guard on a real Twisted
buffer. (The guard against a live Daphne: tests/test_faults.py, the slow-reader test.)"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from importlib.metadata import version
from typing import Any

import daphne.server
import pytest
from django.test import override_settings
from twisted.internet.abstract import FileDescriptor

from proxy_site.backpressure import (
    VERIFIED_ON,
    ServerSupport,
    SlowClientGuard,
    check_support,
    installed_versions,
    unsent_bytes,
)
from proxy_site.handlers import ASGIApp, Message, Receive, Scope, Send

LOGGER = "proxy_site.backpressure"
SCOPE: Scope = {"type": "http", "path": "/v1/chat/completions"}
# 1000 bytes may wait for a client, for at most 50 ms.
STRICT = override_settings(PROXY_STREAM_BUFFER_BYTES=1000, PROXY_SLOW_CLIENT_TIMEOUT=0.05)


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


class IdleReactor:
    """Enough of a reactor for a Twisted FileDescriptor that is written to and never run."""

    def addWriter(self, writer: object) -> None:
        pass

    def removeWriter(self, writer: object) -> None:
        pass


class StuckTransport(FileDescriptor):
    """A real Twisted buffer that the kernel never drains: a client that reads nothing."""

    connected = 1

    def __init__(self) -> None:
        super().__init__(reactor=IdleReactor())  # type: ignore[arg-type]
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


class Channel:
    def __init__(self, transport: StuckTransport | None) -> None:
        self.transport = transport


class Request:
    """Daphne's protocol, as far as the guard goes: the request on its HTTP channel."""

    def __init__(self, channel: Channel | None) -> None:
        self.channel = channel


class DaphneLikeServer:
    """Hands out sends the way daphne.server.Server does: partial(handle_reply, protocol)."""

    async def handle_reply(self, protocol: Request, message: Message) -> None:
        if message["type"] == "http.response.body" and protocol.channel is not None:
            assert protocol.channel.transport is not None
            protocol.channel.transport.write(message.get("body", b""))

    def send_for(self, request: Request) -> Send:
        return partial(self.handle_reply, request)


async def receive() -> Message:
    return {"type": "http.disconnect"}


def streaming_app(pieces: int, size: int) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(pieces):
            await send({"type": "http.response.body", "body": b"x" * size, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def test_it_passes_the_start_up_check_on_the_installed_versions(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert check_support() is True
    assert ServerSupport().check() is True
    assert warnings_logged(caplog) == []


def test_it_was_verified_on_the_installed_versions() -> None:
    # When the lock moves Daphne or Twisted, re-verify (the slow-reader test in
    # test_faults.py must still pass, and fail with the guard off) and update VERIFIED_ON
    # and the module's docstring.
    assert {name: version(name) for name in VERIFIED_ON} == VERIFIED_ON


@pytest.mark.parametrize("attribute", ["dataBuffer", "offset"])
def test_it_warns_once_at_start_up_when_twisted_lacks_what_the_guard_reads(
    attribute: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(FileDescriptor, attribute)
    support = ServerSupport()

    assert support.check() is False
    [warning] = warnings_logged(caplog)
    assert warning.levelno == logging.WARNING
    message = warning.getMessage()
    assert f"FileDescriptor has no {attribute}" in message
    assert "slow clients will NOT be cut off" in message
    assert "whole answer in memory" in message
    assert installed_versions() in message  # the versions found, e.g. "Twisted 25.5.0"

    assert support.check() is False
    assert len(warnings_logged(caplog)) == 1


def test_it_warns_at_start_up_when_daphne_no_longer_passes_a_partial_of_handle_reply(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def create_application(self: Any, protocol: object, scope: Scope) -> None:
        async def send(message: Message) -> None:
            pass

        self.application(scope=scope, receive=receive, send=send)

    monkeypatch.setattr(daphne.server.Server, "create_application", create_application)

    assert ServerSupport().check() is False
    [warning] = warnings_logged(caplog)
    assert "functools.partial(server.handle_reply, protocol)" in warning.getMessage()
    assert "slow clients will NOT be cut off" in warning.getMessage()


async def test_it_warns_once_per_process_about_a_send_it_cannot_see_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent: list[Message] = []

    async def other_server_send(message: Message) -> None:
        sent.append(message)

    guard = SlowClientGuard(streaming_app(pieces=2, size=10), support=ServerSupport())
    await guard(dict(SCOPE), receive, other_server_send)
    await guard(dict(SCOPE), receive, other_server_send)

    assert len(sent) == 2 * 4  # served, unguarded, both times
    [warning] = warnings_logged(caplog)
    assert "other_server_send" in warning.getMessage()
    assert "slow clients will NOT be cut off" in warning.getMessage()


@STRICT
async def test_it_cuts_off_a_stream_whose_buffer_stays_over_the_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = StuckTransport()
    send = DaphneLikeServer().send_for(Request(Channel(transport)))
    guard = SlowClientGuard(streaming_app(pieces=50, size=300), support=ServerSupport())

    with pytest.raises(asyncio.CancelledError):  # what Django takes for a client gone
        await guard(dict(SCOPE), receive, send)

    assert transport.aborted
    assert unsent_bytes(transport) == 4 * 300  # over the limit after the 4th piece: cut off
    assert [r.getMessage() for r in warnings_logged(caplog)] == [
        "client too slow to read its stream (/v1/chat/completions): cut off"
    ]


@STRICT
async def test_it_lets_a_stream_within_the_limit_run_to_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = StuckTransport()
    send = DaphneLikeServer().send_for(Request(Channel(transport)))

    await SlowClientGuard(streaming_app(pieces=3, size=300), support=ServerSupport())(
        dict(SCOPE), receive, send
    )

    assert not transport.aborted
    assert warnings_logged(caplog) == []


async def test_it_says_nothing_when_the_client_left_before_the_answer_started(
    caplog: pytest.LogCaptureFixture,
) -> None:
    send = DaphneLikeServer().send_for(Request(channel=None))  # Twisted dropped the channel

    await SlowClientGuard(streaming_app(pieces=2, size=10), support=ServerSupport())(
        dict(SCOPE), receive, send
    )

    assert warnings_logged(caplog) == []
