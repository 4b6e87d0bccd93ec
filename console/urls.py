"""The staff console's pages, under /admin/ beside Django's own (proxy_site/urls.py)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path

urlpatterns: list[URLPattern | URLResolver] = [
    path("", include("console.dashboard_urls")),
    path("", include("console.tenant_urls")),
]
