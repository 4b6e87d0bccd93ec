"""The staff dashboard: the page, and the JSON snapshot its script re-reads when a request
settles. Thin views: every figure comes from console.selectors, every chart from
console.charts; both are wrapped by admin.site.admin_view (staff only) in
console/dashboard_urls.py."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.safestring import SafeString

from console import charts, selectors
from console.routing import DASHBOARD_PATH
from usage.alerts import recent_alerts


def _charts(series: selectors.Series) -> list[SafeString]:
    labels = [bucket.label for bucket in series.buckets]
    buckets = series.buckets
    return [
        charts.bar_chart(
            title="Requests",
            labels=labels,
            series=[
                ("completed", [b.requests - b.errors for b in buckets]),
                ("errors", [b.errors for b in buckets]),
            ],
        ),
        charts.line_chart(
            title="Latency (ms)",
            labels=labels,
            series=[
                ("p50", [b.latency_p50 for b in buckets]),
                ("p95", [b.latency_p95 for b in buckets]),
            ],
            unit=" ms",
        ),
        charts.line_chart(
            title="Time to first token (ms)",
            labels=labels,
            series=[("p50", [b.ttft_p50 for b in buckets]), ("p95", [b.ttft_p95 for b in buckets])],
            unit=" ms",
        ),
    ]


def dashboard(request: HttpRequest) -> TemplateResponse:
    board = selectors.dashboard(now=timezone.now())
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "board": board,
        "near_percent": selectors.NEAR_PERCENT,
        "breakdowns": [
            ("By model", board.by_model, "model"),
            ("By provider", board.by_provider, "provider"),
            ("By pooled key", board.by_key, "key"),
        ],
        "windows": [(board.day, _charts(board.day)), (board.weeks, _charts(board.weeks))],
        "ws_path": f"/{DASHBOARD_PATH}",
        # Spend alerts: each threshold a tenant crossed this week or before, and whether its
        # webhook went out (usage/alerts.py).
        "alerts": recent_alerts(limit=20),
        "webhook": bool(settings.PROXY_ALERT_WEBHOOK_URL),
    }
    return TemplateResponse(request, "console/dashboard.html", context)


def dashboard_data(request: HttpRequest) -> JsonResponse:
    return JsonResponse(selectors.tenants_snapshot(now=timezone.now()))
