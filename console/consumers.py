"""The dashboard's live feed: a WebSocket per open dashboard, in the group every settled
request is announced to (console/live.py), on whichever process served it: the channel layer
carries it across processes (Redis publish/subscribe on CHANNEL_LAYER_REDIS_URL, which is
REDIS_URL's server, or a node of its cluster, unless set apart)."""

from __future__ import annotations

import time
from typing import Any

from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

GROUP = "console.dashboard"
# Closing before accepting refuses the handshake (HTTP 403); this code is for a socket that
# was accepted, should a later check refuse it.
REFUSED = 4403


# How long an open socket trusts its handshake: then the session is read again, so a user
# logged out, deactivated or no longer staff stops receiving within this many seconds.
RECHECK_SECONDS = 30.0
# What the dashboard shows (every tenant's week and requests): who may read tenants.
PERMISSION = "tenants.view_tenant"


def is_staff(user: Any) -> bool:
    return bool(
        user is not None
        and getattr(user, "is_authenticated", False)
        and getattr(user, "is_active", False)
        and getattr(user, "is_staff", False)
    )


class DashboardConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]  # untyped base
    """Sends each ``usage.settled`` event of the group to the browser, as it came."""

    groups: list[str] = []  # joined in connect(), once the user is known to be staff

    async def connect(self) -> None:
        # scope["user"] is the admin session's user (AuthMiddlewareStack), read once: the
        # admin's pages check each request, a socket only its handshake.
        user = self.scope.get("user")
        if not is_staff(user) or not await _has_perm(user):
            await self.close()
            return
        await self.channel_layer.group_add(GROUP, self.channel_name)
        self.joined = True
        self.checked_at = time.monotonic()
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if getattr(self, "joined", False):
            await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        # The feed is one-way; a client's message is ignored (a "ping" keeps proxies happy).
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def usage_settled(self, event: dict[str, Any]) -> None:
        if await self._still_allowed():
            await self.send_json(event)

    async def usage_batch(self, event: dict[str, Any]) -> None:
        """What a process settled in its last moment (console/live.py): to the browser one
        ``usage.settled`` event at a time, as if each had come alone."""
        if await self._still_allowed():
            for settled in event["events"]:
                await self.send_json(settled)

    async def _still_allowed(self) -> bool:
        if time.monotonic() - self.checked_at > RECHECK_SECONDS:
            self.checked_at = time.monotonic()
            # The session and the user as they are now, not as they were at the handshake.
            user = await get_user(self.scope)
            if not is_staff(user) or not await _has_perm(user):
                await self.close(code=REFUSED)
                return False
        return True


async def _has_perm(user: Any) -> bool:
    # Permissions come from the database (groups): read in a thread, off the event loop.
    return bool(await database_sync_to_async(user.has_perm)(PERMISSION))
