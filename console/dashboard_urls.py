"""The dashboard's pages: staff only (the admin's login guards them, as any admin page), and
only for staff who may read tenants, since they show every tenant's week and requests."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.decorators import permission_required
from django.urls import URLPattern, URLResolver, path

from console import dashboard
from console.consumers import PERMISSION

_readers = permission_required(PERMISSION, raise_exception=True)

urlpatterns: list[URLPattern | URLResolver] = [
    path(
        "dashboard/",
        admin.site.admin_view(_readers(dashboard.dashboard)),
        name="console-dashboard",
    ),
    path(
        "dashboard/data.json",
        admin.site.admin_view(_readers(dashboard.dashboard_data)),
        name="console-dashboard-data",
    ),
]
