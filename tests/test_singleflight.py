"""Coalesced loads: one call per key, and one client leaving cancels no one else."""

from __future__ import annotations

import asyncio

import pytest

from core.singleflight import SingleFlight

pytestmark = pytest.mark.core


async def test_it_runs_one_call_for_concurrent_callers() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return 42

    results = await asyncio.gather(*(flight.run("k", load) for _ in range(10)))
    assert results == [42] * 10 and calls == 1


async def test_it_does_not_cancel_the_others_when_the_first_caller_leaves() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    started = asyncio.Event()
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.sleep(0.05)
        return calls

    first = asyncio.ensure_future(flight.run("k", load))
    await started.wait()
    second = asyncio.ensure_future(flight.run("k", load))
    await asyncio.sleep(0)
    first.cancel()  # its client left
    assert await second == 2  # the waiter ran the load itself
    assert first.cancelled()


async def test_it_passes_a_failure_to_every_waiter() -> None:
    flight: SingleFlight[str, int] = SingleFlight()

    async def load() -> int:
        await asyncio.sleep(0.01)
        raise RuntimeError("database down")

    results = await asyncio.gather(
        *(flight.run("k", load) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
