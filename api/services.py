"""The API's writes: each through the project's services, as the calling credential.

Every write runs under ``acting_as("api:<credential>")``, so the audit rows it leaves (the
named ones the services write, ``tenant.suspended`` and so on, and the model signals' rows
for a create or an update) name the platform credential as the actor.

Idempotency (``Idempotency-Key`` on tenant create and token issue): see ``idempotent``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.contrib.auth.models import User
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.utils import timezone

from api.authentication import hash_api_token, new_api_token
from api.errors import ApiError
from api.models import ApiToken, IdempotencyRecord, TenantDeactivation
from audit.context import acting_as
from audit.services import audit_action, audit_record
from tenants import services as tenant_services
from tenants.models import Tenant, Tier
from usage.models import WeekReset
from usage.services import tenant_week_reset

IDEMPOTENCY_TTL = timedelta(hours=24)
IDEMPOTENCY_KEY_MAX = 255


# --- staff API tokens ---------------------------------------------------------------------


@dataclass(frozen=True)
class CreatedApiToken:
    record: ApiToken
    token: str = field(repr=False)  # shown once, never stored: the record holds its SHA-256


def api_token_create(*, name: str, scopes: str, created_by: User | None) -> CreatedApiToken:
    token = new_api_token()
    record = ApiToken(
        name=name,
        scopes=scopes,
        prefix=token[:12],
        token_hash=hash_api_token(token),
        created_by=created_by,
    )
    with transaction.atomic():
        record.full_clean()
        record.save()
        audit_record(action="api_token.created", target=record, changes={"scopes": [None, scopes]})
    return CreatedApiToken(record=record, token=token)


def api_token_revoke(*, token: ApiToken) -> ApiToken:
    """The token stops working at once (every request looks it up); revoking twice is a
    no-op."""
    if token.revoked_at is not None:
        return token
    with transaction.atomic():
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit_record(action="api_token.revoked", target=token)
    return token


# --- tenants ------------------------------------------------------------------------------


def is_deactivated(tenant: Tenant) -> bool:
    """Deleted through the API, and not resumed by staff since (``api.receivers`` clears the
    deactivation whenever the tenant is saved active again)."""
    return tenant.status == Tenant.Status.SUSPENDED and hasattr(tenant, "deactivation")


def _live(tenant: Tenant) -> None:
    if is_deactivated(tenant):
        raise ApiError(
            409,
            "tenant_deactivated",
            f"Tenant {tenant.slug} is deactivated: it can be read, not changed.",
        )


@contextmanager
def _writing(actor: str) -> Iterator[None]:
    # One transaction per write: its audit rows commit with it or not at all.
    with acting_as(actor), transaction.atomic():
        yield


def api_tenant_create(
    *, actor: str, slug: str, name: str, tier: Tier, fields: dict[str, Any]
) -> Tenant:
    with _writing(actor):
        if Tenant.objects.filter(slug=slug).exists():
            raise ApiError(409, "tenant_exists", f"A tenant with slug {slug!r} exists already.")
        try:
            with transaction.atomic():
                return tenant_services.tenant_create(slug=slug, name=name, tier=tier, **fields)
        except IntegrityError:  # created by a concurrent request since the check above
            raise ApiError(
                409, "tenant_exists", f"A tenant with slug {slug!r} exists already."
            ) from None


def api_tenant_update(*, actor: str, tenant: Tenant, changes: dict[str, Any]) -> Tenant:
    with _writing(actor):
        _live(tenant)
        # Only what really changes: an update that changes nothing writes nothing.
        changed = {k: v for k, v in changes.items() if getattr(tenant, k) != v}
        return tenant_services.tenant_update(tenant=tenant, **changed)


def api_tenant_suspend(*, actor: str, tenant: Tenant) -> Tenant:
    with _writing(actor):
        _live(tenant)
        if tenant.is_active:
            tenant_services.tenant_suspend(tenant=tenant)
        return tenant


def api_tenant_resume(*, actor: str, tenant: Tenant) -> Tenant:
    with _writing(actor):
        _live(tenant)
        if not tenant.is_active:
            tenant_services.tenant_activate(tenant=tenant)
        return tenant


def api_tenant_move_tier(*, actor: str, tenant: Tenant, tier: Tier) -> Tenant:
    with _writing(actor):
        _live(tenant)
        if tenant.tier_id != tier.pk:
            # The console's name for it: one row, the tier change merged in.
            with audit_action("tenant.tier_moved", target=tenant):
                tenant_services.tenant_update(tenant=tenant, tier=tier)
        return tenant


def api_tenant_week_reset(*, actor: str, tenant: Tenant) -> WeekReset:
    with acting_as(actor):
        _live(tenant)
        # Not in one transaction with the rest: the service drains and rebuilds Redis
        # counters around its database write, in its own order.
        return tenant_week_reset(tenant=tenant)


def api_tenant_token_issue(
    *, actor: str, tenant: Tenant, ttl: timedelta
) -> tenant_services.IssuedToken:
    with _writing(actor):
        _live(tenant)
        try:
            with audit_action("tenant.token_issued", target=tenant) as entry:
                issued = tenant_services.tenant_token_issue(tenant=tenant, ttl=ttl)
                # The token's id and expiry, never the token.
                entry.changes.update(
                    jti=[None, issued.jti],
                    expires_at=[None, issued.expires_at],
                    lifetime=[None, int(ttl.total_seconds())],
                )
        except tenant_services.TokenLifetimeInvalid as exc:
            raise ApiError(400, "invalid_ttl", str(exc)) from None
        except tenant_services.TokenSigningUnavailable as exc:
            raise ApiError(503, "signing_unavailable", str(exc)) from None
        return issued


def api_tenant_revoke_tokens(*, actor: str, tenant: Tenant) -> Tenant:
    with _writing(actor):
        _live(tenant)
        return tenant_services.tenant_revoke_tokens(tenant=tenant)


def api_tenant_deactivate(*, actor: str, tenant: Tenant) -> Tenant:
    """Suspend the tenant and revoke its tokens, for good (as far as the API goes); the row,
    its ledger and its audit trail stay. Deactivating a deactivated tenant changes nothing."""
    with _writing(actor):
        if is_deactivated(tenant):
            return tenant
        # One row, "tenant.deactivated": the suspension and the revocation merge into it.
        with audit_action("tenant.deactivated", target=tenant):
            if tenant.is_active:
                tenant_services.tenant_suspend(tenant=tenant)
            tenant_services.tenant_revoke_tokens(tenant=tenant)
        deactivation, _ = TenantDeactivation.objects.update_or_create(
            tenant=tenant, defaults={"deactivated_at": timezone.now(), "actor": actor[:200]}
        )
        tenant.deactivation = deactivation
        return tenant


# --- idempotency --------------------------------------------------------------------------
#
# The first successful answer to a request with an Idempotency-Key is kept for 24 hours with
# the credential, the key and a hash of the request (method, path, canonical JSON body). A
# retry with the same key and request gets that answer again, status and body, without a
# second effect; the same key with another request gets 422 idempotency_key_reused.
#
# A token issue's answer holds the token. The platform retries because it lost the answer,
# so a retry must get the same token, not a new one (the first would be live and unknown to
# anyone) and not an error: the answer is kept, but sealed with PROXY_ENCRYPTION_KEYS
# (Fernet, like provider keys), and no longer than the token lives or 24 hours, whichever is
# shorter; expired records are deleted whenever a new key is recorded.
#
# The record is written in the same transaction as the effect: a concurrent retry waits on
# the key's unique index until the first commits (then replays its answer) or rolls back
# (then performs it itself). An answer that is not a success leaves no record: nothing was
# done, and a retry is free to try again.


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict[str, Any]
    keep_until: datetime | None = None  # sooner than the key's 24 hours (a token's expiry)


@dataclass(frozen=True)
class Replayable:
    status: int
    body: dict[str, Any]
    replayed: bool


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def _seal(body: dict[str, Any]) -> str:
    data = json.dumps(body, cls=DjangoJSONEncoder).encode()
    return _fernet(tuple(settings.PROXY_ENCRYPTION_KEYS)).encrypt(data).decode()


def _unseal(sealed: str) -> dict[str, Any]:
    try:
        data = _fernet(tuple(settings.PROXY_ENCRYPTION_KEYS)).decrypt(sealed.encode())
    except InvalidToken:
        raise ApiError(
            409,
            "idempotency_record_unreadable",
            "The stored answer for this Idempotency-Key cannot be read any more "
            "(encryption keys rotated): use a new key.",
        ) from None
    body: dict[str, Any] = json.loads(data)
    return body


def request_fingerprint(*, method: str, path: str, body: Any) -> str:
    canonical = json.dumps(
        {"method": method, "path": path, "body": body},
        sort_keys=True,
        separators=(",", ":"),
        cls=DjangoJSONEncoder,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_idempotency_key(key: str) -> None:
    if not 0 < len(key) <= IDEMPOTENCY_KEY_MAX or not all("!" <= c <= "~" for c in key):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"An Idempotency-Key is 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters.",
        )


def credential_digest(credential: str) -> str:
    """What idempotency records are keyed on: a credential id of any length (a JWT's sub is
    the platform's to choose) in the record's fixed 64 characters."""
    return hashlib.sha256(credential.encode()).hexdigest()


def idempotent(
    *, credential: str, key: str | None, fingerprint: str, perform: Callable[[], Outcome]
) -> Replayable:
    if key is None:
        outcome = perform()
        return Replayable(status=outcome.status, body=outcome.body, replayed=False)
    check_idempotency_key(key)
    credential = credential_digest(credential)
    now = timezone.now()
    with transaction.atomic():
        IdempotencyRecord.objects.filter(expires_at__lte=now).delete()
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(
                    credential=credential,
                    key=key,
                    request_hash=fingerprint,
                    created_at=now,
                    expires_at=now + IDEMPOTENCY_TTL,
                )
        except IntegrityError:
            return _replay(credential=credential, key=key, fingerprint=fingerprint)
        outcome = perform()
        if not 200 <= outcome.status < 300:
            record.delete()
            return Replayable(status=outcome.status, body=outcome.body, replayed=False)
        record.status_code = outcome.status
        record.sealed_body = _seal(outcome.body)
        if outcome.keep_until is not None:
            record.expires_at = min(record.expires_at, outcome.keep_until)
        record.save(update_fields=["status_code", "sealed_body", "expires_at"])
    return Replayable(status=outcome.status, body=outcome.body, replayed=False)


def _replay(*, credential: str, key: str, fingerprint: str) -> Replayable:
    record = IdempotencyRecord.objects.filter(credential=credential, key=key).first()
    if record is None or record.status_code is None:
        # Only possible if the first request's transaction is still open in this one's
        # snapshot; the unique index makes the retry wait for it otherwise.
        raise ApiError(
            409,
            "idempotency_request_in_progress",
            "A request with this Idempotency-Key is still being served: retry shortly.",
        )
    if record.request_hash != fingerprint:
        raise ApiError(
            422,
            "idempotency_key_reused",
            "This Idempotency-Key was used for another request: use a new key per request.",
        )
    return Replayable(status=record.status_code, body=_unseal(record.sealed_body), replayed=True)
