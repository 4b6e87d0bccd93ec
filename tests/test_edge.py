"""Edge hygiene: secrets out of error reports, a throttled admin login, security headers."""

from __future__ import annotations

import json
import os
import sys

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.signals import got_request_exception
from django.http import HttpRequest
from django.test import Client, RequestFactory
from django.views.debug import ExceptionReporter

from routing import keyring
from routing.config import config_apply
from routing.models import ProviderKey
from routing.services import provider_create

pytestmark = pytest.mark.core


class Secret:
    """A secret made at run time, whose repr says nothing: the test's own frame is in the
    report too, and only what the proxy's frames show is under test."""

    def __init__(self) -> None:
        self.value = f"sk-{os.urandom(8).hex()}"

    def __repr__(self) -> str:
        return "Secret()"


def report_of_current_exception(post: dict[str, str] | None = None) -> str:
    request = RequestFactory().post("/admin/routing/providerkey/add/", post or {})
    reporter = ExceptionReporter(request, *sys.exc_info())
    return reporter.get_traceback_text() + reporter.get_traceback_html()


@pytest.mark.django_db
def test_it_keeps_a_key_being_saved_out_of_error_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise RuntimeError("encryption unavailable")

    monkeypatch.setattr(keyring, "_current", broken)
    provider = provider_create(slug="p", kind="openai", base_url="https://api.example.com/v1")
    staff = User.objects.create_superuser("staff", "staff@example.com", "pw-staff-123!")
    reports: list[str] = []

    def on_exception(sender: object, request: HttpRequest, **kwargs: object) -> None:
        # What Django would mail to the admins or show on a DEBUG page, for this request.
        reporter = ExceptionReporter(request, *sys.exc_info())
        reports.append(reporter.get_traceback_text() + reporter.get_traceback_html())

    got_request_exception.connect(on_exception)
    try:
        client = Client(raise_request_exception=False)
        client.force_login(staff)
        secret = Secret()
        page = client.post(
            "/admin/routing/providerkey/add/",
            {
                "provider": provider.pk,
                "label": "k",
                "secret": secret.value,
                "weight": 1,
                "enabled": "on",
            },
        )
    finally:
        got_request_exception.disconnect(on_exception)
    assert page.status_code == 500
    (report,) = reports
    assert "encryption unavailable" in report  # it is the report of that failure
    assert secret.value not in report  # neither in the POST data nor in any frame's locals


@pytest.mark.django_db
def test_it_keeps_the_environment_out_of_config_error_reports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_save(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(ProviderKey, "save", broken_save)
    data = {
        "providers": {
            "p": {
                "kind": "openai",
                "base_url": "https://api.example.com/v1",
                "keys": [{"label": "k", "env": "THE_KEY"}],
            }
        }
    }
    secret = Secret()
    try:
        config_apply(data=data, environ={"THE_KEY": secret.value})
    except RuntimeError:
        report = report_of_current_exception()
    assert "database went away" in report
    assert secret.value not in report


def test_it_hides_secret_settings_in_error_reports() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        report = report_of_current_exception()
    signing_key = json.loads(settings.JWT_SIGNING_JWK)["d"]
    assert signing_key not in report
    for key in settings.PROXY_ENCRYPTION_KEYS:
        assert key not in report
    assert settings.SECRET_KEY not in report


@pytest.mark.django_db
def test_it_throttles_admin_logins_per_username_and_address() -> None:
    cache.clear()
    User.objects.create_superuser("staff", "staff@example.com", "right-password-1!")
    attacker = Client(REMOTE_ADDR="203.0.113.9")
    for _ in range(settings.ADMIN_LOGIN_MAX_FAILURES):
        page = attacker.post("/admin/login/", {"username": "staff", "password": "wrong"})
        assert page.status_code == 200 and "Too many failed logins" not in page.content.decode()
    # Now even the right password is refused from there...
    page = attacker.post("/admin/login/", {"username": "staff", "password": "right-password-1!"})
    assert page.status_code == 200
    assert "Too many failed logins" in page.content.decode()
    # ...while staff elsewhere still get in.
    staff = Client(REMOTE_ADDR="198.51.100.7")
    page = staff.post("/admin/login/", {"username": "staff", "password": "right-password-1!"})
    assert page.status_code == 302


def test_it_sends_security_headers_on_admin_pages() -> None:
    page = Client().get("/admin/login/")
    assert page["X-Frame-Options"] == "DENY"
    assert page["X-Content-Type-Options"] == "nosniff"
    assert page["Referrer-Policy"] == "same-origin"
    assert page["Cross-Origin-Opener-Policy"] == "same-origin"
