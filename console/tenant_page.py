"""The staff console's tenant page: a tenant's week against its caps, its recent requests,
and the actions staff take on it.

Every action is a POST (CSRF-checked by ``admin.site.admin_view``) that goes through a
service, so it is validated and announced like any other write: the services announce the
change, every process drops its cached tenant context (at once here, within
PROXY_CONTEXT_POLL elsewhere through the Redis generation), and the next proxy request sees
it. A week reset rebuilds the shared Redis counters, which every process reads per request.
Each action writes exactly one audit row (the named action, with the model change merged in).

An issued token is shown once, in the answer to the POST that issued it: it is not stored
(not in the session, not in a message, not in the audit row: the row names its ``jti``),
the answer is ``no-store``, and the form's one-time nonce makes a resubmission (a reload)
redirect to the page instead of showing it again or issuing another.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from audit.context import acting_as
from audit.services import OpenAction, audit_action
from console.forms import IssueTokenForm, MoveTierForm
from console.selectors import project_week
from routing.models import ModelRoute
from tenants import services as tenant_services
from tenants.models import Tenant
from usage.bill import NANOS, to_nanos
from usage.models import UsageRecord, WeekReset
from usage.selectors import tenants_week_usage
from usage.services import tenant_week_reset
from usage.weeks import Week, week_of

logger = logging.getLogger(__name__)

RECENT_REQUESTS = 50
# How long a used issue-form nonce is remembered: longer than anyone leaves a result page
# open before reloading it.
_NONCE_TTL = 24 * 3600
_VIEW = "tenants.view_tenant"
_CHANGE = "tenants.change_tenant"


# --- formatting ---------------------------------------------------------------------------


def usd(value: Decimal | None) -> str:
    """A cost as true as the ledger holds it: cents at least, and every digit below a cent
    that is not zero ($0.000123, never "$0.00" for a request that cost something)."""
    if value is None:
        return "—"
    text = f"{value:.9f}".rstrip("0")
    whole, _, fraction = text.partition(".")
    return f"${whole}.{fraction.ljust(2, '0')}"


def percent(used: Decimal | int, cap: Decimal | int | None) -> str:
    if not cap:
        return ""
    return f"{100 * Decimal(used) / Decimal(cap):.1f}%"


# --- what the page shows --------------------------------------------------------------------


@dataclass(frozen=True)
class CapLine:
    """One weekly cap (tokens or cost): used, the cap, and where the week is heading."""

    label: str
    used: str
    cap: str  # "" when there is no cap
    percent: str
    over: bool
    projected: str
    reaches_cap_at: datetime | None


def _cap_line(
    *, label: str, used: int, cap: int | None, week: Week, now: datetime, show: Callable[[int], str]
) -> CapLine:
    projection = project_week(used=used, cap=cap, week=week, now=now)
    return CapLine(
        label=label,
        used=show(used),
        cap=show(cap) if cap is not None else "",
        percent=percent(used, cap),
        over=cap is not None and used >= cap,
        projected=show(projection.projected),
        reaches_cap_at=projection.reaches_cap_at,
    )


def _tokens(value: int) -> str:
    return f"{value:,}"


def _nanos(value: int) -> str:
    return usd(Decimal(value) / NANOS)


def _week_lines(tenant: Tenant, week: Week, now: datetime) -> dict[str, Any]:
    usage = tenants_week_usage(tenants=[tenant], week=week)[tenant.pk]
    cost_cap = tenant.weekly_cost_cap_usd
    resets = WeekReset.objects.filter(tenant=tenant, week=week.id).aggregate(
        count=Count("pk"),
        tokens=Coalesce(Sum("tokens"), 0),
        cost=Coalesce(Sum("cost_usd"), Decimal(0)),
    )
    return {
        "lines": [
            _cap_line(
                label="Tokens",
                used=usage.tokens,
                cap=tenant.weekly_token_cap,
                week=week,
                now=now,
                show=_tokens,
            ),
            _cap_line(
                label="Cost",
                # In nanodollars, as the counters hold it: the projection works in integers.
                used=to_nanos(usage.cost_usd),
                cap=None if cost_cap is None else to_nanos(cost_cap),
                week=week,
                now=now,
                show=_nanos,
            ),
        ],
        "reserved_tokens": usage.reserved_tokens,
        "live": usage.live,
        "resets": {
            "count": resets["count"],
            "tokens": resets["tokens"],
            "cost": usd(resets["cost"]),
        },
    }


@dataclass(frozen=True)
class RequestRow:
    record: UsageRecord
    cost: str


def _recent_requests(tenant: Tenant) -> list[RequestRow]:
    records = UsageRecord.objects.filter(tenant=tenant).order_by("-created_at")[:RECENT_REQUESTS]
    return [RequestRow(record=record, cost=usd(record.cost_usd)) for record in records]


def _example_model(tenant: Tenant) -> str:
    model = (
        ModelRoute.objects.filter(tier_id=tenant.tier_id, enabled=True)
        .order_by("model")
        .values_list("model", flat=True)
        .first()
    )
    return model or "MODEL"


# --- the audit row of each action ---------------------------------------------------------


@contextmanager
def _audited(request: HttpRequest, action: str, tenant: Tenant) -> Iterator[OpenAction]:
    """One audit row for the action, named for it, by the staff user acting; the tenant's
    model change (status, tier, token_version) is merged into it, not written beside it."""
    user = request.user
    actor = user if isinstance(user, AbstractBaseUser) else "anonymous"
    # Explicit: the console's actions name their staff user whatever middleware is installed.
    with acting_as(actor), audit_action(action, target=tenant) as entry:
        yield entry


# --- views --------------------------------------------------------------------------------


def _staff(request: HttpRequest) -> User | None:
    return request.user if isinstance(request.user, User) else None


def _tenant(request: HttpRequest, tenant_id: int, *, permission: str) -> Tenant:
    # admin_view lets in any active staff user; as in the tenant admin, looking takes the
    # permission to view (or change) tenants, and acting the permission to change them.
    if not (request.user.has_perm(permission) or request.user.has_perm(_CHANGE)):
        raise PermissionDenied
    return get_object_or_404(Tenant.objects.select_related("tier"), pk=tenant_id)


def _page_url(tenant: Tenant) -> str:
    return reverse("console-tenant", args=[tenant.pk])


def _back(tenant: Tenant) -> HttpResponseRedirect:
    # 303: the browser follows with a GET, so a reload shows the page, not the action again.
    response = HttpResponseRedirect(_page_url(tenant))
    response.status_code = 303
    return response


def _context(request: HttpRequest, tenant: Tenant, **extra: Any) -> dict[str, Any]:
    now = timezone.now()
    week = week_of(now)
    return {
        **admin.site.each_context(request),
        "title": f"Tenant {tenant.slug}",
        "subtitle": tenant.name,
        "tenant": tenant,
        "opts": Tenant._meta,
        "week": week,
        "now": now,
        "can_change": request.user.has_perm(_CHANGE),
        **_week_lines(tenant, week, now),
        **extra,
    }


@require_GET
def tenant_page(request: HttpRequest, tenant_id: int) -> HttpResponse:
    tenant = _tenant(request, tenant_id, permission=_VIEW)
    context = _context(
        request,
        tenant,
        issue_form=IssueTokenForm(),
        move_form=MoveTierForm(tenant=tenant),
        requests=_recent_requests(tenant),
    )
    return render(request, "console/tenant.html", context)


@require_POST
def tenant_issue_token(request: HttpRequest, tenant_id: int) -> HttpResponse:
    tenant = _tenant(request, tenant_id, permission=_CHANGE)
    form = IssueTokenForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose one of the lifetimes offered.")
        return _back(tenant)
    if not _first_use(form.cleaned_data["nonce"]):
        messages.warning(
            request,
            "That token was shown once and is not shown again. If it was lost, issue another.",
        )
        return _back(tenant)
    try:
        with _audited(request, "tenant.token_issued", tenant) as entry:
            issued = tenant_services.tenant_token_issue(
                tenant=tenant, ttl=form.lifetime, by=_staff(request)
            )
            # The token's id and expiry, never the token.
            entry.changes.update(
                jti=[None, issued.jti],
                expires_at=[None, issued.expires_at],
                lifetime=[None, form.cleaned_data["ttl"]],
            )
    except (tenant_services.TokenLifetimeInvalid, tenant_services.TokenSigningUnavailable) as exc:
        messages.error(request, str(exc))
        return _back(tenant)
    base = request.build_absolute_uri("/").rstrip("/")
    model = _example_model(tenant)
    context = _context(
        request,
        tenant,
        title=f"Token issued for {tenant.slug}",
        issued=issued,
        proxy_url=base,
        snippets=_snippets(base=base, token=issued.token, model=model),
    )
    response = render(request, "console/tenant_token.html", context)
    # Not kept by the browser or any cache on the way: the page holds a live credential.
    response["Cache-Control"] = "no-store"
    return response


def _first_use(nonce: str) -> bool:
    """True the first time a form's nonce is seen (atomic in the shared cache: of two
    submissions of one form, one issues)."""
    try:
        return bool(cache.add(f"console:issue-nonce:{nonce}", 1, _NONCE_TTL))
    except Exception:  # the cache's backend errors (Redis down) have no common base class
        # Without the cache a resubmission cannot be told apart: it issues a second token,
        # which is shown once too; refusing staff a token because Redis is down is worse.
        logger.warning("issue-form nonce not checked: the cache is unavailable", exc_info=True)
        return True


def _snippets(*, base: str, token: str, model: str) -> dict[str, str]:
    """How to call the proxy with the new token: curl, and the OpenAI and Anthropic SDKs."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello"}]})
    curl = (
        f"curl {shlex.quote(base + '/v1/chat/completions')} \\\n"
        f'  -H "Authorization: Bearer {token}" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        f"  -d {shlex.quote(body)}"
    )
    # json.dumps of a str is a valid Python string literal (ASCII, escaped).
    openai_sdk = (
        "from openai import OpenAI\n\n"
        f"client = OpenAI(base_url={json.dumps(base + '/v1')}, api_key={json.dumps(token)})\n"
        "reply = client.chat.completions.create(\n"
        f"    model={json.dumps(model)},\n"
        '    messages=[{"role": "user", "content": "Hello"}],\n'
        ")\n"
        "print(reply.choices[0].message.content)\n"
    )
    anthropic_sdk = (
        "from anthropic import Anthropic\n\n"
        f"client = Anthropic(base_url={json.dumps(base)}, api_key={json.dumps(token)})\n"
        "message = client.messages.create(\n"
        f"    model={json.dumps(model)},\n"
        "    max_tokens=1024,\n"
        '    messages=[{"role": "user", "content": "Hello"}],\n'
        ")\n"
        "print(message.content[0].text)\n"
    )
    return {"curl": curl, "openai": openai_sdk, "anthropic": anthropic_sdk}


@require_POST
def tenant_revoke_tokens(request: HttpRequest, tenant_id: int) -> HttpResponse:
    tenant = _tenant(request, tenant_id, permission=_CHANGE)
    with _audited(request, "tenant.tokens_revoked", tenant):
        tenant_services.tenant_revoke_tokens(tenant=tenant, by=_staff(request))
    messages.success(request, f"Every token of {tenant.slug} issued so far is revoked.")
    return _back(tenant)


@require_POST
def tenant_suspend(request: HttpRequest, tenant_id: int) -> HttpResponse:
    tenant = _tenant(request, tenant_id, permission=_CHANGE)
    if not tenant.is_active:
        messages.info(request, f"{tenant.slug} is suspended already.")
        return _back(tenant)
    with _audited(request, "tenant.suspended", tenant):
        tenant_services.tenant_suspend(tenant=tenant, by=_staff(request))
    messages.success(request, f"{tenant.slug} is suspended: its requests get 403.")
    return _back(tenant)


@require_POST
def tenant_resume(request: HttpRequest, tenant_id: int) -> HttpResponse:
    tenant = _tenant(request, tenant_id, permission=_CHANGE)
    if tenant.is_active:
        messages.info(request, f"{tenant.slug} is active already.")
        return _back(tenant)
    with _audited(request, "tenant.resumed", tenant):
        tenant_services.tenant_activate(tenant=tenant, by=_staff(request))
    messages.success(request, f"{tenant.slug} is active again.")
    return _back(tenant)


@require_POST
def tenant_reset_week(request: HttpRequest, tenant_id: int) -> HttpResponse:
    tenant = _tenant(request, tenant_id, permission=_CHANGE)
    with _audited(request, "tenant.week_reset", tenant) as entry:
        reset = tenant_week_reset(tenant=tenant, by=_staff(request))
        entry.changes.update(
            week=[None, reset.week],
            forgiven_tokens=[None, reset.tokens],
            forgiven_cost_usd=[None, reset.cost_usd],
        )
    messages.success(
        request,
        f"Week {reset.week} of {tenant.slug} reset: forgave {reset.tokens:,} tokens and "
        f"{usd(reset.cost_usd)}.",
    )
    return _back(tenant)


@require_POST
def tenant_move_tier(request: HttpRequest, tenant_id: int) -> HttpResponse:
    tenant = _tenant(request, tenant_id, permission=_CHANGE)
    form = MoveTierForm(request.POST, tenant=tenant)
    if not form.is_valid():
        messages.error(request, "Choose another tier.")
        return _back(tenant)
    before, after = tenant.tier, form.cleaned_data["tier"]
    with _audited(request, "tenant.tier_moved", tenant):
        tenant_services.tenant_update(tenant=tenant, tier=after)
    messages.success(request, f"{tenant.slug} moved from tier {before} to tier {after}.")
    return _back(tenant)
