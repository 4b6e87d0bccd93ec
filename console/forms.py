"""The staff console's forms: the tenant page's actions (each a POST with CSRF)."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django import forms
from django.conf import settings

from tenants.models import Tenant, Tier

# The lifetimes offered for a token; those over JWT_MAX_LIFETIME are left out (the proxy
# would refuse such a token).
TOKEN_LIFETIMES: tuple[tuple[str, str, timedelta], ...] = (
    ("1h", "1 hour", timedelta(hours=1)),
    ("1d", "1 day", timedelta(days=1)),
    ("7d", "7 days", timedelta(days=7)),
    ("30d", "30 days", timedelta(days=30)),
)
DEFAULT_LIFETIME = "7d"


def token_lifetimes() -> list[tuple[str, str, timedelta]]:
    limit = timedelta(seconds=settings.JWT_MAX_LIFETIME)
    allowed = [choice for choice in TOKEN_LIFETIMES if choice[2] <= limit]
    return allowed or [("max", "the longest allowed", limit)]


class IssueTokenForm(forms.Form):
    ttl = forms.ChoiceField(label="Lifetime")
    # Each rendered form has its own nonce and a nonce is used once: resubmitting the form (a
    # reload of the result page) neither shows the token again nor issues a second one.
    nonce = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = token_lifetimes()
        ttl = self.fields["ttl"]
        assert isinstance(ttl, forms.ChoiceField)
        ttl.choices = [(value, label) for value, label, _ in choices]
        ttl.widget.attrs["id"] = "issue-token-ttl"
        values = [value for value, _, _ in choices]
        ttl.initial = DEFAULT_LIFETIME if DEFAULT_LIFETIME in values else values[-1]
        self.fields["nonce"].initial = secrets.token_urlsafe(24)

    @property
    def lifetime(self) -> timedelta:
        wanted = self.cleaned_data["ttl"]
        return next(ttl for value, _, ttl in token_lifetimes() if value == wanted)


class MoveTierForm(forms.Form):
    tier = forms.ModelChoiceField(queryset=Tier.objects.none(), label="Tier", empty_label=None)

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tier = self.fields["tier"]
        assert isinstance(tier, forms.ModelChoiceField)
        # Any tier but the current one: "moving" to where it is would be an action that
        # changes nothing and still writes an audit row.
        tier.queryset = Tier.objects.exclude(pk=tenant.tier_id).order_by("slug")
        tier.widget.attrs["id"] = "move-tier-select"
