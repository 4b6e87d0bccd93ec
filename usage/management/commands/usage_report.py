"""`manage.py usage_report`: ledger totals per tenant, tier, model or provider, as a table, CSV,
JSON or a standalone HTML page with bar charts.

Every format carries the same numbers: one row per group and a totals row, costs at a fixed
nine decimals (the ledger counts nano-dollars: a sub-cent cost is never shown as 0.00), and,
by tenant for a week, each tenant's use of its caps net of what staff resets forgave.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.template.loader import render_to_string
from django.utils import timezone

from usage.selectors import (
    GROUPS,
    Caps,
    Forgiven,
    ReportRow,
    report_totals,
    tenant_caps,
    usage_report,
    week_forgiven,
)
from usage.weeks import iso_week, week_of

_COLUMNS = [
    "group",
    "requests",
    "errors",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost_usd",
]
_CAP_COLUMNS = [
    "forgiven_tokens",
    "forgiven_cost_usd",
    "token_cap",
    "token_cap_used_pct",
    "cost_cap_usd",
    "cost_cap_used_pct",
]
# Slugs and model names never hold parentheses, so the totals row cannot pass for a group.
TOTAL = "(total)"
_NONE = Forgiven(tokens=0, cost_usd=Decimal(0))


def usd(value: Decimal | None) -> str | None:
    """A dollar amount at the ledger's own precision, always nine decimals."""
    return None if value is None else f"{value:.9f}"


def _day(value: str, flag: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{flag} {value!r}: expected a date such as 2026-11-23.") from None


@dataclass(frozen=True)
class Report:
    title: str
    period: str
    by: str
    records: list[dict[str, Any]]
    totals: dict[str, Any]


class Command(BaseCommand):
    help = (
        "Usage from the ledger per tenant, tier, model or provider, for an ISO week "
        "(--week 2026-W48, default this week) or a date range (--from/--to, UTC, inclusive). "
        "By tenant for a week, each tenant's use of its caps, net of staff resets."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--by", choices=sorted(GROUPS), default="tenant")
        parser.add_argument("--week", help="An ISO week such as 2026-W48.")
        parser.add_argument("--from", dest="start", help="First day, e.g. 2026-11-01.")
        parser.add_argument("--to", dest="end", help="Last day, inclusive.")
        parser.add_argument(
            "--format",
            choices=["table", "csv", "json", "html"],
            default="table",
            help="html: a standalone page (no external assets) with bar charts.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = self._report(options)
        fmt = options["format"]
        if fmt == "json":
            data = {
                "period": report.period,
                "by": report.by,
                "rows": report.records,
                "totals": {k: v for k, v in report.totals.items() if k != "group"},
            }
            self.stdout.write(json.dumps(data, indent=2))
        elif fmt == "csv":
            fields = list(report.totals)
            writer = csv.DictWriter(self.stdout, fieldnames=fields)
            writer.writeheader()
            writer.writerows(report.records)
            if report.records:
                writer.writerow(report.totals)
        elif fmt == "html":
            self.stdout.write(_html(report))
        else:
            self._table(report)

    def _report(self, options: dict[str, Any]) -> Report:
        week_label, start_day, end_day = options["week"], options["start"], options["end"]
        if week_label and (start_day or end_day):
            raise CommandError("Give either --week or --from/--to, not both.")
        if bool(start_day) != bool(end_day):
            raise CommandError("--from and --to go together.")
        if start_day and end_day:
            first, last = _day(start_day, "--from"), _day(end_day, "--to")
            if last < first:
                raise CommandError("--to is before --from.")
            start = datetime.combine(first, time.min, tzinfo=UTC)
            end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC)
            week = None
            period = f"{first} to {last}"
        else:
            try:
                week = iso_week(week_label) if week_label else week_of(timezone.now())
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            start, end = week.start, week.end
            period = f"week of {week.id}"
        by = options["by"]
        rows = usage_report(by=by, start=start, end=end)
        # Caps are weekly: a tenant's use of them means something for a week only.
        with_caps = by == "tenant" and week is not None
        slugs = [row.group for row in rows]
        caps = tenant_caps(slugs=slugs) if with_caps else {}
        forgiven = week_forgiven(week=week, slugs=slugs) if with_caps and week else {}
        records = [
            _record(row, caps=caps.get(row.group), forgiven=forgiven.get(row.group, _NONE))
            if with_caps
            else _record(row)
            for row in rows
        ]
        total = _record(report_totals(rows=rows))
        total["group"] = TOTAL
        if with_caps:
            # Caps are each tenant's own: the totals row sums only what adds up.
            total |= dict.fromkeys(_CAP_COLUMNS)
            total["forgiven_tokens"] = sum(f.tokens for f in forgiven.values())
            total["forgiven_cost_usd"] = usd(
                sum((f.cost_usd for f in forgiven.values()), Decimal(0))
            )
        return Report(
            title=f"Usage by {by}, {period}",
            period=period,
            by=by,
            records=records,
            totals=total,
        )

    def _table(self, report: Report) -> None:
        self.stdout.write(report.title)
        if not report.records:
            self.stdout.write("(no usage)")
            return
        columns = list(report.totals)
        cells = [
            [("" if r[c] is None else str(r[c])) for c in columns]
            for r in [*report.records, report.totals]
        ]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]

        def line(values: list[str]) -> str:
            return "  ".join(
                (v.ljust(w) if i == 0 else v.rjust(w))
                for i, (v, w) in enumerate(zip(values, widths, strict=True))
            ).rstrip()

        self.stdout.write(line(columns))
        for row in cells[:-1]:
            self.stdout.write(line(row))
        self.stdout.write("  ".join("-" * w for w in widths))
        self.stdout.write(line(cells[-1]))


def _record(
    row: ReportRow, *, caps: Caps | None = None, forgiven: Forgiven | None = None
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "group": row.group,
        "requests": row.requests,
        "errors": row.errors,
        "input_tokens": row.input_tokens,
        "cache_read_tokens": row.cache_read_tokens,
        "cache_write_tokens": row.cache_write_tokens,
        "output_tokens": row.output_tokens,
        "reasoning_tokens": row.reasoning_tokens,
        "total_tokens": row.total_tokens,
        "cost_usd": usd(row.cost_usd),
    }
    if forgiven is None:
        return record
    token_cap = caps.token_cap if caps else None
    cost_cap = caps.cost_cap_usd if caps else None
    # What the caps count: the week's usage less what staff resets forgave (usage/services.py
    # tenant_week_reset; the counters are rebuilt net of it the same way).
    tokens = max(0, row.total_tokens - forgiven.tokens)
    cost = max(Decimal(0), row.cost_usd - forgiven.cost_usd)
    record |= {
        "forgiven_tokens": forgiven.tokens,
        "forgiven_cost_usd": usd(forgiven.cost_usd),
        "token_cap": token_cap,
        "token_cap_used_pct": round(100 * tokens / token_cap, 2) if token_cap else None,
        "cost_cap_usd": usd(cost_cap),
        "cost_cap_used_pct": float(round(100 * cost / cost_cap, 2)) if cost_cap else None,
    }
    return record


# --- the HTML page ------------------------------------------------------------------------

_BAR_WIDTH = 480  # pixels of the longest bar
_ROW_HEIGHT = 22
_LABEL_WIDTH = 160
_VALUE_WIDTH = 150
_KINDS = [  # the parts of a total, stacked: prompt tokens by kind, then output tokens
    ("uncached_input", "input (uncached)", "#4e79a7"),
    ("cache_read_tokens", "cache read", "#a0cbe8"),
    ("cache_write_tokens", "cache write", "#f28e2b"),
    ("output_tokens", "output", "#59a14f"),
]


def _token_parts(record: dict[str, Any]) -> list[tuple[float, str, str]]:
    """A total's stacked segments: input counts its cached tokens, so they come out of it."""
    cached = record["cache_read_tokens"] + record["cache_write_tokens"]
    amounts = {
        "uncached_input": max(0, record["input_tokens"] - cached),
        "cache_read_tokens": record["cache_read_tokens"],
        "cache_write_tokens": record["cache_write_tokens"],
        "output_tokens": record["output_tokens"],
    }
    return [(amounts[key], colour, f"{name}: {amounts[key]:,}") for key, name, colour in _KINDS]


def _chart(
    bars: list[tuple[str, list[tuple[float, str, str]], str, str]], *, scale: float
) -> dict[str, Any]:
    """An SVG bar chart's geometry: per bar, its label, its stacked segments (value, colour,
    title), the text shown after it and the number it stands for (data-value, for tests
    and scrapers)."""
    rows = []
    for index, (label, parts, text, value) in enumerate(bars):
        x, rects = float(_LABEL_WIDTH), []
        for amount, colour, title in parts:
            width = _BAR_WIDTH * amount / scale if scale else 0.0
            rects.append({"x": f"{x:.1f}", "width": f"{width:.1f}", "fill": colour, "title": title})
            x += width
        rows.append(
            {
                "label": label,
                "y": index * _ROW_HEIGHT,
                "text_y": index * _ROW_HEIGHT + 15,
                "rects": rects,
                "text": text,
                "text_x": f"{x + 6:.1f}",
                "value": value,
            }
        )
    return {
        "rows": rows,
        "width": _LABEL_WIDTH + _BAR_WIDTH + _VALUE_WIDTH,
        "height": max(1, len(rows)) * _ROW_HEIGHT,
        "label_x": _LABEL_WIDTH - 6,
    }


def _html(report: Report) -> str:
    records = report.records
    top_tokens = max((r["total_tokens"] for r in records), default=0)
    tokens = _chart(
        [
            (r["group"], _token_parts(r), f"{r['total_tokens']:,}", str(r["total_tokens"]))
            for r in records
        ],
        scale=top_tokens,
    )
    top_cost = max((Decimal(r["cost_usd"]) for r in records), default=Decimal(0))
    cost = _chart(
        [
            (
                r["group"],
                [(float(Decimal(r["cost_usd"])), "#e15759", f"${r['cost_usd']}")],
                f"${r['cost_usd']}",
                r["cost_usd"],
            )
            for r in records
        ],
        scale=float(top_cost),
    )
    caps = None
    if records and "token_cap_used_pct" in records[0]:
        bars = []
        for r in records:
            for name, key in (("tokens", "token_cap_used_pct"), ("cost", "cost_cap_used_pct")):
                pct = r[key]
                if pct is None:
                    continue
                colour = "#e15759" if pct >= 100 else "#f28e2b" if pct >= 80 else "#59a14f"
                shown = min(float(pct), 120.0)  # past 120 % the bar stops: the text says it
                bars.append(
                    (f"{r['group']} {name}", [(shown, colour, f"{pct}%")], f"{pct}%", str(pct))
                )
        caps = _chart(bars, scale=120.0)
        caps["limit_x"] = f"{_LABEL_WIDTH + _BAR_WIDTH * 100 / 120:.1f}"
    columns = list(report.totals)
    return render_to_string(
        "usage/report.html",
        {
            "title": report.title,
            "generated": timezone.now().replace(microsecond=0).isoformat(),
            "columns": columns,
            "rows": [[_cell(r[c]) for c in columns] for r in records],
            "totals": [_cell(report.totals[c]) for c in columns],
            "tokens": tokens,
            "cost": cost,
            "caps": caps,
            "kinds": [(name, colour) for _, name, colour in _KINDS],
        },
    )


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
