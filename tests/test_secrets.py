"""Pooled provider keys never leave the proxy: not in responses, logs or admin pages."""

from __future__ import annotations

import logging
from io import StringIO

import httpx
import pytest
from cryptography.fernet import Fernet
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client, override_settings

from routing import keyring
from routing.codecs.base import failed_mid_stream
from routing.models import ProviderKey
from routing.redaction import MAX_MESSAGE, redact, redact_error
from routing.services import provider_create, provider_key_create
from tests.conftest import LiveProxy, World, ledger_rows
from tests.support.mockserver import MockServer
from tests.support.routes import make_route


def exchange(proxy: LiveProxy, token: str, model: str, stream: bool) -> str:
    """Everything a client sees of one request: status line, headers, body."""
    with httpx.stream(
        "POST",
        f"{proxy.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {token}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream},
        timeout=30,
    ) as response:
        body = response.read().decode()
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        return f"{response.status_code}\n{headers}\n\n{body}"


def test_it_never_shows_a_provider_key_to_a_client_or_the_log(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    token = world.token(world.alice)
    seen = []
    for model in ("auto", "claude-haiku"):
        for stream in (False, True):
            seen.append(exchange(proxy, token, model, stream))
        # Provider errors, including one that echoes the key it was sent back in its text.
        for action in (
            {"type": "echo_key"},
            {"type": "status", "status": 401},
            {"type": "status", "status": 500},
            {"type": "status", "status": 429, "headers": {"retry-after": "3"}},
        ):
            mock.configure(faults=[{"action": action, "times": 2}])
            seen.append(exchange(proxy, token, model, False))
            seen.append(exchange(proxy, token, model, True))
            mock.configure(faults=[])
    keys_sent = {r["api_key"] for r in mock.requests()}
    assert keys_sent == set(world.secrets.values())  # the keys really were used upstream
    echoed = [s for s in seen if "[redacted]" in s]
    assert echoed, "the echo_key fault should have produced a scrubbed message"
    for secret in world.secrets.values():
        for text in seen:
            assert secret not in text
            assert secret[-12:] not in text
        assert secret not in proxy.log()
    # The server really logged at DEBUG, down to the HTTP client's own request lines (the
    # transport's own trace, httpcore's, is scanned in tests/test_logs.py).
    assert "DEBUG routing.pipeline" in proxy.log()
    assert "INFO httpx" in proxy.log() and "HTTP Request: POST" in proxy.log()


@pytest.mark.django_db
def test_it_never_renders_a_stored_key_in_the_admin(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "sk-admin-visible-never-abcd"
    provider = provider_create(
        slug="moonshot", kind="openai", base_url="https://api.moonshot.ai/v1"
    )
    key = provider_key_create(provider=provider, label="pool-1", secret=secret)
    staff = User.objects.create_superuser("staff", "staff@example.com", "pw-staff-123!")
    client = Client()
    client.force_login(staff)

    pages = [
        client.get("/admin/routing/providerkey/"),
        client.get(f"/admin/routing/providerkey/{key.pk}/change/"),
        client.get("/admin/routing/providerkey/add/"),
        client.get("/admin/routing/providerkey/?q=abcd"),
    ]
    for page in pages:
        assert page.status_code == 200
        assert secret not in page.content.decode()
    assert "••••abcd" in pages[0].content.decode()
    assert secret not in caplog.text

    # Changing the key through the write-only field seals the new one.
    response = client.post(
        f"/admin/routing/providerkey/{key.pk}/change/",
        {
            "provider": provider.pk,
            "label": "pool-1",
            "secret": "sk-new-one-wxyz",
            "weight": 1,
            "enabled": "on",
        },
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.last4 == "wxyz" and keyring.matches(key.secret_ciphertext, "sk-new-one-wxyz")
    # Saving without typing a secret keeps the current one.
    client.post(
        f"/admin/routing/providerkey/{key.pk}/change/",
        {"provider": provider.pk, "label": "pool-1", "secret": "", "weight": 2, "enabled": "on"},
    )
    key.refresh_from_db()
    assert key.weight == 2 and keyring.matches(key.secret_ciphertext, "sk-new-one-wxyz")


@pytest.mark.django_db
def test_it_stores_only_ciphertext() -> None:
    provider = provider_create(slug="p", kind="openai", base_url="https://api.example.com/v1")
    provider_key_create(provider=provider, label="k", secret="sk-plain-text-1234")
    column = ProviderKey.objects.values_list("secret_ciphertext", flat=True).get()
    assert "sk-plain" not in column and "1234" not in column
    assert column.startswith("gAAAAA")  # a Fernet token


@pytest.mark.django_db
def test_it_rotates_encryption_keys(settings: object) -> None:
    old = list(django_settings.PROXY_ENCRYPTION_KEYS)
    provider = provider_create(slug="p", kind="openai", base_url="https://api.example.com/v1")
    for index in range(3):
        provider_key_create(provider=provider, label=f"k{index}", secret=f"sk-secret-{index}")
    new = Fernet.generate_key().decode()

    with override_settings(PROXY_ENCRYPTION_KEYS=[new, *old]):
        # The new first key encrypts from now on; every old row still decrypts.
        for index, key in enumerate(ProviderKey.objects.order_by("label")):
            assert keyring.matches(key.secret_ciphertext, f"sk-secret-{index}")
            assert not keyring.is_sealed_with_newest(key.secret_ciphertext)
        out = StringIO()
        call_command("rotate_encryption", stdout=out)
        assert "3 key(s) re-encrypted, 0 already current" in out.getvalue()

    with override_settings(PROXY_ENCRYPTION_KEYS=[new]):
        # The old key can go: every row now opens with the new one alone.
        for index, key in enumerate(ProviderKey.objects.order_by("label")):
            assert keyring.matches(key.secret_ciphertext, f"sk-secret-{index}")
        out = StringIO()
        call_command("rotate_encryption", stdout=out)
        assert "0 key(s) re-encrypted, 3 already current" in out.getvalue()


@pytest.mark.parametrize("model", ["auto", "claude-haiku"])  # pass-through, and translated
@pytest.mark.parametrize(
    ("action", "stream"),
    [
        ({"type": "echo_key_in_answer"}, False),  # a 200 body quoting the key
        ({"type": "echo_key_in_answer"}, True),  # a content delta quoting it
        ({"type": "stream_error", "chunks": 2}, True),  # the provider's mid-stream error event
    ],
)
def test_it_removes_a_key_the_provider_quotes_in_an_answer(
    proxy: LiveProxy,
    world: World,
    mock: MockServer,
    model: str,
    action: dict[str, object],
    stream: bool,
) -> None:
    mock.configure(faults=[{"action": action, "times": 1}])
    try:
        seen = exchange(proxy, world.token(world.alice), model, stream)
    finally:
        mock.configure(faults=[])
    assert [r["fault"] for r in mock.requests()][-1] == action["type"]  # the key was quoted
    assert "[redacted]" in seen
    for secret in world.secrets.values():
        assert secret not in seen


def test_it_never_names_the_providers_address_key_or_model_to_a_client(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    token = world.token(world.alice)
    seen = []
    routes = (
        ("auto", "kimi-k2", world.moonshot.base_url, world.secrets["moonshot"]),
        ("claude-haiku", "claude-3-5-haiku", world.anthropic.base_url, world.secrets["anthropic"]),
    )
    for model, upstream, base_url, key in routes:
        # A provider's 404 that names everything about the set-up behind the tier.
        told = (
            f"The model `{upstream}` does not exist or key pool-1 has no access to it "
            f"(served by {base_url}; key {key})."
        )
        body: dict[str, object] = {"error": {"message": told, "type": "invalid_request_error"}}
        if model == "claude-haiku":
            body = {"type": "error", "error": {"type": "not_found_error", "message": told}}
        mock.configure(faults=[{"action": {"type": "status", "status": 404, "body": body}}])
        for stream in (False, True):
            seen.append(exchange(proxy, token, model, stream))
        mock.configure(faults=[])
        # Answers: the model is the tenant's name for it, as asked.
        for stream in (False, True):
            seen.append(exchange(proxy, token, model, stream))
    assert mock.calls() == 8
    assert sum("does not exist" in s for s in seen) == 4  # the provider's message is kept
    assert sum('"model":"auto"' in s.replace(" ", "") for s in seen) == 2
    assert sum('"model":"claude-haiku"' in s.replace(" ", "") for s in seen) == 2
    for text in (
        "kimi-k2",
        "claude-3-5-haiku",
        "pool-1",
        world.moonshot.base_url,
        world.anthropic.base_url,
        "127.0.0.1:",
        *world.secrets.values(),
    ):
        assert not [s for s in seen if text in s], text


@pytest.mark.parametrize("model", ["auto", "claude-haiku"])
def test_it_ends_a_stream_the_provider_failed_with_one_clean_error_event(
    proxy: LiveProxy, world: World, mock: MockServer, model: str
) -> None:
    mock.configure(faults=[{"action": {"type": "stream_error", "chunks": 2}, "times": 1}])
    seen = exchange(proxy, world.token(world.alice), model, True)
    errors = [line for line in seen.splitlines() if line.startswith("data:") and '"error"' in line]
    assert len(errors) == 1, seen
    assert "Rate limit reached for key [redacted]" in errors[0]
    assert "[DONE]" not in seen
    for secret in world.secrets.values():
        assert secret not in seen


def test_it_answers_an_error_sent_as_a_200_with_a_clean_502(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    told = (
        f"Invalid request for key pool-1 ({world.secrets['moonshot']}) at {world.moonshot.base_url}"
    )
    body = {"error": {"message": told, "type": "invalid_request_error"}}
    mock.configure(faults=[{"action": {"type": "body", "body": body}, "times": 1}])
    seen = exchange(proxy, world.token(world.alice), "auto", False)
    assert seen.startswith("502\n") and "Invalid request for key [key]" in seen
    for text in ("pool-1", world.moonshot.base_url, world.secrets["moonshot"]):
        assert text not in seen
    [row] = ledger_rows(world.alice, 1)
    assert (row.status, row.http_status) == ("upstream_error", 502)


def test_it_redacts_a_providers_message_before_shortening_it() -> None:
    route = make_route("openai", base_url="https://api.openai.com/v1", upstream_model="gpt-4o")
    key = route.provider.keys[0]
    secret = "sk-test-0123456789abcdef"  # the key make_route seals
    # The key straddles the length a client is shown: cut first, half of it would get out.
    failure = failed_mid_stream({"message": "x" * (MAX_MESSAGE - 10) + secret})
    shown = redact_error(failure, route=route, key=key).message
    assert len(shown) <= MAX_MESSAGE and "sk-test" not in shown


def test_it_redacts_the_upstream_model_and_its_snapshots_but_not_other_words() -> None:
    route = make_route("openai", base_url="https://api.openai.com/v1", upstream_model="gpt-4o")
    key = route.provider.keys[0]
    told = "gpt-4o-2024-08-06 is overloaded; gpt-4o too. Try my-gpt-4o or gpt-4omega."
    assert redact(told, route=route, key=key) == (
        "auto is overloaded; auto too. Try my-gpt-4o or gpt-4omega."
    )
