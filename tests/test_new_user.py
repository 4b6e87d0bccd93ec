"""What a new user meets first: probes of the base URL, unknown paths, big bodies, 429s
that read right, quota refusals that say what is left, and commands that refuse to act on
a store no server shares; and a demo that names only current models."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import tomllib
import warnings
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from core.errors import ProxyError
from routing.context import TenantContext, load_context
from routing.services import provider_create, provider_key_create, route_create
from tenants.models import Tenant
from tenants.services import tenant_create, tier_create
from tests.conftest import REPO, LiveProxy, World, unique
from tests.support.mockserver import MockServer
from usage import limits

MIB = 1024 * 1024
EMBEDDED_REFUSAL = "REDIS_URL is not set"


def tenant_with(world: World, **tier_fields: Any) -> Tenant:
    """A tenant on a tier of its own (model `auto` on the mock), with these limits."""
    fields = {"requests_per_minute": 100_000, "max_concurrent_requests": 10_000, **tier_fields}
    tier = tier_create(slug=unique("newuser"), name="New user", **fields)
    route_create(
        tier=tier,
        model="auto",
        provider=world.moonshot,
        upstream_model="up-auto",
        input_usd_per_mtok=Decimal("1"),
        output_usd_per_mtok=Decimal("2"),
    )
    return tenant_create(slug=unique("newuser"), name="New user", tier=tier)


def chat(content: str = "hi", **fields: Any) -> bytes:
    return json.dumps(
        {"model": "auto", "messages": [{"role": "user", "content": content}], **fields}
    ).encode()


def post(proxy: LiveProxy, path: str, token: str, content: bytes) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}{path}",
        content=content,
        headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
        timeout=60,
    )


def status_line(proxy: LiveProxy, method: str, path: str, token: str, body: bytes) -> str:
    """The response's raw status line, as the server wrote it (reason phrase included)."""
    url = httpx.URL(proxy.url)
    assert url.host and url.port
    head = (
        f"{method} {path} HTTP/1.1\r\n"
        f"Host: {url.host}:{url.port}\r\n"
        f"Authorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    with socket.create_connection((url.host, url.port), timeout=30) as sock:
        sock.sendall(head.encode() + body)
        received = b""
        while b"\r\n" not in received:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
    return received.split(b"\r\n", 1)[0].decode("latin-1")


# --- bodies ------------------------------------------------------------------------------


def test_it_serves_a_3_mib_body(proxy: LiveProxy, world: World, mock: MockServer) -> None:
    body = chat("x" * (3 * MIB))
    assert 3 * MIB < len(body) < settings.PROXY_MAX_BODY_BYTES
    response = post(proxy, "/v1/chat/completions", world.token(world.alice), body)
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "chat.completion"
    assert mock.calls() == 1


def test_it_refuses_a_5_mib_body_with_a_json_413(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    response = post(proxy, "/v1/chat/completions", world.token(world.alice), chat("x" * (5 * MIB)))
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "request_too_large"
    assert mock.calls() == 0


# --- unknown paths -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/nope"), ("GET", "/v1/chat/completions/extra"), ("GET", "/v1/")],
)
def test_it_answers_an_unknown_api_path_with_a_json_404(
    proxy: LiveProxy, world: World, method: str, path: str
) -> None:
    response = httpx.request(
        method,
        f"{proxy.url}{path}",
        headers={"Authorization": f"Bearer {world.token(world.alice)}"},
        content=b"{}" if method == "POST" else None,
    )
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": {
            "message": f"Unknown API path: {method} {path}",
            "type": "invalid_request_error",
            "param": None,
            "code": "not_found",
        }
    }


def test_it_answers_an_unknown_path_without_a_token_too(live_proxy: LiveProxy) -> None:
    response = httpx.post(f"{live_proxy.url}/v1/nope", content=b"{}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_it_answers_an_unknown_messages_path_in_anthropic_shape(live_proxy: LiveProxy) -> None:
    response = httpx.post(f"{live_proxy.url}/v1/messages/nope", content=b"{}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "Unknown API path: POST /v1/messages/nope",
        },
    }


def test_it_still_answers_a_wrong_method_on_a_known_endpoint_with_a_json_405(
    live_proxy: LiveProxy,
) -> None:
    response = httpx.get(f"{live_proxy.url}/v1/chat/completions")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


# --- probes --------------------------------------------------------------------------------


def test_it_answers_head_of_the_base_url_without_a_token(live_proxy: LiveProxy) -> None:
    started = time.monotonic()
    response = httpx.head(f"{live_proxy.url}/")
    assert response.status_code == 200
    assert response.content == b""
    assert time.monotonic() - started < 2


def test_it_answers_get_of_the_base_url_with_a_tiny_json(live_proxy: LiveProxy) -> None:
    response = httpx.get(f"{live_proxy.url}/")
    assert response.status_code == 200
    assert response.json() == {"service": "llm-proxy", "status": "ok"}


def test_it_answers_healthz(live_proxy: LiveProxy) -> None:
    response = httpx.get(f"{live_proxy.url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert httpx.head(f"{live_proxy.url}/healthz").status_code == 200


@pytest.mark.parametrize("path", ["/", "/healthz"])
def test_it_allows_only_get_and_head_on_the_probes(live_proxy: LiveProxy, path: str) -> None:
    # No CSRF token, no session: a 405, not the CSRF middleware's 403.
    response = httpx.post(f"{live_proxy.url}{path}", content=b"{}")
    assert response.status_code == 405
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}


@pytest.mark.parametrize("path", ["/", "/healthz"])
def test_it_still_checks_allowed_hosts_on_the_probes(live_proxy: LiveProxy, path: str) -> None:
    response = httpx.get(f"{live_proxy.url}{path}", headers={"Host": "evil.example"})
    assert response.status_code == 400


# --- reason phrases ------------------------------------------------------------------------


def test_it_sends_429_with_its_standard_reason_phrase(proxy: LiveProxy, world: World) -> None:
    tenant = tenant_with(world, requests_per_minute=1)
    token = world.token(tenant)
    assert status_line(proxy, "POST", "/v1/chat/completions", token, chat()).endswith(" 200 OK")
    line = status_line(proxy, "POST", "/v1/chat/completions", token, chat())
    assert line == "HTTP/1.1 429 Too Many Requests"
    assert status_line(proxy, "POST", "/v1/nope", token, b"{}") == "HTTP/1.1 404 Not Found"


# --- quota refusals ------------------------------------------------------------------------


def test_it_names_the_tokens_left_when_a_reservation_is_over_the_weekly_cap(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    tenant = tenant_with(world, weekly_token_cap=1000)
    body = chat("hello", max_tokens=5000)
    reserves = math.ceil(len(body) / settings.PROXY_PROMPT_BYTES_PER_TOKEN) + 5000
    response = post(proxy, "/v1/chat/completions", world.token(tenant), body)
    assert response.status_code == 429
    assert "Retry-After" in response.headers
    assert response.headers["x-ratelimit-remaining-tokens"] == "1000"
    error = response.json()["error"]
    assert error["code"] == "insufficient_quota"
    assert "1000 tokens remain" in error["message"], error["message"]
    assert str(reserves) in error["message"]
    assert "max_tokens" in error["message"]
    assert "has used its weekly" not in error["message"]
    assert mock.calls() == 0


# Driven directly (the tests of usage.limits do the same), with the request's allowance.
NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


async def capped_context(**tier_fields: Any) -> TenantContext:
    def make() -> TenantContext:
        tier = tier_create(slug=unique("cap"), name="Cap", **tier_fields)
        provider = provider_create(slug=unique("p"), kind="openai", base_url="https://x.test/v1")
        provider_key_create(provider=provider, label="k", secret="sk-test-0000")
        route_create(
            tier=tier,
            model="auto",
            provider=provider,
            upstream_model="m",
            input_usd_per_mtok=Decimal("1000"),
            output_usd_per_mtok=Decimal("2000"),
        )
        tenant = tenant_create(slug=unique("cap"), name="Cap", tier=tier)
        context = load_context(tenant.slug)
        assert context is not None
        return context

    return await sync_to_async(make)()


async def refusal(context: TenantContext, **admit: Any) -> ProxyError:
    with pytest.raises(ProxyError) as caught:
        await limits.aadmit(account=context, request_id=unique("req"), now=NOON, **admit)
    assert caught.value.status == 429
    assert caught.value.code == "insufficient_quota"
    assert "Retry-After" in caught.value.headers
    return caught.value


@pytest.mark.core
@pytest.mark.django_db(transaction=True)
async def test_it_names_the_largest_max_tokens_that_fits(redis_flushed: None) -> None:
    context = await capped_context(weekly_token_cap=1000)
    # A prompt estimated at 45 tokens and max_tokens 2000: 2045 reserved, 1000 left.
    error = await refusal(context, tokens=2045, nanos=0, max_tokens=2000)
    assert "1000 tokens remain" in error.message
    assert "2045" in error.message
    assert "max_tokens of at most 955" in error.message, error.message
    # Two answers (n=2) of up to 2000 each: each may have (1000 - 45) // 2.
    error = await refusal(context, tokens=4045, nanos=0, max_tokens=2000, completions=2)
    assert "max_tokens of at most 477" in error.message, error.message
    # A prompt alone larger than what is left: no max_tokens fits.
    error = await refusal(context, tokens=1500, nanos=0, max_tokens=100)
    assert "1000 tokens remain" in error.message
    assert "max_tokens of at most" not in error.message
    assert "prompt" in error.message


@pytest.mark.core
@pytest.mark.django_db(transaction=True)
async def test_it_keeps_the_used_up_wording_when_nothing_is_left(redis_flushed: None) -> None:
    context = await capped_context(weekly_token_cap=0)
    error = await refusal(context, tokens=10, nanos=0, max_tokens=5)
    assert "has used its weekly token allowance" in error.message


@pytest.mark.core
@pytest.mark.django_db(transaction=True)
async def test_it_names_the_dollars_left_when_a_reservation_is_over_the_cost_cap(
    redis_flushed: None,
) -> None:
    context = await capped_context(weekly_cost_cap_usd=Decimal("1.50"))
    error = await refusal(context, tokens=10, nanos=2_000_000_000, max_tokens=5)
    assert "$1.50 remains" in error.message, error.message
    assert "$2.00" in error.message
    assert "has used its weekly" not in error.message


# --- commands that need the shared store ---------------------------------------------------


@pytest.mark.core
@pytest.mark.parametrize(
    ("command", "args"), [("rebuild_counters", []), ("usage_worker", ["--once"])]
)
def test_it_refuses_to_run_a_counter_command_on_the_embedded_store(
    command: str, args: list[str]
) -> None:
    with override_settings(REDIS_URL=""), pytest.raises(CommandError) as caught:
        call_command(command, *args)
    message = str(caught.value)
    assert message.startswith(EMBEDDED_REFUSAL)
    assert "no server shares" in message
    assert "Set REDIS_URL" in message


@pytest.mark.core
@pytest.mark.parametrize("command", [["rebuild_counters"], ["usage_worker", "--once"]])
def test_it_exits_non_zero_from_a_counter_command_without_redis_url(
    tmp_path: Path, command: list[str]
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    done = subprocess.run(
        [sys.executable, "manage.py", *command],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert EMBEDDED_REFUSAL in done.stderr
    assert "Set REDIS_URL to the Redis the proxy uses." in done.stderr
    assert "Rebuilt" not in done.stdout and "ledger entries stored" not in done.stdout


# --- the demo ------------------------------------------------------------------------------


@pytest.mark.core
def test_it_routes_the_demo_to_anthropic_models_the_sdk_does_not_deprecate(
    mock: MockServer,
) -> None:
    demo = tomllib.loads((REPO / "config" / "demo.toml").read_text())
    anthropic_providers = {
        name for name, provider in demo["providers"].items() if provider["kind"] == "anthropic"
    }
    models = {
        route["upstream_model"]
        for route in demo["routes"]
        if route["provider"] in anthropic_providers
    }
    assert models
    client = anthropic.Anthropic(base_url=mock.anthropic_base_url, api_key="sk-ant-demo")
    for model in sorted(models):
        # The SDK warns of a model past its announced end of life when it is called.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            client.messages.create(
                model=model, max_tokens=8, messages=[{"role": "user", "content": "hi"}]
            )
        deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
        assert not deprecations, f"{model}: {deprecations[0].message}"
