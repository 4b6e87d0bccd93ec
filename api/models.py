"""What the provisioning API keeps of its own: staff API tokens, idempotency records, and
which tenants it deactivated."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from tenants.models import Tenant


class ApiToken(models.Model):
    """A staff-made platform credential: ``lpk_<random>``, stored only as its SHA-256.

    Shown once, when the admin creates it; a lost one is revoked and replaced. Requests made
    with it are audited as ``api:<name>``.
    """

    class Scopes(models.TextChoices):
        READ = "read", "Read"
        READ_WRITE = "read write", "Read and write"

    name = models.SlugField(
        max_length=100, unique=True, help_text="Who uses it: audit rows name it api:<name>."
    )
    scopes = models.CharField(max_length=20, choices=Scopes.choices, default=Scopes.READ)
    # The first characters, to tell tokens apart in the admin without holding the secret.
    prefix = models.CharField(max_length=12, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes.split())


class IdempotencyRecord(models.Model):
    """The first answer to a request sent with an ``Idempotency-Key``, for its retries.

    Keyed by the credential (the SHA-256 of its id: a JWT's sub may be long) and the key (two
    platforms' keys never meet). ``request_hash``
    covers the method, the path and the body: the same key for another request is refused.
    ``status_code`` is null while the first request is still being served. The body is
    sealed with PROXY_ENCRYPTION_KEYS: a token issue's answer holds a live token.
    """

    credential = models.CharField(max_length=64)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True)
    sealed_body = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["credential", "key"], name="idempotency_unique_key")
        ]

    def __str__(self) -> str:
        return f"{self.credential} {self.key}"


class TenantDeactivation(models.Model):
    """A tenant the API deleted: suspended with its tokens revoked, kept with its ledger.

    The tenant row stays (the ledger refers to it, and its slug must not be handed to
    someone else while old tokens may still name it). It counts as deactivated while it is
    suspended; staff resuming it (in the admin, the console) deletes the row
    (``api.receivers``), so a later suspension is an ordinary one again.
    """

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="deactivation")
    deactivated_at = models.DateTimeField(default=timezone.now)
    actor = models.CharField(max_length=200)

    def __str__(self) -> str:
        return f"{self.tenant} deactivated"
