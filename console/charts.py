"""Server-rendered SVG charts: no chart library, no CDN (deployments may be offline), and
the page shows its figures without JavaScript.

Colours come from CSS classes (console/static/console/dashboard.css), so the charts follow
the admin's light and dark themes. Every bar and point carries a <title>: its exact figure
on hover, and to screen readers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 560, 180
LEFT, RIGHT, TOP, BOTTOM = 48, 8, 22, 24


def nice_ceiling(value: float) -> float:
    """The axis top: 1, 2 or 5 times a power of ten, at or above ``value``."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def _number(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:,.0f}k"
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def _frame(*, title: str, labels: Sequence[str], top: float) -> list[str]:
    """The axes: the title, three gridlines with their values, and a few x labels."""
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [
        f'<text class="chart-title" x="{LEFT}" y="14">{escape(title)}</text>',
    ]
    for share in (0, 0.5, 1):
        y = TOP + plot_h * (1 - share)
        parts.append(
            f'<line class="chart-grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text class="chart-axis" x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(_number(top * share))}</text>"
        )
    count = len(labels)
    step = (WIDTH - LEFT - RIGHT) / max(count, 1)
    shown = {0, count // 2, count - 1} if count > 8 else set(range(count))
    for index in sorted(shown):
        x = LEFT + step * (index + 0.5)
        parts.append(
            f'<text class="chart-axis" x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="middle">'
            f"{escape(labels[index])}</text>"
        )
    return parts


def _svg(title: str, parts: list[str], legend: Sequence[str]) -> SafeString:
    keys = "".join(
        f'<span class="chart-key"><span class="chart-swatch s{index}"></span>{escape(name)}</span>'
        for index, name in enumerate(legend)
    )
    body = "".join(parts)
    return mark_safe(  # noqa: S308 - every text inside was escaped above
        f'<figure class="chart"><svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">{body}</svg>'
        f'<figcaption class="chart-legend">{keys}</figcaption></figure>'
    )


def bar_chart(
    *,
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    unit: str = "",
) -> SafeString:
    """Stacked bars, one per label: ``series`` is (name, one value per label), bottom first."""
    totals = [sum(values[i] for _, values in series) for i in range(len(labels))]
    top = nice_ceiling(max(totals, default=0))
    parts = _frame(title=title, labels=labels, top=top)
    plot_h = HEIGHT - TOP - BOTTOM
    step = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    width = max(step * 0.7, 1)
    for index, label in enumerate(labels):
        x = LEFT + step * index + (step - width) / 2
        base = float(TOP + plot_h)
        for number, (name, values) in enumerate(series):
            value = values[index]
            if value <= 0:
                continue
            height = plot_h * value / top
            base -= height
            parts.append(
                f'<rect class="s{number}" x="{x:.1f}" y="{base:.1f}" width="{width:.1f}" '
                f'height="{height:.1f}"><title>{escape(label)}: {escape(name)} '
                f"{escape(_number(value))}{escape(unit)}</title></rect>"
            )
    return _svg(title, parts, [name for name, _ in series])


def line_chart(
    *,
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    unit: str = "",
) -> SafeString:
    """Lines with a point per label; a gap where a label has no value (no requests)."""
    present = [v for _, values in series for v in values if v is not None]
    top = nice_ceiling(max(present, default=0))
    parts = _frame(title=title, labels=labels, top=top)
    plot_h = HEIGHT - TOP - BOTTOM
    step = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    for number, (name, values) in enumerate(series):
        runs: list[list[str]] = [[]]
        for index, value in enumerate(values):
            if value is None:
                runs.append([])
                continue
            x = LEFT + step * (index + 0.5)
            y = TOP + plot_h * (1 - value / top)
            runs[-1].append(f"{x:.1f},{y:.1f}")
            parts.append(
                f'<circle class="s{number}" cx="{x:.1f}" cy="{y:.1f}" r="2.5">'
                f"<title>{escape(labels[index])}: {escape(name)} "
                f"{escape(_number(value))}{escape(unit)}</title></circle>"
            )
        for run in runs:
            if len(run) > 1:
                parts.append(f'<polyline class="line s{number}" points="{" ".join(run)}"/>')
    return _svg(title, parts, [name for name, _ in series])
