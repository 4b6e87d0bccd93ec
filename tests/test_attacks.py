"""The attack suite: hostile input against a live proxy.

Each case gets its expected status and an error in OpenAI's shape; none reaches the
provider, and the server is still serving at the end. The JWT cases of tests/test_auth.py
(alg none, key confusion, kid injection, jku/x5u/jwk headers, oversize, skew, ...) run here
too, through the chat endpoint.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from django.conf import settings

from tests.conftest import LiveProxy, World
from tests.support.mockserver import MockServer
from tests.test_auth import bad_tokens

pytestmark = pytest.mark.core

HELLO = [{"role": "user", "content": "hi"}]


@dataclass(frozen=True)
class Attack:
    name: str
    status: int
    code: str | None
    body: bytes | Callable[[], Iterator[bytes]]
    headers: dict[str, str] | None = None  # replaces the tenant's valid Authorization


def body(**fields: object) -> bytes:
    return json.dumps({"model": "auto", "messages": HELLO, **fields}).encode()


ATTACKS = [
    Attack("not json", 400, "invalid_request", b"{'model': 'auto'}"),
    Attack("truncated json", 400, "invalid_request", b'{"model": "auto", "messages": ['),
    Attack("json array", 400, "invalid_request", b"[]"),
    Attack("json null", 400, "invalid_request", b"null"),
    Attack("invalid utf-8", 400, "invalid_request", b'{"model": "\xff\xfe"}'),
    Attack("utf-16 body", 400, "invalid_request", '{"model": "auto"}'.encode("utf-16")),
    Attack("deeply nested arrays", 400, "invalid_request", b"[" * 200_000 + b"]" * 200_000),
    Attack(
        "deeply nested objects",
        400,
        "invalid_request",
        b'{"model": "auto", "messages": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}",
    ),
    Attack("huge integer", 400, "invalid_request", body(max_tokens=10**400)),
    Attack("huge float", 400, "invalid_request", b'{"model": "auto", "max_tokens": 1e999}'),
    Attack("NaN", 400, "invalid_request", b'{"model": "auto", "temperature": NaN}'),
    Attack("Infinity", 400, "invalid_request", b'{"model": "auto", "top_p": Infinity}'),
    Attack("negative max_tokens", 400, "invalid_request", body(max_tokens=-5)),
    Attack("max_tokens as a string", 400, "invalid_request", body(max_tokens="100")),
    Attack("max_tokens as a boolean", 400, "invalid_request", body(max_tokens=True)),
    Attack("temperature out of range", 400, "invalid_request", body(temperature=1e308)),
    Attack("messages as an object", 400, "invalid_request", body(messages={"role": "user"})),
    Attack(
        "message content as an object",
        400,
        "invalid_request",
        body(messages=[{"role": "user", "content": {"$gt": ""}}]),
    ),
    Attack(
        "unknown role", 400, "invalid_request", body(messages=[{"role": "root", "content": "x"}])
    ),
    Attack(
        "too many messages",
        400,
        "invalid_request",
        body(messages=HELLO * (settings.PROXY_MAX_MESSAGES + 1)),
    ),
    Attack("prototype pollution field", 400, "invalid_request", body(__proto__={"admin": True})),
    Attack("dearer service tier", 400, "invalid_request", body(service_tier="priority")),
    Attack("tools of the wrong type", 400, "invalid_request", body(tools="rm -rf /")),
    Attack("n far too large", 400, "invalid_request", body(n=10_000)),
    Attack("token estimate over the limit", 400, "request_too_large", body(max_tokens=9_999_999)),
    Attack(
        "model with CRLF header injection",
        404,
        "model_not_found",
        body(model="auto\r\nX-Injected: 1"),
    ),
    Attack(
        "model path traversal", 404, "model_not_found", body(model="../../max/claude-sonnet-4-5")
    ),
    Attack("another tier's model", 404, "model_not_found", body(model="claude-sonnet-4-5")),
    Attack(
        "oversize declared body",
        413,
        "request_too_large",
        b"x" * (settings.PROXY_MAX_BODY_BYTES + 1),
    ),
    Attack(
        "oversize chunked body",
        413,
        "request_too_large",
        lambda: iter([b"x" * 65536] * (settings.PROXY_MAX_BODY_BYTES // 65536 + 2)),
    ),
    Attack("no token", 401, "invalid_api_key", body(), headers={}),
    Attack(
        "token in the query string only", 401, "invalid_api_key", body(), headers={"X-Token": "x"}
    ),
]


def send(proxy: LiveProxy, attack: Attack, token: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if attack.headers is None else attack.headers
    content = attack.body() if callable(attack.body) else attack.body
    return httpx.post(
        f"{proxy.url}/v1/chat/completions",
        content=content,
        headers={"Content-Type": "application/json", **headers},
        timeout=30,
    )


def assert_openai_error(response: httpx.Response, status: int, code: str | None, name: str) -> None:
    assert response.status_code == status, (name, response.text[:300])
    assert response.headers["content-type"].startswith("application/json"), name
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, name
    assert isinstance(error["message"], str) and error["message"], name
    if code is not None:
        assert error["code"] == code, (name, error)


def test_it_answers_every_attack_with_its_status_and_reaches_no_provider(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    token = world.token(world.alice)
    cases = list(ATTACKS)
    # Every forged or broken token, too, against the chat endpoint.
    for name, headers in bad_tokens(world).items():
        cases.append(Attack(f"token: {name}", 401, "invalid_api_key", body(), headers=headers))
    assert len(cases) >= 60
    for attack in cases:
        assert_openai_error(send(proxy, attack, token), attack.status, attack.code, attack.name)
    assert mock.calls() == 0
    # Nothing crashed: the same process still serves a good request.
    assert proxy.process.poll() is None
    good = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        json={"model": "auto", "messages": HELLO},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert good.status_code == 200 and mock.calls() == 1


def test_it_never_forwards_a_clients_headers(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    hostile = {
        "Authorization": f"Bearer {world.token(world.alice)}",
        "x-api-key": "sk-client-chosen-key",
        "anthropic-version": "1999-01-01",
        "OpenAI-Organization": "org-victim",
        "Cookie": "session=stolen",
        "X-Forwarded-For": "10.0.0.1",
        "X-Injected": "yes",
    }
    for model in ("auto", "claude-haiku"):
        response = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            json={"model": model, "messages": HELLO},
            headers=hostile,
        )
        assert response.status_code == 200
    for record in mock.requests():
        sent = record["headers"]
        assert record["api_key"] in world.secrets.values()
        assert (
            "cookie" not in sent and "x-injected" not in sent and "openai-organization" not in sent
        )
        assert "x-forwarded-for" not in sent
        assert sent.get("anthropic-version") in (None, settings.PROXY_ANTHROPIC_VERSION)
        assert "sk-client-chosen-key" not in json.dumps(sent)


def test_it_survives_raw_protocol_abuse(proxy: LiveProxy, world: World, mock: MockServer) -> None:
    port = int(proxy.url.rsplit(":", 1)[1])
    abuses = [
        b"GARBAGE\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"ZZ\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\n" + b"X-Long: " + b"a" * 100_000 + b"\r\n\r\n",
    ]
    for abuse in abuses:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            try:
                conn.sendall(abuse)
                # The server may refuse and close before the abuse is all sent (the framing
                # guard answers on the headers): a reset or a closed socket here is fine.
                conn.shutdown(socket.SHUT_WR)
                conn.recv(65536)
            except (TimeoutError, OSError):
                pass
    assert proxy.process.poll() is None
    assert mock.calls() == 0
    response = httpx.get(
        f"{proxy.url}/v1/models", headers={"Authorization": f"Bearer {world.token(world.alice)}"}
    )
    assert response.status_code == 200
