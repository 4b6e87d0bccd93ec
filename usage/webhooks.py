"""Outgoing webhooks, signed per the Standard Webhooks specification.

Each delivery carries three headers (https://www.standardwebhooks.com):

    webhook-id         the message id: the same on every retry, so receivers dedupe by it
    webhook-timestamp  the attempt's time, in Unix seconds (receivers refuse stale ones, so
                       each retry is signed afresh)
    webhook-signature  "v1," + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")), the key
                       being the base64-decoded part of the "whsec_..." secret

Deliveries use a client of their own, not the upstream pool (core/http.py): a slow or dead
webhook endpoint must never hold a connection a provider call needs, and its timeouts are
short and fixed, not a provider's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import time
import weakref

import httpx

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)

# Short: a webhook receiver should answer at once and do its work later; one that does not
# is retried with backoff rather than waited for.
_TIMEOUT = httpx.Timeout(5.0, connect=2.0)

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


class SecretInvalid(ValueError):
    """The signing secret is not "whsec_" followed by base64."""


def secret_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (the prefix is optional, as the reference
    libraries have it)."""
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise SecretInvalid("the webhook secret is not whsec_ followed by base64") from None
    if not key:
        raise SecretInvalid("the webhook secret is empty")
    return key


def sign(*, secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value of one delivery."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(
    *, secret: str, msg_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """Every header of one delivery attempt (timestamp: now unless given)."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret=secret, msg_id=msg_id, timestamp=stamp, body=body),
    }


def webhook_client() -> httpx.AsyncClient:
    """The event loop's client for webhook deliveries."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(
            timeout=_TIMEOUT,
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=4),
            # A redirect would re-send a signed body somewhere the operator never configured.
            follow_redirects=False,
            trust_env=False,
            headers={"user-agent": "llm-proxy-webhooks"},
        )
        _clients[loop] = client
    return client


async def adeliver(*, url: str, secret: str, msg_id: str, body: bytes) -> str:
    """POST one signed delivery: "" when the receiver answered 2xx, else why not (for the
    event's ``last_error``; never the secret)."""
    try:
        headers = signed_headers(secret=secret, msg_id=msg_id, body=body)
    except SecretInvalid as exc:
        return str(exc)
    try:
        response = await webhook_client().post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= response.status_code < 300:
        return ""
    return f"HTTP {response.status_code}"
