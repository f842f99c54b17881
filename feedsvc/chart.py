"""The subscribers-per-day chart of ``/stats``: inline SVG drawn on the server.

No JavaScript and no stylesheet of its own: colours are SVG presentation
attributes (``fill=``), which the pages' CSP (``default-src 'none'``, no
inline styles) leaves alone, so the chart shows in a browser as it is.
Each day is one ``<g class="day">`` carrying its date and total in
``data-`` attributes, with one stacked bar per source, so a test can read
back exactly what was drawn.
"""

from __future__ import annotations

from datetime import UTC, datetime
from xml.sax.saxutils import quoteattr

from .audience import DAY, SOURCES

#: A colour per source, readable on white and told apart in grey scale.
COLOURS = {"aggregator": "#1f5fa8", "reader": "#e08a1e", "hub": "#3a9a4a"}


def _date(day: int) -> str:
    return datetime.fromtimestamp(day * DAY, UTC).strftime("%Y-%m-%d")


def _nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (axis top)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if factor * step >= value:
                return factor * step
        step *= 10


def subscribers_chart(history: list[tuple[int, dict[str, int]]], width: int = 900,
                      height: int = 260) -> str:
    """An SVG bar chart of subscribers per day, stacked by source (oldest day left)."""
    left, right, top, bottom = 56, 12, 16, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = _nice_ceiling(max((sum(c.values()) for _, c in history), default=0) or 1)
    slot = plot_w / max(len(history), 1)
    bar = max(slot * 0.8, 1.0)
    parts = [
        # As wide as the page's column, its height following from the viewBox.
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="100%" '
        f'viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Subscribers per day over the last {len(history)} days">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" '
        f'stroke="#cccccc"/>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - fraction)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
                     f'stroke="#dddddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" '
                     f'font-size="11" fill="#333333">{int(top_value * fraction)}</text>')
    for index, (day, counts) in enumerate(history):
        total = sum(counts.values())
        x = left + index * slot + (slot - bar) / 2
        parts.append(f'<g class="day" data-day="{_date(day)}" data-total="{total}">'
                     f'<title>{_date(day)}: {total} subscribers</title>')
        y = top + plot_h
        for source in SOURCES:
            number = counts.get(source, 0)
            if not number:
                continue
            h = plot_h * number / top_value
            y -= h
            parts.append(f'<rect class="bar" data-source="{source}" data-value="{number}" '
                         f'x="{x:.2f}" y="{y:.2f}" width="{bar:.2f}" height="{h:.2f}" '
                         f'fill="{COLOURS[source]}"/>')
        parts.append("</g>")
    if history:
        for index, anchor in ((0, "start"), (len(history) - 1, "end")):
            x = left if anchor == "start" else left + plot_w
            parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 14}" '
                         f'text-anchor={quoteattr(anchor)} '
                         f'font-size="11" fill="#333333">{_date(history[index][0])}</text>')
    legend_x = left
    for source in SOURCES:
        parts.append(f'<rect x="{legend_x}" y="{height - 10}" width="10" height="8" '
                     f'fill="{COLOURS[source]}"/>')
        parts.append(f'<text x="{legend_x + 14}" y="{height - 2}" font-size="11" '
                     f'fill="#333333">{source}</text>')
        legend_x += 110
    parts.append("</svg>")
    return "".join(parts)
