"""The staff console's pages, under /admin/ beside Django's own (proxy_site/urls.py)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver

urlpatterns: list[URLPattern | URLResolver] = []
