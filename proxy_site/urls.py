from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from proxy_site import probes
from proxy_site.security import ThrottledAdminLoginForm

admin.site.site_header = "llm-proxy"
admin.site.site_title = "llm-proxy admin"
admin.site.login_form = ThrottledAdminLoginForm

urlpatterns = [
    path("", probes.root, name="root"),
    path("healthz", probes.healthz, name="healthz"),
    path("readyz", probes.readyz, name="readyz"),
    path("metrics", probes.metrics_view, name="metrics"),
    # The staff console's pages first: they live under /admin/ beside the admin's own.
    path("admin/", include("console.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include("api.urls")),
    path("", include("routing.urls")),
]
