"""Sending one request to a provider and turning transport failures into ProxyErrors."""

from __future__ import annotations

import random
from typing import Any

import httpx

from routing.adapters import Adapter
from routing.adapters.base import upstream_error
from routing.context import PooledKey, Route
from routing.errors import ProxyError
from routing.http import timeout_for, upstream_client

# An error body is read for its message only; a provider that answers an error with
# megabytes is cut here.
_MAX_ERROR_BODY = 64 * 1024


def choose_key(keys: tuple[PooledKey, ...]) -> PooledKey:
    if len(keys) == 1:
        return keys[0]
    return random.choices(keys, weights=[k.weight for k in keys])[0]


async def _read_error_body(response: httpx.Response) -> bytes:
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= _MAX_ERROR_BODY:
            break
    return body[:_MAX_ERROR_BODY]


async def asend(
    *,
    adapter: Adapter,
    route: Route,
    key: PooledKey,
    url: str,
    payload: dict[str, Any],
    headers: dict[str, str],
) -> httpx.Response:
    """Open the provider's response (headers read, body not yet) or raise ProxyError."""
    client = upstream_client()
    provider = route.provider
    request = client.build_request(
        "POST",
        url,
        json=payload,
        headers=headers,
        timeout=timeout_for(connect=provider.connect_timeout, read=provider.read_timeout),
    )
    try:
        response = await client.send(request, auth=key.auth, stream=True)
    except httpx.TimeoutException:
        raise ProxyError(
            504, "The provider did not answer in time.", code="upstream_timeout", transient=True
        ) from None
    except httpx.HTTPError:
        raise ProxyError(
            502, "The provider could not be reached.", code="upstream_unreachable", transient=True
        ) from None
    if response.status_code < 400:
        return response
    try:
        raw = await _read_error_body(response)
    except httpx.HTTPError:
        raw = b""
    finally:
        await response.aclose()
    message = adapter.error_message(raw)
    raise upstream_error(
        status=response.status_code,
        # A provider may echo the key it was sent in its error text: never pass that on.
        message=key.auth.scrub(message)[:500] if message else None,
        retry_after=response.headers.get("retry-after"),
    )
