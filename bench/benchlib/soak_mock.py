"""The soak's mock provider: its pace, the keys it is called with, the faults it is told to
inject phase after phase, and its own per-call records, collected as the load runs."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from .common import sleep_or_stop

# Distinct keys per pooled key, so a fault can target exactly one of them on the mock.
OPENAI_KEY_1 = "sk-soak-openai-1"
OPENAI_KEY_2 = "sk-soak-openai-2"
ANTHROPIC_KEY = "sk-soak-anthropic-1"

# Slower than bench/run.py's mock (no delay at all): a stream must last long enough for a
# client to leave in the middle of it and for the proxy to notice, and the load should look
# like many overlapping answers rather than a CPU-bound sprint. 0.02 + 15 x 0.01 s = 0.17 s.
MOCK_TTFT = 0.02
MOCK_CHUNK_DELAY = 0.01


@dataclass(frozen=True)
class FaultPhase:
    name: str
    faults: list[dict[str, Any]]
    # Re-posted every second: "times" then means "so many per second", spread over the phase
    # instead of all spent in its first moments.
    per_second: bool = False


FAULT_PHASES = [
    FaultPhase("none", []),
    # The first OpenAI key is rate limited (and rests 2 s each time): the second must serve.
    FaultPhase(
        "429 on key 1",
        [
            {
                "match": {"api_key": OPENAI_KEY_1},
                "times": None,
                "action": {"type": "status", "status": 429, "headers": {"retry-after": "2"}},
            }
        ],
    ),
    # 500s: the OpenAI route retries on its other key; the Anthropic one has none (502).
    FaultPhase(
        "500s", [{"times": 3, "action": {"type": "status", "status": 500}}], per_second=True
    ),
    # The provider dies mid-answer: streams end with an error event, others get a 502.
    FaultPhase(
        "break mid-stream",
        [{"times": 4, "action": {"type": "break_after", "chunks": 3}}],
        per_second=True,
    ),
    # Slow headers, well within first_byte_timeout: these must all succeed.
    FaultPhase(
        "slow headers",
        [{"times": 10, "action": {"type": "delay_headers", "seconds": 0.5}}],
        per_second=True,
    ),
    # Headers, then only SSE comments: a stream is cut after idle_timeout (504 event); a
    # non-streamed call ends after max_seconds with a body that is no JSON (502).
    FaultPhase(
        "drip",
        [{"times": 1, "action": {"type": "drip", "interval": 0.5, "max_seconds": 4}}],
        per_second=True,
    ),
]


class FaultRotator:
    """Switches the mock's faults every `phase_seconds` after the warm-up, through its API."""

    def __init__(self, mock: httpx.AsyncClient, *, warmup: float, phase_seconds: float) -> None:
        self.mock = mock
        self.warmup = warmup
        self.phase_seconds = phase_seconds
        self.current = "warm-up"
        self.timeline: list[tuple[float, str]] = []

    async def post(self, faults: list[dict[str, Any]]) -> None:
        response = await self.mock.post("/_mock/config", json={"faults": faults})
        response.raise_for_status()

    async def run(self, started: float, stop: asyncio.Event) -> None:
        self.timeline.append((0.0, "warm-up"))
        await sleep_or_stop(stop, self.warmup)
        index = 0
        while not stop.is_set():
            phase = FAULT_PHASES[index % len(FAULT_PHASES)]
            self.current = phase.name
            self.timeline.append((time.monotonic() - started, phase.name))
            phase_end = time.monotonic() + self.phase_seconds
            while not stop.is_set() and time.monotonic() < phase_end:
                await self.post(phase.faults)
                if not phase.per_second:
                    await sleep_or_stop(stop, phase_end - time.monotonic())
                else:
                    await sleep_or_stop(stop, min(1.0, phase_end - time.monotonic()))
            index += 1
        self.current = "after"
        await self.post([])


@dataclass
class MockRecords:
    """The mock's per-call records, accumulated: it keeps only its last 1000 itself."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: int = 0
    polls: int = 0

    def absorb(self, stats: dict[str, Any]) -> None:
        self.calls = stats["calls"]
        self.polls += 1
        for record in stats["requests"]:
            # A later snapshot of the same call supersedes an earlier one (it was in flight).
            self.records[record["id"]] = {
                "status": record["status"],
                "fault": record["fault"],
                "usage": record["usage"],
                "disconnected": record["disconnected"],
                "finished": record["finished_at"] is not None,
                "chunks_sent": record["chunks_sent"],
                "api_key": record["api_key"],
            }

    async def poll(self, mock: httpx.AsyncClient) -> None:
        response = await mock.get("/_mock/stats")
        response.raise_for_status()
        self.absorb(response.json())


async def mock_poller(mock: httpx.AsyncClient, records: MockRecords, stop: asyncio.Event) -> None:
    # Every 2 s: at the soak's rate (~100 calls/s) far fewer than 1000 calls happen between
    # two polls, so no record falls out of the mock's window unseen; coverage is reported.
    while not stop.is_set():
        await records.poll(mock)
        await sleep_or_stop(stop, 2.0)
