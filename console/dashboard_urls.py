"""The dashboard's pages, staff only (the admin's login guards them, as any admin page)."""

from __future__ import annotations

from django.contrib import admin
from django.urls import URLPattern, URLResolver, path

from console import dashboard

urlpatterns: list[URLPattern | URLResolver] = [
    path("dashboard/", admin.site.admin_view(dashboard.dashboard), name="console-dashboard"),
    path(
        "dashboard/data.json",
        admin.site.admin_view(dashboard.dashboard_data),
        name="console-dashboard-data",
    ),
]
