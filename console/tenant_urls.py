"""The tenant page and its actions, under /admin/console/tenants/<id>/ (console/urls.py).

Each view is wrapped by ``admin.site.admin_view``: staff only (others go to the admin's
login), CSRF-checked, never cached.
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import URLPattern, path

from console import tenant_page as views

urlpatterns: list[URLPattern] = [
    path(
        "console/tenants/<int:tenant_id>/",
        admin.site.admin_view(views.tenant_page),
        name="console-tenant",
    ),
    path(
        "console/tenants/<int:tenant_id>/issue-token/",
        admin.site.admin_view(views.tenant_issue_token),
        name="console-tenant-issue-token",
    ),
    path(
        "console/tenants/<int:tenant_id>/revoke-tokens/",
        admin.site.admin_view(views.tenant_revoke_tokens),
        name="console-tenant-revoke-tokens",
    ),
    path(
        "console/tenants/<int:tenant_id>/suspend/",
        admin.site.admin_view(views.tenant_suspend),
        name="console-tenant-suspend",
    ),
    path(
        "console/tenants/<int:tenant_id>/resume/",
        admin.site.admin_view(views.tenant_resume),
        name="console-tenant-resume",
    ),
    path(
        "console/tenants/<int:tenant_id>/reset-week/",
        admin.site.admin_view(views.tenant_reset_week),
        name="console-tenant-reset-week",
    ),
    path(
        "console/tenants/<int:tenant_id>/move-tier/",
        admin.site.admin_view(views.tenant_move_tier),
        name="console-tenant-move-tier",
    ),
]
