"""The console's WebSocket endpoints (proxy_site/asgi.py mounts them)."""

from __future__ import annotations

from django.urls import URLPattern

websocket_urlpatterns: list[URLPattern] = []
