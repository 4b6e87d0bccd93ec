from __future__ import annotations

from django.urls import path, re_path

from api import views

urlpatterns = [
    path("tenants/", views.TenantListView.as_view(), name="api-tenants"),
    path("tenants/<slug:slug>/", views.TenantDetailView.as_view(), name="api-tenant"),
    path("tenants/<slug:slug>/suspend/", views.TenantSuspendView.as_view(), name="api-suspend"),
    path("tenants/<slug:slug>/resume/", views.TenantResumeView.as_view(), name="api-resume"),
    path("tenants/<slug:slug>/tier/", views.TenantTierView.as_view(), name="api-tier"),
    path(
        "tenants/<slug:slug>/reset-week/",
        views.TenantResetWeekView.as_view(),
        name="api-reset-week",
    ),
    path("tenants/<slug:slug>/tokens/", views.TenantTokensView.as_view(), name="api-tokens"),
    path(
        "tenants/<slug:slug>/tokens/revoke/",
        views.TenantRevokeTokensView.as_view(),
        name="api-tokens-revoke",
    ),
    path(
        "tenants/<slug:slug>/usage/week/",
        views.TenantUsageWeekView.as_view(),
        name="api-usage-week",
    ),
    path(
        "tenants/<slug:slug>/usage/models/",
        views.TenantUsageModelsView.as_view(),
        name="api-usage-models",
    ),
    path("usage/records/", views.UsageRecordListView.as_view(), name="api-usage-records"),
    path("tiers/", views.TierListView.as_view(), name="api-tiers"),
    path("tiers/<slug:slug>/", views.TierDetailView.as_view(), name="api-tier-detail"),
    path("routes/", views.RouteListView.as_view(), name="api-routes"),
    path("routes/<int:route_id>/", views.RouteDetailView.as_view(), name="api-route"),
    path("schema/", views.SchemaView.as_view(), name="api-schema"),
    path("docs/", views.docs_view, name="api-docs"),
    # Last: any other path under /api/v1/ gets the API's JSON 404 (newlines included: a
    # path may hold an encoded one, which "." would not match).
    re_path(r"^[\s\S]*$", views.NotFoundView.as_view()),
]
