from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "llm-proxy"
admin.site.site_title = "llm-proxy admin"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("routing.urls")),
]
