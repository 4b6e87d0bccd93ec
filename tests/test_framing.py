"""The framing guard (proxy_site/framing.py) against a live Daphne, over raw sockets: bodies
refused on their declared length at once, without a 100 Continue; bodies held in memory,
never in a temporary file; chunked bodies refused the moment they cross the cap; repeated
or contradictory framing headers refused before the view, with nothing pipelined behind
them run. And the start-up check that installs the guard only where it holds."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import daphne.server
import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from twisted.web.http import HTTPChannel, Request

from proxy_site import framing
from proxy_site.backpressure import installed_versions
from proxy_site.framing import (
    VERIFIED_ON,
    FramedHTTPChannel,
    FramingSupport,
    GuardedHTTPFactory,
    GuardedWebRequest,
)
from tests.conftest import JwtKeys, LiveProxy, World, start_proxy, stop_proxy
from tests.support.mockserver import MockServer

MIB = 1024 * 1024
CAP = settings.PROXY_MAX_BODY_BYTES
LOGGER = "proxy_site.framing"
STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) ")


# --- raw HTTP ------------------------------------------------------------------------------


def port_of(proxy: LiveProxy) -> int:
    return int(proxy.url.rsplit(":", 1)[1])


def connect(proxy: LiveProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port_of(proxy)), timeout=5)


def head(path: str, *lines: str, token: str | None = None) -> bytes:
    fields = ["Host: 127.0.0.1", "Content-Type: application/json", *lines]
    if token is not None:
        fields.append(f"Authorization: Bearer {token}")
    return f"POST {path} HTTP/1.1\r\n".encode() + "".join(f"{f}\r\n" for f in fields).encode()


def read_to_close(conn: socket.socket, *, timeout: float) -> tuple[bytes, bool]:
    """Everything the server sends within ``timeout`` seconds, and whether it then closed."""
    data = b""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        conn.settimeout(left)
        try:
            piece = conn.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return data, True
        if not piece:
            return data, True
        data += piece
    return data, False


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def first_answer(raw: bytes) -> Answer:
    header_block, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = header_block.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            body, rest = body + rest[:size], rest[size + 2 :]
    else:
        body = rest[: int(headers.get("content-length", len(rest)))]
    return Answer(int(status_line.split()[1]), headers, body)


def assert_openai_error(answer: Answer, status: int, code: str) -> dict[str, Any]:
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/json"
    error: dict[str, Any] = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    return error


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


# --- a proxy whose temporary directory is watched --------------------------------------------


@dataclass
class WatchedProxy:
    """A live proxy whose TMPDIR is a directory of its own, to see whether it spools."""

    proxy: LiveProxy
    tmp: Path

    def temp_files(self) -> list[str]:
        """Files in its TMPDIR, and the ones the process holds open there (deleted too)."""
        held = []
        for fd in Path(f"/proc/{self.proxy.process.pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue  # closed meanwhile
            if target.startswith(str(self.tmp)):
                held.append(target)
        return held + [str(path) for path in self.tmp.iterdir()]

    def assert_no_temp_file_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.temp_files() == []
            time.sleep(0.01)


@pytest.fixture(scope="module")
def watched(
    live_proxy: LiveProxy, tmp_path_factory: pytest.TempPathFactory, jwt_keys: JwtKeys
) -> Iterator[WatchedProxy]:
    tmp = tmp_path_factory.mktemp("proxy-tmpdir")
    proxy = start_proxy(
        tmp_dir=tmp_path_factory.mktemp("proxy-watched"),
        jwt_keys=jwt_keys,
        extra_env={"TMPDIR": str(tmp)},
    )
    yield WatchedProxy(proxy, tmp)
    stop_proxy(proxy)


# --- bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expect_continue"),
    [("/v1/chat/completions", True), ("/v1/messages", False)],
)
def test_it_refuses_a_100_mib_declared_body_at_once_without_100_continue_or_disk(
    watched: WatchedProxy, path: str, expect_continue: bool
) -> None:
    lines = ["Content-Length: 104857600"] + (["Expect: 100-continue"] if expect_continue else [])
    # No token: the refusal comes before anything authenticates, let alone reads.
    request = head(path, *lines) + b"\r\n"
    # A client that does not wait for 100 Continue starts on its body at once.
    first_body_bytes = b"" if expect_continue else b"x" * MIB
    with connect(watched.proxy) as conn:
        started = time.monotonic()
        conn.sendall(request + first_body_bytes)
        raw, closed = read_to_close(conn, timeout=1.0)
        elapsed = time.monotonic() - started
        assert watched.temp_files() == []  # the upload is still open on this side

    assert b"100 Continue" not in raw
    answer = first_answer(raw)
    assert answer.status == 413, raw[:300]
    assert closed
    assert elapsed < 0.1  # an upper bound with a wide margin: no body is waited for
    limit_message = f"Request body is larger than the limit of {CAP} bytes."
    if path.startswith("/v1/messages"):
        assert answer.json() == {
            "type": "error",
            "error": {"type": "request_too_large", "message": limit_message},
        }
    else:
        error = assert_openai_error(answer, 413, "request_too_large")
        assert error["message"] == limit_message


@pytest.mark.parametrize("framing", ["declared", "chunked"])
def test_it_holds_an_api_body_under_the_cap_in_memory_while_it_arrives(
    watched: WatchedProxy, framing: str
) -> None:
    size = 3 * MIB  # over what Twisted keeps in memory (100 000 bytes), under the cap
    assert size < CAP
    piece = b"x" * (64 * 1024)
    pieces = size // len(piece)
    declared = framing == "declared"
    line = f"Content-Length: {size}" if declared else "Transfer-Encoding: chunked"

    def encode(data: bytes) -> bytes:
        return data if declared else chunk(data)

    with connect(watched.proxy) as conn:
        conn.sendall(head("/v1/chat/completions", line, "Connection: close") + b"\r\n")
        for _ in range(pieces // 2):
            conn.sendall(encode(piece))
        watched.assert_no_temp_file_for(0.3)  # half the body in, the rest to come
        for _ in range(pieces - pieces // 2):
            conn.sendall(encode(piece))
        if not declared:
            conn.sendall(b"0\r\n\r\n")
        raw, _ = read_to_close(conn, timeout=5)

    # The body was read in full and the request served: refused for its missing token.
    assert_openai_error(first_answer(raw), 401, "invalid_api_key")


def test_it_never_spools_an_accepted_api_body_to_disk_while_the_view_works(
    watched: WatchedProxy, world: World, mock: MockServer
) -> None:
    # Over FILE_UPLOAD_MAX_MEMORY_SIZE (2.5 MiB), past which Django's own read_body would
    # roll the body over into a temporary file; under the cap.
    content = "x" * (3 * MIB)
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": content}]})
    assert settings.FILE_UPLOAD_MAX_MEMORY_SIZE < len(body) < CAP
    mock.configure(ttft=1.5)  # the view waits on the provider meanwhile
    answers: list[httpx.Response] = []

    def call() -> None:
        answers.append(
            httpx.post(
                f"{watched.proxy.url}/v1/chat/completions",
                content=body.encode(),
                headers={
                    "Authorization": f"Bearer {world.token(world.alice)}",
                    "Content-Type": "application/json",
                },
                timeout=30,
            )
        )

    caller = threading.Thread(target=call)
    caller.start()
    seen: set[str] = set()
    while caller.is_alive():
        seen.update(watched.temp_files())
        time.sleep(0.005)
    caller.join()

    [answer] = answers
    assert answer.status_code == 200, answer.text
    assert mock.calls() == 1  # it was the view, with the body, that waited
    assert seen == set()


def test_it_refuses_a_chunked_body_the_moment_it_crosses_the_cap(watched: WatchedProxy) -> None:
    piece = b"x" * (64 * 1024)
    assert CAP % len(piece) == 0
    with connect(watched.proxy) as conn:
        conn.sendall(head("/v1/chat/completions", "Transfer-Encoding: chunked") + b"\r\n")
        for _ in range(CAP // len(piece)):
            conn.sendall(chunk(piece))
        # Exactly the cap so far: held (in memory) and not refused.
        watched.assert_no_temp_file_for(0.2)
        early, closed = read_to_close(conn, timeout=0.2)
        assert (early, closed) == (b"", False)

        started = time.monotonic()
        conn.sendall(chunk(b"x"))  # one byte over
        raw, closed = read_to_close(conn, timeout=2)
        elapsed = time.monotonic() - started

    assert_openai_error(first_answer(raw), 413, "request_too_large")
    assert closed
    assert elapsed < 0.5  # refused on that byte, not at the end of the body
    assert watched.proxy.process.poll() is None


# --- framing -------------------------------------------------------------------------------

# The first request's framing headers and the bytes that end its body under every reading
# of them ("0\r\n\r\n" is a complete chunked body and exactly 5 bytes): what follows is a
# second, valid request, which must never run when the first one's framing is refused.
FRAMINGS = {
    "Transfer-Encoding chunked, then identity": (
        ["Transfer-Encoding: chunked", "Transfer-Encoding: identity"],
        b"0\r\n\r\n",
    ),
    "Transfer-Encoding identity, then chunked": (
        ["Transfer-Encoding: identity", "Transfer-Encoding: chunked"],
        b"0\r\n\r\n",
    ),
    "Transfer-Encoding chunked twice": (
        ["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
        b"0\r\n\r\n",
    ),
    "Transfer-Encoding identity alone": (["Transfer-Encoding: identity"], b""),
    "Transfer-Encoding identity with Content-Length": (
        ["Transfer-Encoding: identity", "Content-Length: 5"],
        b"0\r\n\r\n",
    ),
    "Content-Length twice, equal": (["Content-Length: 5", "Content-Length: 5"], b"0\r\n\r\n"),
    "Content-Length with Transfer-Encoding chunked": (
        ["Content-Length: 5", "Transfer-Encoding: chunked"],
        b"0\r\n\r\n",
    ),
    "Transfer-Encoding gzip, chunked": (["Transfer-Encoding: gzip, chunked"], b"0\r\n\r\n"),
}


def pipelined_chat(token: str) -> bytes:
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    return (
        head(
            "/v1/chat/completions", f"Content-Length: {len(body)}", "Connection: close", token=token
        )
        + b"\r\n"
        + body.encode()
    )


def exchange(proxy: LiveProxy, data: bytes) -> tuple[bytes, bool]:
    with connect(proxy) as conn:
        conn.sendall(data)
        return read_to_close(conn, timeout=3)


@pytest.mark.parametrize("name", list(FRAMINGS))
def test_it_refuses_repeated_or_contradictory_framing_and_runs_nothing_pipelined_behind(
    proxy: LiveProxy, world: World, mock: MockServer, name: str
) -> None:
    lines, first_body = FRAMINGS[name]
    token = world.token(world.alice)
    behind = pipelined_chat(token)
    # The control: framed once, the same pair is two requests, and the second one runs.
    control, _ = exchange(
        proxy, head("/v1/chat/completions", "Content-Length: 0", token=token) + b"\r\n" + behind
    )
    assert [int(s) for s in STATUS_LINE.findall(control)] == [400, 200]
    assert mock.calls() == 1
    mock.reset()

    raw, closed = exchange(
        proxy, head("/v1/chat/completions", *lines, token=token) + b"\r\n" + first_body + behind
    )

    assert [int(s) for s in STATUS_LINE.findall(raw)] == [400], raw[:600]
    error = assert_openai_error(first_answer(raw), 400, "bad_request")
    assert error["message"].startswith("Invalid request framing:")
    assert closed
    assert mock.calls() == 0  # the request behind never ran


def test_it_refuses_bad_framing_in_the_anthropic_shape_under_v1_messages(
    proxy: LiveProxy,
) -> None:
    request = head("/v1/messages", "Transfer-Encoding: chunked", "Transfer-Encoding: identity")
    raw, closed = exchange(proxy, request + b"\r\n0\r\n\r\n")

    answer = first_answer(raw)
    assert answer.status == 400
    assert answer.json()["type"] == "error"
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert answer.json()["error"]["message"].startswith("Invalid request framing:")
    assert closed


# --- the admin -----------------------------------------------------------------------------


def test_it_caps_admin_bodies_at_djangos_limit_and_still_serves_admin_posts(
    proxy: LiveProxy,
) -> None:
    too_big = settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1
    with connect(proxy) as conn:
        started = time.monotonic()
        conn.sendall(
            b"POST /admin/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % too_big
        )
        raw, closed = read_to_close(conn, timeout=1)
        elapsed = time.monotonic() - started
    assert b"100 Continue" not in raw
    assert first_answer(raw).status == 413
    assert closed and elapsed < 0.1

    # A real login, through the same guard, a form padded past what Twisted holds in memory.
    User.objects.create_superuser("framing-staff", password="framing-password-1!")
    with httpx.Client(base_url=proxy.url, timeout=10) as browser:
        page = browser.get("/admin/login/")
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert csrf is not None
        login = browser.post(
            "/admin/login/?next=/admin/",
            data={
                "csrfmiddlewaretoken": csrf.group(1),
                "username": "framing-staff",
                "password": "framing-password-1!",
                "padding": "x" * 200_000,
            },
        )
        assert login.status_code == 302, login.text[:300]
        assert login.headers["location"] == "/admin/"
        assert browser.get("/admin/").status_code == 200


# --- the start-up check --------------------------------------------------------------------


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


@pytest.fixture
def daphne_factory(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Whatever install() does to daphne.server.HTTPFactory is undone after the test."""
    monkeypatch.setattr(daphne.server, "HTTPFactory", daphne.server.HTTPFactory)
    yield


def test_it_passes_the_start_up_check_and_installs_on_the_installed_versions(
    caplog: pytest.LogCaptureFixture, daphne_factory: None
) -> None:
    assert FramingSupport().check() is True
    assert framing.install(support=FramingSupport()) is True
    assert daphne.server.HTTPFactory is GuardedHTTPFactory
    assert warnings_logged(caplog) == []


def test_it_was_verified_on_the_installed_versions() -> None:
    # When the lock moves Daphne or Twisted, re-verify (every live test here must still
    # pass, and fail with the guard off) and update VERIFIED_ON and the module's docstring.
    assert {name: version(name) for name in VERIFIED_ON} == VERIFIED_ON


def assert_loud_warning(caplog: pytest.LogCaptureFixture, reason: str) -> None:
    [warning] = warnings_logged(caplog)
    assert warning.levelno == logging.WARNING
    message = warning.getMessage()
    assert message.startswith("FRAMING GUARD OFF (start-up check): ")
    assert reason in message
    assert "spools it to a temporary file on disk" in message
    assert "reads 'chunked' then 'identity' as chunked" in message
    assert installed_versions() in message


@pytest.mark.parametrize(
    ("base", "attribute"),
    [
        (HTTPChannel, "_maybeChooseTransferDecoder"),
        (HTTPChannel, "allHeadersReceived"),
        (Request, "gotLength"),
        (Request, "handleContentChunk"),
    ],
)
def test_it_warns_once_and_installs_nothing_when_twisted_lacks_what_it_overrides(
    base: type,
    attribute: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    daphne_factory: None,
) -> None:
    monkeypatch.delattr(base, attribute)
    support = FramingSupport()
    stock = daphne.server.HTTPFactory

    assert framing.install(support=support) is False
    assert daphne.server.HTTPFactory is stock
    assert_loud_warning(caplog, f"twisted.web.http.{base.__name__} has no {attribute}")
    assert support.check() is False
    assert len(warnings_logged(caplog)) == 1


@pytest.mark.parametrize(
    ("guarded", "hook", "reason"),
    [
        # As if Twisted stopped calling the hook the guard overrides: the probe sees it.
        (
            FramedHTTPChannel,
            "_maybeChooseTransferDecoder",
            "a request with Transfer-Encoding: chunked; Transfer-Encoding: identity was not "
            "refused before it ran",
        ),
        (
            FramedHTTPChannel,
            "allHeadersReceived",
            "a declared Content-Length over the cap was not refused at once",
        ),
        (GuardedWebRequest, "gotLength", "a chunked body is not held in memory"),
        (
            GuardedWebRequest,
            "handleContentChunk",
            "a chunked body crossing the cap was not refused",
        ),
    ],
)
def test_it_warns_and_installs_nothing_when_its_probe_requests_get_through(
    guarded: type,
    hook: str,
    reason: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    daphne_factory: None,
) -> None:
    base = HTTPChannel if guarded is FramedHTTPChannel else Request
    monkeypatch.setattr(guarded, hook, getattr(base, hook))
    stock = daphne.server.HTTPFactory

    assert framing.install(support=FramingSupport()) is False
    assert daphne.server.HTTPFactory is stock
    assert_loud_warning(caplog, reason)


def test_it_warns_when_daphne_no_longer_builds_its_factory_from_the_module_global(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, daphne_factory: None
) -> None:
    def run(self: Any) -> None:
        pass

    monkeypatch.setattr(daphne.server.Server, "run", run)

    assert framing.install(support=FramingSupport()) is False
    assert_loud_warning(
        caplog, "daphne.server.Server.run no longer builds daphne.server.HTTPFactory"
    )
