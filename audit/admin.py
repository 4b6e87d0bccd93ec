"""The audit log in the admin: read-only (it is evidence), filterable, exportable as CSV."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.core.handlers.asgi import ASGIRequest
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseBadRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from audit.models import AuditEntry
from audit.selectors import acsv_lines, changes_text, csv_lines


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin[AuditEntry]):
    list_display = ("at", "actor", "action", "target_type", "target_repr", "summary")
    list_filter = ("action", "target_type", "actor")
    date_hierarchy = "at"
    search_fields = ("actor", "action", "target_type", "target_id", "target_repr", "note")
    list_per_page = 100
    show_full_result_count = False  # a long log: no second COUNT(*) on every page
    fields = (
        "at",
        "actor",
        "actor_user_id",
        "action",
        "target_type",
        "target_id",
        "target_repr",
        "changes_table",
        "note",
    )
    readonly_fields = fields

    # --- read-only: rows are written by the audit services only ----------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False

    @admin.display(description="Changes")
    def summary(self, entry: AuditEntry) -> str:
        text = changes_text(entry.changes.items())
        return text if len(text) <= 200 else text[:199] + "…"

    @admin.display(description="Changes (before → after)")
    def changes_table(self, entry: AuditEntry) -> str:
        if not entry.changes:
            return "—"
        rows = format_html_join(
            "",
            "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
            ((name, _json(pair[0]), _json(pair[1])) for name, pair in entry.changes.items()),
        )
        return format_html(
            "<table><thead><tr><th>Field</th><th>Before</th><th>After</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            rows,
        )

    # --- CSV export of the filtered list -----------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        export = path(
            "export.csv",
            self.admin_site.admin_view(self.export_view),
            name="audit_auditentry_export",
        )
        return [export, *super().get_urls()]

    def export_view(self, request: HttpRequest) -> HttpResponseBase:
        """Every row the list shows with the same filters, search and order (all pages),
        streamed: a year of audit rows never sits in memory at once."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseBadRequest("Unknown filter.")
        entries: QuerySet[AuditEntry] = changelist.get_queryset(request)
        # Under Daphne an async iterator streams for real (Django reads a sync one whole
        # before sending it); under a sync server, a sync one.
        content: Any = (
            acsv_lines(entries) if isinstance(request, ASGIRequest) else csv_lines(entries)
        )
        response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.csv"'
        response["Cache-Control"] = "no-store"
        return response


def _json(value: Any) -> str:
    return "—" if value is None else json.dumps(value, cls=DjangoJSONEncoder, ensure_ascii=False)
