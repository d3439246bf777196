"""The sweep page's two charts as server-rendered SVG: parallel coordinates (one axis per
hyperparameter and one for the primary metric, one line per child) and the primary metric over
its logged values (one line per child, the interval a policy counts in).

SVG rather than the vendored uPlot: uPlot has no parallel-coordinates chart, and an SVG inside
the polled partial is redrawn by htmx's swap with no script to re-run (the page's
Content-Security-Policy allows no inline script). Every number is escaped text; names go through
:func:`markupsafe.escape`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

WIDTH = 720
HEIGHT = 260
PAD = 40
BEST = "#d9480f"
OTHER = "#2456c9"
STOPPED = "#9aa5b1"


@dataclass(frozen=True)
class Line:
    """One child: its id, its values along the axes (None: not known) and how it is drawn."""

    run_id: str
    values: Sequence[float | str | None]
    best: bool = False
    stopped: bool = False


def _colour(line: Line) -> str:
    return BEST if line.best else STOPPED if line.stopped else OTHER


def _label(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _axis(values: list[float | str | None]) -> tuple[Any, list[Any]]:
    """A function from a value to 0..1 on the axis, and the ticks to label: numbers on a linear
    scale (a log scale when they span three decades and are positive), anything else as evenly
    spaced categories in their first-seen order."""
    known = [v for v in values if v is not None]
    numbers = [float(v) for v in known if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if known and len(numbers) == len(known) and all(math.isfinite(n) for n in numbers):
        low, high = min(numbers), max(numbers)
        if low > 0 and high / low >= 1000:
            lo, hi = math.log10(low), math.log10(high)
            return (lambda v: (math.log10(float(v)) - lo) / (hi - lo)), [low, high]
        span = high - low or 1.0
        return (lambda v: (float(v) - low) / span), [low, high] if high != low else [low]
    categories = list(dict.fromkeys(str(v) for v in known))
    step = 1.0 / max(1, len(categories) - 1)
    where = {c: i * step if len(categories) > 1 else 0.5 for i, c in enumerate(categories)}
    return (lambda v: where[str(v)]), categories


def parallel_coordinates(axes: Sequence[str], lines: Sequence[Line]) -> Markup:
    """An SVG with one vertical axis per name in ``axes`` and one polyline per child (a child
    with a value missing is drawn up to it). The best child is drawn last, over the others."""
    if not lines or not axes:
        return Markup("")
    gap = (WIDTH - 2 * PAD) / max(1, len(axes) - 1)
    parts = [
        f'<svg class="sweep-chart" id="parallel-coordinates" viewBox="0 0 {WIDTH} {HEIGHT}"'
        ' role="img" aria-label="Parallel coordinates: hyperparameters and the primary metric">'
    ]
    scales = []
    for i, name in enumerate(axes):
        scale, ticks = _axis([line.values[i] for line in lines])
        scales.append(scale)
        x = PAD + i * gap if len(axes) > 1 else WIDTH / 2
        parts.append(
            f'<line class="axis" x1="{x:.1f}" y1="{PAD}" x2="{x:.1f}" y2="{HEIGHT - PAD}"'
            ' stroke="#444" stroke-width="1"/>'
            f'<text class="axis-name" x="{x:.1f}" y="{PAD - 16}" text-anchor="middle"'
            f' font-size="12">{escape(name)}</text>'
        )
        for tick in ticks:
            y = HEIGHT - PAD - scale(tick) * (HEIGHT - 2 * PAD)
            parts.append(
                f'<text class="tick" x="{x + 4:.1f}" y="{y + 4:.1f}" font-size="10"'
                f' fill="#555">{escape(_label(tick))}</text>'
            )
    for line in sorted(lines, key=lambda item: item.best):
        points = []
        for i, value in enumerate(line.values):
            if value is None:
                break
            x = PAD + i * gap if len(axes) > 1 else WIDTH / 2
            y = HEIGHT - PAD - scales[i](value) * (HEIGHT - 2 * PAD)
            points.append(f"{x:.1f},{y:.1f}")
        parts.append(
            f'<polyline class="child-line" data-run="{escape(line.run_id)}" fill="none"'
            f' stroke="{_colour(line)}" stroke-width="{2.5 if line.best else 1.2}"'
            f' points="{" ".join(points)}"><title>{escape(line.run_id)}</title></polyline>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def metric_over_steps(metric: str, series: dict[str, list[float]], lines: Sequence[Line]) -> Markup:
    """An SVG of each child's primary metric against the count of values it logged (Azure ML's
    interval, what the policies judge); non-finite values are left out."""
    curves = {
        line.run_id: [
            (i + 1, v) for i, v in enumerate(series.get(line.run_id, [])) if math.isfinite(v)
        ]
        for line in lines
    }
    points = [p for curve in curves.values() for p in curve]
    if not points:
        return Markup("")
    x_high = max(x for x, _ in points)
    y_low, y_high = min(y for _, y in points), max(y for _, y in points)
    y_span = y_high - y_low or 1.0

    def place(x: int, y: float) -> str:
        px = PAD + (x - 1) / max(1, x_high - 1) * (WIDTH - 2 * PAD)
        py = HEIGHT - PAD - (y - y_low) / y_span * (HEIGHT - 2 * PAD)
        return f"{px:.1f},{py:.1f}"

    parts = [
        f'<svg class="sweep-chart" id="metric-over-steps" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' role="img" aria-label="{escape(metric)} over the values each child logged">',
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}"'
        ' stroke="#444"/>',
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#444"/>',
        f'<text x="{WIDTH / 2:.0f}" y="{HEIGHT - 8}" text-anchor="middle" font-size="12">'
        f"value logged (1 to {x_high})</text>",
        f'<text x="{PAD - 4}" y="{PAD - 8}" font-size="12">{escape(metric)}</text>',
        f'<text class="tick" x="4" y="{PAD + 4}" font-size="10" fill="#555">'
        f"{escape(_label(y_high))}</text>",
        f'<text class="tick" x="4" y="{HEIGHT - PAD}" font-size="10" fill="#555">'
        f"{escape(_label(y_low))}</text>",
    ]
    for line in sorted(lines, key=lambda item: item.best):
        curve = curves[line.run_id]
        if not curve:
            continue
        parts.append(
            f'<polyline class="child-curve" data-run="{escape(line.run_id)}" fill="none"'
            f' stroke="{_colour(line)}" stroke-width="{2.5 if line.best else 1.2}"'
            f' points="{" ".join(place(x, y) for x, y in curve)}">'
            f"<title>{escape(line.run_id)}</title></polyline>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
