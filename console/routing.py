"""The console's WebSocket endpoints (proxy_site/asgi.py mounts them behind the admin's
session and the allowed-hosts origin check)."""

from __future__ import annotations

from django.urls import URLPattern, path

from console.consumers import DashboardConsumer

DASHBOARD_PATH = "ws/console/dashboard/"

websocket_urlpatterns: list[URLPattern] = [
    path(DASHBOARD_PATH, DashboardConsumer.as_asgi(), name="console-dashboard-ws"),
]
