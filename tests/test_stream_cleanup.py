"""The meter: one owner of a request's bill, settled exactly once however the request ends.

Unit tests of routing/pipeline.py's Meter and EventStream, without a server: settlement is
replaced by a recorder, so each test sees exactly the bills that would reach usage.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from core.errors import ProxyError
from routing import pipeline
from routing.context import PooledKey, Route, TenantContext, Upstream
from routing.keyring import ProviderKeyAuth
from routing.pipeline import EventStream, Meter, Reply
from routing.upstream import Attempt
from tenants.limits import Limits
from usage.bill import Bill
from usage.limits import Admission
from usage.weeks import week_of

pytestmark = pytest.mark.core


def make_meter() -> Meter:
    key = PooledKey(
        id=1, label="k", last4="0000", weight=1, auth=ProviderKeyAuth.__new__(ProviderKeyAuth)
    )
    upstream = Upstream(
        id=1,
        slug="p",
        kind="openai",
        base_url="http://127.0.0.1:9",
        connect_timeout=1,
        first_byte_timeout=1,
        idle_timeout=1,
        total_timeout=1,
        keys=(key,),
    )
    route = Route(
        id=1,
        model="auto",
        upstream_model="m",
        priority=0,
        provider=upstream,
        input_usd_per_mtok=Decimal(1),
        output_usd_per_mtok=Decimal(2),
    )
    limits = Limits(
        weekly_token_cap=None,
        weekly_cost_cap_usd=None,
        requests_per_minute=0,
        max_concurrent_requests=0,
        default_max_tokens=100,
        rate_limits_fail_open=False,
    )
    context = TenantContext(
        tenant_id=1,
        slug="t",
        active=True,
        token_version=1,
        tier_id=1,
        tier_slug="auto",
        limits=limits,
        routes={"auto": (route,)},
    )
    week = week_of(datetime(2026, 11, 25, tzinfo=UTC))
    admission = Admission(request_id="req_1", tenant_id=1, week=week)
    return Meter(
        admission=admission,
        context=context,
        attempt=Attempt(route=route, key=key),
        stream=True,
        prompt_estimate=10,
        allowance=100,
        wire_format="openai-chat",
    )


@pytest.fixture
def bills(monkeypatch: pytest.MonkeyPatch) -> list[Bill]:
    settled: list[Bill] = []

    async def record(admission: Admission, bill: Bill) -> None:
        settled.append(bill)

    monkeypatch.setattr(pipeline, "asettle", record)
    return settled


async def test_it_settles_an_answered_request_once(bills: list[Bill]) -> None:
    meter = make_meter()
    async with meter:
        pass
    async with meter:  # a second exit settles nothing more
        pass
    assert [b.status for b in bills] == ["ok"]


@pytest.mark.parametrize(
    ("error", "status", "http_status"),
    [
        (ProxyError(502, "x"), "upstream_error", 502),
        (ProxyError(504, "x"), "upstream_timeout", 504),
        (asyncio.CancelledError(), "client_disconnected", 499),
        (GeneratorExit(), "client_disconnected", 499),
        (KeyError("a bug"), "upstream_error", 500),
    ],
)
async def test_it_bills_how_the_request_ended(
    bills: list[Bill], error: BaseException, status: str, http_status: int
) -> None:
    meter = make_meter()
    with pytest.raises(type(error)):
        async with meter:
            raise error
    assert [(b.status, b.http_status) for b in bills] == [(status, http_status)]


async def test_it_keeps_the_first_failure(bills: list[Bill]) -> None:
    meter = make_meter()
    with pytest.raises(asyncio.CancelledError):
        async with meter:
            meter.record_failure(ProxyError(502, "the stream broke off"))
            raise asyncio.CancelledError  # then the client left
    assert [b.status for b in bills] == ["upstream_error"]


async def test_it_settles_a_stream_whose_client_left_before_the_first_event(
    bills: list[Bill],
) -> None:
    meter = make_meter()
    closed: list[bool] = []

    async def exchange() -> AsyncGenerator[Reply | bytes, None]:
        async with meter:
            try:
                yield Reply(body=None)
                yield b"data: never sent\n\n"
            finally:
                closed.append(True)  # where the provider's answer is closed

    events = exchange()
    assert await anext(events) == Reply(body=None)
    stream = EventStream(events, meter)
    stream.close()  # what the handler does once the client is gone
    for _ in range(3):
        await asyncio.sleep(0)
    assert closed == [True]
    assert [b.status for b in bills] == ["client_disconnected"]


async def test_it_leaves_a_finished_stream_as_billed(bills: list[Bill]) -> None:
    meter = make_meter()

    async def exchange() -> AsyncGenerator[Reply | bytes, None]:
        async with meter:
            yield Reply(body=None)
            yield b"data: one\n\n"

    events = exchange()
    await anext(events)
    stream = EventStream(events, meter)
    assert [part async for part in stream] == [b"data: one\n\n"]
    stream.close()
    await asyncio.sleep(0)
    assert [b.status for b in bills] == ["ok"]
