"""The soak's load: the request mix, the client connection that keeps the response head and
can hang up, what each answer counts as, the workers, and the proxy sampled meanwhile."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

from .client import RawConnection, Reply
from .common import HOST, sleep_or_stop
from .scenarios import MESSAGES, OPENAI_CONTENT, openai_spec
from .soak_mock import FaultRotator
from .stats import Sample, proc_sample

# One request never takes longer than the slowest fault (drip: 4 s) plus the proxy's
# timeouts; past this the client gives up and counts a timeout, which is a finding.
REQUEST_TIMEOUT = 40.0

STREAM_ERROR = re.compile(rb'data: \{"error":\{.*?"code":(?:"([^"]*)"|null)')
FIRST_ID = re.compile(rb'"id":"([^"]+)"')
DONE = b"data: [DONE]"

# Refusals the proxy makes before admission: such a request never reaches the counters and
# must not get a ledger row. Everything past admission (a 502, a 504, a provider's 429 or
# 400, a stream cut short, a client gone) must get exactly one.
PRE_ADMISSION = {
    401: None,  # any token problem
    403: None,  # suspended tenant, revoked token
    404: None,  # unknown model
    405: None,
    413: None,  # body over the limit
    400: {"upstream_invalid_request"},  # a 400 is the proxy's own, unless the provider's
    429: {"upstream_rate_limited"},  # admission refusals: rate_limit_exceeded, insufficient_quota
    503: {"no_provider_key"},  # limits_unavailable is refused at admission
}


@dataclass(frozen=True)
class Kind:
    name: str
    weight: float
    stream: bool
    route: str  # "openai", "anthropic", or "reject"
    raw: bytes  # the whole HTTP request, built once


def _raw(
    port: int, token: str, model: str, *, stream: bool = False, messages: Any = MESSAGES
) -> bytes:
    # The benchmark's request to the proxy, byte for byte (openai_spec).
    spec = openai_spec(port=port, bearer=token, model=model, stream=stream, messages=messages)
    return spec.raw()


def request_kinds(port: int, token: str) -> list[Kind]:
    """The mix: weights are shares of all requests."""

    def kind(name: str, weight: float, model: str, route: str, stream: bool) -> Kind:
        return Kind(name, weight, stream, route, _raw(port, token, model, stream=stream))

    def reject(name: str, raw: bytes) -> Kind:
        return Kind(f"reject: {name}", 0.01, False, "reject", raw)

    return [
        kind("openai", 0.30, "auto", "openai", False),
        kind("openai stream", 0.30, "auto", "openai", True),
        kind("anthropic", 0.17, "claude-bench", "anthropic", False),
        kind("anthropic stream", 0.20, "claude-bench", "anthropic", True),
        # A few requests the proxy must refuse before admission: they check that refusals
        # leave no ledger row and leak nothing either.
        reject("bad token", _raw(port, "not-a-jwt", "auto")),
        reject("unknown model", _raw(port, token, "no-such-model")),
        reject("invalid body", _raw(port, token, "auto", messages="hi")),
    ]


class SoakConnection(RawConnection):
    """The benchmark's raw connection, which also keeps the response head and can hang up.

    With `abort_after_first` set, the connection closes the moment the first content chunk
    has arrived, in the middle of the stream, as a client that gives up would.
    """

    def __init__(self) -> None:
        super().__init__(OPENAI_CONTENT)
        self.head = b""
        self.abort_after_first = False
        self.aborted = False

    def _parse(self) -> bool:
        if not self._head_done:
            end = self._buf.find(b"\r\n\r\n")
            if end >= 0:
                self.head = bytes(self._buf[:end])
        return super()._parse()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        waiter = self._waiter
        # _first is only still set when the response is not complete yet (see _start_response).
        if self.abort_after_first and self._first is not None and waiter and not waiter.done():
            self.aborted = True
            waiter.set_result(Reply(self._status, bytes(self._body), self._first))
            assert self.transport is not None
            self.transport.close()

    def usable(self) -> bool:
        return not (
            self.lost or self.aborted or self.transport is None or self.transport.is_closing()
        )


@dataclass(slots=True)
class Result:
    kind: str
    phase: str
    outcome: str  # "ok", "client disconnected", "stream error: <code>", "HTTP <s> <code>", ...
    status: int  # 0: no response
    request_id: str | None
    admitted: bool | None  # None: unknown (no response)
    upstream_id: str | None  # the mock's record id, from the answer's "id"
    seconds: float  # request sent -> response complete (or given up)
    t: float = 0.0  # when it completed, in seconds since the load started


def _headers(head: bytes) -> dict[str, str]:
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return headers


def _error_code(body: bytes) -> str | None:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    return error.get("code") if isinstance(error, dict) else None


def _upstream_id(raw_id: str | None) -> str | None:
    # The OpenAI route passes the mock's id through; the Anthropic one prefixes the
    # message id with "chatcmpl-".
    if raw_id is None:
        return None
    return raw_id.removeprefix("chatcmpl-") if "msg_" in raw_id else raw_id


def is_admitted(status: int, code: str | None, headers: dict[str, str]) -> bool:
    """Whether the proxy got past admission for this response (see PRE_ADMISSION)."""
    if status == 500:
        # A crash: before or after admission? The admission's rate-limit headers ride on
        # every later answer, crashes included, and never on an earlier one.
        return "x-ratelimit-limit-requests" in headers
    if status in PRE_ADMISSION:
        after = PRE_ADMISSION[status]
        return after is not None and code in after
    return True


def classify(
    kind: Kind, phase: str, reply: Reply, head: bytes, aborted: bool, took: float
) -> Result:
    headers = _headers(head)
    body = reply.body
    status = reply.status
    code: str | None = None
    raw_id: str | None = None
    if status == 200:
        found = FIRST_ID.search(body)
        raw_id = found.group(1).decode() if found else None
        if aborted:
            outcome = "client disconnected"
        elif kind.stream:
            error = STREAM_ERROR.search(body)
            if error:
                outcome = f"stream error: {(error.group(1) or b'null').decode()}"
            elif DONE in body and reply.first_content is not None:
                outcome = "ok"
            else:
                outcome = "incomplete stream"
        else:
            outcome = "ok" if b'"usage"' in body else "incomplete body"
    else:
        code = _error_code(body)
        outcome = f"HTTP {status} {code}"
    return Result(
        kind=kind.name,
        phase=phase,
        outcome=outcome,
        status=status,
        request_id=headers.get("x-request-id"),
        admitted=is_admitted(status, code, headers),
        upstream_id=_upstream_id(raw_id),
        seconds=took,
    )


@dataclass
class Load:
    """What the workers share: the results so far and when to stop."""

    kinds: list[Kind]
    port: int
    deadline: float
    max_requests: int
    disconnect_share: float
    seed: int
    rotator: FaultRotator
    stop: asyncio.Event
    started: float = field(default_factory=time.monotonic)
    results: list[Result] = field(default_factory=list)

    async def connect(self) -> SoakConnection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(SoakConnection, HOST, self.port)
        return protocol

    async def worker(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        weights = [k.weight for k in self.kinds]
        conn: SoakConnection | None = None
        try:
            while (
                not self.stop.is_set()
                and time.monotonic() < self.deadline
                and len(self.results) < self.max_requests
            ):
                kind = rng.choices(self.kinds, weights)[0]
                abort = kind.stream and rng.random() < self.disconnect_share
                phase = self.rotator.current
                started = time.perf_counter()
                try:
                    if conn is None or not conn.usable():
                        conn = await self.connect()
                    conn.abort_after_first = abort
                    async with asyncio.timeout(REQUEST_TIMEOUT):
                        reply = await conn.send(kind.raw)
                except TimeoutError:
                    self._failed(kind, phase, "client timeout", started)
                    _drop(conn)
                    conn = None
                    continue
                except OSError as exc:  # ConnectionError included: refused, reset, lost
                    self._failed(kind, phase, f"transport error: {exc}"[:120], started)
                    _drop(conn)
                    conn = None
                    await asyncio.sleep(0.05)  # a refusing proxy must not become a busy loop
                    continue
                took = time.perf_counter() - started
                result = classify(kind, phase, reply, conn.head, conn.aborted, took)
                result.t = round(time.monotonic() - self.started, 2)
                self.results.append(result)
                if conn.aborted:
                    conn = None  # closed on purpose; the next request opens a new one
        finally:
            _drop(conn)

    def _failed(self, kind: Kind, phase: str, outcome: str, started: float) -> None:
        took = time.perf_counter() - started
        t = round(time.monotonic() - self.started, 2)
        self.results.append(Result(kind.name, phase, outcome, 0, None, None, None, took, t))


def _drop(conn: SoakConnection | None) -> None:
    if conn is not None and conn.transport is not None:
        conn.transport.close()


async def sampler(
    pid: int, load: Load, samples: list[Sample], started: float, every: float
) -> None:
    # Only while the load is at full strength: the workers' wind-down after the deadline
    # (connections closing one by one) would read as a drop in open fds.
    while not load.stop.is_set() and time.monotonic() < load.deadline:
        samples.append(proc_sample(pid, time.monotonic() - started, len(load.results)))
        await sleep_or_stop(load.stop, min(every, load.deadline - time.monotonic()))
