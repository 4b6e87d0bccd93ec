"""Routes built in memory for the codec unit tests, as routing/context.py builds them."""

from __future__ import annotations

from decimal import Decimal

from cryptography.fernet import Fernet
from django.test import override_settings

from routing.context import PooledKey, Route, Upstream
from routing.keyring import ProviderKeyAuth, seal

SECRET = "sk-test-0123456789abcdef"  # the pooled key every such route holds


def make_route(
    kind: str, *, base_url: str, upstream_model: str, model: str = "auto", secret: str = SECRET
) -> Route:
    """A route of a ``kind`` provider with one pooled key, sealed and opened as the proxy
    does it (under a throwaway encryption key)."""
    with override_settings(PROXY_ENCRYPTION_KEYS=[Fernet.generate_key().decode()]):
        ciphertext, last4 = seal(secret)
        header = "authorization" if kind == "openai" else "x-api-key"
        auth = ProviderKeyAuth(ciphertext, header=header)
    key = PooledKey(id=1, label="test", last4=last4, weight=1, auth=auth)
    upstream = Upstream(
        id=1,
        slug=f"{kind}-test",
        kind=kind,
        base_url=base_url,
        connect_timeout=5.0,
        first_byte_timeout=30.0,
        idle_timeout=30.0,
        total_timeout=300.0,
        keys=(key,),
    )
    return Route(
        id=1,
        model=model,
        upstream_model=upstream_model,
        priority=0,
        provider=upstream,
        input_usd_per_mtok=Decimal("1.00"),
        output_usd_per_mtok=Decimal("4.00"),
    )
