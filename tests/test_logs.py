"""Structured logs: one JSON object per line with LOG_FORMAT=json, the request id on every line
logged while serving a request, one ``request`` line per request, and no secret in any of it.

The formatter and filter are tested on their own first, then a live Daphne with
LOG_FORMAT=json and LOG_LEVEL=DEBUG is driven through answers, streams and failures, and its
whole output (stdout and stderr, as the process wrote them) is read back.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
import math
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import httpx
import pytest
from asgiref.sync import sync_to_async
from daphne.access import AccessLogGenerator
from django.conf import settings
from django.test import RequestFactory
from twisted.logger import Logger, globalLogPublisher

from core import logs
from tests.conftest import (
    JwtKeys,
    LiveProxy,
    World,
    claims_for,
    ledger_rows,
    start_proxy,
    stop_proxy,
)
from tests.support.mockserver import MockServer
from usage.models import UsageRecord

# --- the formatter and the filter -----------------------------------------------------------


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through the JSON formatter and the request-id filter, as the
    console handler of LOGGING does, into a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.RequestIdFilter())
    logger = logging.getLogger(f"tests.logs.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, stream
    logger.removeHandler(handler)


def lines_of(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    # splitlines(): every character anything may take for a line end splits here.
    return [json.loads(line) for line in text.splitlines()]


def test_it_writes_one_json_object_with_the_extra_fields(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    logger.info(
        "%s served in %d ms",
        "req_1",
        12,
        extra={"tenant": "acme", "input_tokens": 3, "cost": Decimal("0.000012"), "at": when},
    )
    asked = RequestFactory().get("/v1/models?api_key=sk-in-the-query")
    logger.warning("Unauthorized: %s", asked.path, extra={"request": asked, "status_code": 401})
    line, django_style = lines_of(stream)
    assert line["message"] == "req_1 served in 12 ms"
    assert line["level"] == "INFO"
    assert line["logger"] == logger.name
    assert datetime.fromisoformat(line["time"]).tzinfo is not None
    assert line["tenant"] == "acme" and line["input_tokens"] == 3
    assert line["cost"] == "0.000012"
    assert line["at"] == "2026-01-02T03:04:05+00:00"
    # Outside a request: no id, and nothing of the LogRecord's own attributes.
    assert "request_id" not in line
    assert not {"args", "msg", "levelno", "pathname", "exc_info", "created"} & set(line)
    # Django's lines name the request, but not its query string.
    assert django_style["request"] == "GET /v1/models"
    assert "sk-in-the-query" not in stream.getvalue()


def test_it_writes_the_exception_on_the_same_line(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        logger.exception("it failed")
    logger.warning("with a stack", stack_info=True)
    failed, stacked = lines_of(stream)
    assert failed["level"] == "ERROR" and failed["message"] == "it failed"
    assert failed["exception"].startswith("Traceback (most recent call last):")
    assert "ValueError: boom\nsecond line" in failed["exception"]
    assert "test_it_writes_the_exception_on_the_same_line" in stacked["stack"]


def test_it_writes_a_line_whatever_the_values(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

        def __repr__(self) -> str:
            raise RuntimeError("no")

    circular: list[Any] = []
    circular.append(circular)
    logger.info(
        "odd values",
        extra={
            "obj": object(),
            "not_a_number": math.nan,
            "circular": circular,
            "tuple_keys": {(1, 2): "x"},
            "raw": b"\xffbytes",
            "members": {"b"},
            "unprintable": Unprintable(),
            "fine": [1, "two"],
        },
    )
    # Arguments that do not fit the format (to our handler only: pytest's own, which it
    # adds to every logger, would raise).
    unfit = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "%d of %d", (1,), None)
    logger.handlers[0].handle(unfit)
    odd, unformatted = lines_of(stream)
    assert odd["obj"].startswith("<object object at")
    assert odd["not_a_number"] == "nan"
    assert odd["circular"] == "[[...]]"
    assert odd["tuple_keys"] == "{(1, 2): 'x'}"
    assert odd["raw"] == "\\xffbytes"
    assert odd["members"] == ["b"]
    assert odd["unprintable"] == "<unprintable Unprintable>"
    assert odd["fine"] == [1, "two"]
    assert unformatted["message"] == "%d of %d (unformatted; args: (1,))"


def test_it_keeps_one_record_on_one_line_and_its_own_keys(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log
    logger.info(
        "one\ntwo\r\u2028three\x85four\u2029five \x1c é",
        extra={"time": "spoofed", "level": "spoofed", "logger": "spoofed"},
    )
    [line] = lines_of(stream)
    assert line["message"] == "one\ntwo\r\u2028three\x85four\u2029five \x1c é"
    assert stream.getvalue().isascii()
    assert line["level"] == "INFO" and line["logger"] == logger.name
    assert line["time"] != "spoofed"
    assert line["extra_time"] == line["extra_level"] == line["extra_logger"] == "spoofed"


def test_it_puts_the_request_id_on_every_line_of_the_request_and_none_outside(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log

    async def serve(rid: str) -> None:
        logs.request_id.set(rid)
        logger.info("start")

        async def helper() -> None:
            await asyncio.sleep(0.01)  # the other request runs meanwhile
            logger.info("in a task of the request")

        await asyncio.gather(asyncio.create_task(helper()), asyncio.sleep(0))
        await sync_to_async(logger.info)("in a thread of the request")
        logger.info("done")

    async def main() -> None:
        # Started from inside a request, a task that serves no request starts clean.
        async def worker() -> None:
            logger.info("background")

        async def request_that_starts_a_worker() -> None:
            logs.request_id.set("req_w")
            await asyncio.get_running_loop().create_task(worker(), context=contextvars.Context())

        await asyncio.gather(serve("req_a"), serve("req_b"), request_that_starts_a_worker())
        logger.info("after")

    asyncio.run(main())
    lines = lines_of(stream)
    by_id: dict[str | None, list[str]] = {}
    for line in lines:
        by_id.setdefault(line.get("request_id"), []).append(line["message"])
    request_lines = ["start", "in a task of the request", "in a thread of the request", "done"]
    assert by_id == {"req_a": request_lines, "req_b": request_lines, None: ["background", "after"]}


def test_it_shows_the_request_id_in_plain_text() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    plain = cast(dict[str, Any], settings.LOGGING)["formatters"]["plain"]
    handler.setFormatter(logging.Formatter(plain["format"]))
    handler.addFilter(logs.RequestIdFilter())
    record = logging.LogRecord("tests.plain", logging.INFO, __file__, 1, "served", (), None)
    token = logs.request_id.set("req_plain")
    try:
        handler.handle(record)
    finally:
        logs.request_id.reset(token)
    handler.handle(logging.LogRecord("tests.plain", logging.INFO, __file__, 1, "idle", (), None))
    served, idle = stream.getvalue().splitlines()
    assert served.endswith("INFO tests.plain req_plain served")
    assert idle.endswith("INFO tests.plain  idle")
    assert settings.LOG_FORMAT == "plain"  # the development default


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """route_server_logs() in this process, undone afterwards."""
    monkeypatch.setattr(AccessLogGenerator, "__call__", AccessLogGenerator.__call__)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    before = list(globalLogPublisher._observers)
    logs.route_server_logs()
    yield
    for observer in list(globalLogPublisher._observers):
        if observer not in before:
            globalLogPublisher.removeObserver(observer)


def test_it_routes_daphnes_access_log_and_twisteds_log_through_logging(
    routed: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stdout = io.StringIO()
    access = AccessLogGenerator(stdout)  # as Daphne builds it, after the application loads
    details = {
        "path": "/v1/models?api_key=sk-in-the-query",
        "status": 200,
        "method": "GET",
        "client": "127.0.0.1:5000",
        "time_taken": 0.0123,
        "size": 42,
    }
    access("http", "complete", details)
    access("websocket", "connected", {"path": "/admin/live/", "client": "127.0.0.1:5001"})
    Logger(namespace="twisted.test").info("Starting factory {what}", what="noise")
    Logger(namespace="twisted.test").error("the reactor says {what}", what="hello")
    try:
        raise OSError("lost")
    except OSError:
        Logger(namespace="twisted.test").failure("unhandled in a Deferred")

    def crash() -> None:
        raise RuntimeError("a thread died")

    thread = threading.Thread(target=crash, name="doomed")
    thread.start()
    thread.join()
    sys.excepthook(KeyError, KeyError("main"), None)

    assert stdout.getvalue() == ""  # nothing written around logging
    http, websocket = (r for r in caplog.records if r.name == "access")
    assert http.getMessage() == '127.0.0.1:5000 "GET /v1/models" 200 42'
    assert (http.path, http.status_code, http.size, http.duration_ms) == ("/v1/models", 200, 42, 12)  # type: ignore[attr-defined]
    assert "sk-in-the-query" not in caplog.text
    assert websocket.getMessage() == '127.0.0.1:5001 "WSCONNECT /admin/live/"'
    said, failed = (r for r in caplog.records if r.name == "twisted")
    assert said.levelno == logging.ERROR and said.getMessage() == "the reactor says hello"
    assert failed.exc_info is not None and failed.exc_info[0] is OSError
    in_thread, in_main = (r for r in caplog.records if r.name == "uncaught")
    assert in_thread.getMessage() == "uncaught RuntimeError in thread doomed"
    assert in_main.getMessage() == "uncaught KeyError" and in_main.exc_info is not None


# --- a live proxy logging JSON --------------------------------------------------------------


TRANSPORTS: dict[str, str] = {}  # json_proxy's URL -> its PROXY_UPSTREAM_TRANSPORT


# Both upstream transports (core/http.py): each one's trace must carry request ids and no
# secret; httpcore's is the chattier (it logs every step of every connection).
@pytest.fixture(scope="module", params=["aiohttp", "httpx"])
def json_proxy(
    request: pytest.FixtureRequest,
    django_db_setup: None,
    tmp_path_factory: pytest.TempPathFactory,
    jwt_keys: JwtKeys,
) -> Iterator[LiveProxy]:
    proxy = start_proxy(
        tmp_dir=tmp_path_factory.mktemp("json-logs"),
        jwt_keys=jwt_keys,
        extra_env={
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "DEBUG",
            "PROXY_UPSTREAM_TRANSPORT": request.param,
        },
    )
    TRANSPORTS[proxy.url] = request.param
    yield proxy
    stop_proxy(proxy)


def client_trace(proxy: LiveProxy) -> set[str]:
    """The HTTP client's loggers a request's lines must include on this proxy."""
    return {"httpx", "httpcore.http11"} if TRANSPORTS[proxy.url] == "httpx" else {"httpx"}


def parsed(proxy: LiveProxy) -> list[dict[str, Any]]:
    """Every line the process wrote, each of which must be one JSON object."""
    objects = []
    for number, line in enumerate(proxy.log().splitlines(), 1):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"line {number} is not JSON: {line!r}") from None
        assert isinstance(obj, dict), line
        objects.append(obj)
    return objects


# The loggers of what runs on a request's path: each of their lines in a request's time
# window must carry its id.
REQUEST_PATH = ("routing", "tenants", "httpx", "httpcore", "access", "django")


@dataclass
class Sent:
    request_id: str
    started: datetime
    ended: datetime
    status: int


def send(proxy: LiveProxy, path: str, headers: dict[str, str], body: dict[str, Any]) -> Sent:
    started = datetime.now(UTC)
    with httpx.stream(
        "POST", f"{proxy.url}{path}", headers=headers, json=body, timeout=30
    ) as response:
        response.read()
    ended = datetime.now(UTC)
    # The next request's lines must not fall in this one's window by a clock tick.
    time.sleep(0.05)
    return Sent(response.headers["x-request-id"], started, ended, response.status_code)


def chat(proxy: LiveProxy, token: str, model: str, *, stream: bool) -> Sent:
    return send(
        proxy,
        "/v1/chat/completions",
        {"Authorization": f"Bearer {token}"},
        {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream},
    )


def messages(proxy: LiveProxy, token: str, model: str, *, stream: bool) -> Sent:
    return send(
        proxy,
        "/v1/messages",
        {"x-api-key": token, "anthropic-version": "2023-06-01"},
        {
            "model": model,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": stream,
        },
    )


def settled_log(proxy: LiveProxy, sent: list[Sent]) -> list[dict[str, Any]]:
    """The log once every request sent has its ``request`` line."""
    wanted = {s.request_id for s in sent}

    def complete() -> list[dict[str, Any]]:
        lines = parsed(proxy)
        logged = {line.get("request_id") for line in lines if line.get("event") == "request"}
        assert wanted <= logged
        return lines

    deadline = time.monotonic() + 10
    while True:
        try:
            return complete()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_it_logs_every_line_as_json_with_the_request_id_it_was_logged_for(
    json_proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    token = world.token(world.alice)
    sent = [
        chat(json_proxy, token, "auto", stream=False),
        chat(json_proxy, token, "auto", stream=True),
        messages(json_proxy, token, "claude-haiku", stream=False),
        messages(json_proxy, token, "claude-haiku", stream=True),
    ]
    assert [s.status for s in sent] == [200] * 4
    ledger_rows(world.alice, len(sent))
    lines = settled_log(json_proxy, sent)
    # Daphne's access lines, through logging (route_server_logs), are JSON too.
    assert any(line["logger"] == "access" for line in lines)
    for s in sent:
        mine = [line for line in lines if line.get("request_id") == s.request_id]
        loggers = {line["logger"] for line in mine}
        assert {"routing.pipeline", *client_trace(json_proxy)} <= loggers, loggers
        # One request line, and Daphne's access line (sent from the request's own task).
        assert [line["event"] for line in mine if "event" in line] == ["request", "access"]
        # Whatever was logged while the request was served carries its id: nothing has
        # another request's, and nothing on the request's path goes without one (the
        # workers beside every request, the ledger drain among them, serve none).
        during = [
            line for line in lines if s.started <= datetime.fromisoformat(line["time"]) <= s.ended
        ]
        assert during, "the request's own lines are in its window"
        strays = [
            line
            for line in during
            if line.get("request_id") != s.request_id
            and (line.get("request_id") or line["logger"].startswith(REQUEST_PATH))
        ]
        assert not strays, strays


def test_it_logs_one_request_line_with_what_the_ledger_recorded(
    json_proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    token = world.token(world.bob)
    sent = [
        chat(json_proxy, token, "claude-sonnet-4-5", stream=True),
        messages(json_proxy, token, "claude-sonnet-4-5", stream=False),
    ]
    mock.configure(faults=[{"action": {"type": "status", "status": 500}, "times": 1}])
    sent.append(chat(json_proxy, world.token(world.alice), "auto", stream=False))
    mock.configure(faults=[])
    rows = {
        row.request_id: row for row in [*ledger_rows(world.bob, 2), *ledger_rows(world.alice, 1)]
    }
    lines = settled_log(json_proxy, sent)
    for s in sent:
        [line] = [
            line
            for line in lines
            if line.get("event") == "request" and line["request_id"] == s.request_id
        ]
        row: UsageRecord = rows[s.request_id]
        assert line["level"] == "INFO" and line["logger"] == "routing.pipeline"
        expected = {
            "request_id": row.request_id,
            "tenant": row.tenant.slug,
            "tenant_id": row.tenant_id,
            "tier": row.tier.slug,
            "model": row.model,
            "route_id": row.route_id,
            "provider": row.provider_slug,
            "upstream_model": row.upstream_model,
            "key_label": row.provider_key.label if row.provider_key else None,
            "wire_format": row.wire_format,
            "stream": row.stream,
            "status": row.status,
            "http_status": row.http_status,
            "input_tokens": row.input_tokens,
            "output_tokens": row.output_tokens,
            "cache_read_tokens": row.cache_read_tokens,
            "cache_write_tokens": row.cache_write_tokens,
            "reasoning_tokens": row.reasoning_tokens,
            "latency_ms": row.latency_ms,
            "ttft_ms": row.ttft_ms,
            "attempts": row.attempts,
            "error_code": row.error_code or None,
        }
        assert {name: line.get(name) for name in expected} == expected
        assert Decimal(line["cost_usd"]) == row.cost_usd
    # The three kinds told apart: a stream, an answer, a provider's failure.
    ok_stream, ok_whole, failed = (rows[s.request_id] for s in sent)
    assert ok_stream.stream and ok_stream.ttft_ms is not None and ok_stream.output_tokens > 0
    assert ok_whole.wire_format != ok_stream.wire_format and ok_whole.cost_usd > 0
    assert failed.http_status >= 500 and failed.error_code


def test_it_never_logs_a_secret(
    json_proxy: LiveProxy, world: World, mock: MockServer, jwt_keys: JwtKeys
) -> None:
    token = world.token(world.alice)
    forged = jwt_keys.sign(claims_for(world.alice), key=jwt_keys.stranger)
    expired = world.token(world.alice, exp=int(time.time()) - 60)
    sent = []
    for model in ("auto", "claude-haiku"):
        for stream in (False, True):
            sent.append(chat(json_proxy, token, model, stream=stream))
            sent.append(messages(json_proxy, token, model, stream=stream))
        # Providers quoting the pooled key: in an error, in an answer, in a stream's error.
        for action, stream in (
            ({"type": "echo_key"}, False),
            ({"type": "echo_key"}, True),
            ({"type": "echo_key_in_answer"}, False),
            ({"type": "echo_key_in_answer"}, True),
            ({"type": "stream_error", "chunks": 2}, True),
        ):
            mock.configure(faults=[{"action": action, "times": 1}])
            sent.append(chat(json_proxy, token, model, stream=stream))
            mock.configure(faults=[])
    refused = [
        chat(json_proxy, bad, "auto", stream=False)
        for bad in (forged, expired, f"sk-not-a-jwt-{world.secrets['moonshot']}")
    ]
    refused.append(messages(json_proxy, forged, "claude-haiku", stream=False))
    assert {s.status for s in refused} == {401}
    assert {r["fault"] for r in mock.requests()} >= {"echo_key", "stream_error"}
    keys_sent = {r["api_key"] for r in mock.requests()}
    assert keys_sent == set(world.secrets.values())  # the keys really went upstream
    lines = settled_log(json_proxy, sent)
    text = json_proxy.log()
    for secret in world.secrets.values():
        assert secret not in text
        assert secret[-12:] not in text
    for jwt in (token, forged, expired):
        assert jwt not in text
        assert jwt.split(".")[2] not in text  # not even its signature
    assert "Bearer" not in text
    # The scan saw everything: the HTTP client's trace, and the failures' lines.
    loggers = {line["logger"] for line in lines}
    assert {*client_trace(json_proxy), "routing.pipeline", "tenants.auth"} <= loggers
    statuses = {line["status"] for line in lines if line.get("event") == "request"}
    assert {"ok", "upstream_error"} <= statuses, statuses


@pytest.mark.django_db
def test_it_gives_every_request_of_the_full_stack_its_own_request_id() -> None:
    """The admin, the provisioning API and the probes: an id on the response, and none left
    behind in the thread for the next request."""
    from django.test import Client

    from core import logs

    client = Client()
    first = client.get("/healthz")["x-request-id"]
    second = client.get("/api/v1/tiers/")["x-request-id"]
    assert first.startswith("req_") and second.startswith("req_") and first != second
    assert logs.request_id.get() == ""
