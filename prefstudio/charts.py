"""Geometry for the server-rendered SVG charts (a heatmap, line charts and histograms): plain data in, the
shapes a template draws out. No JavaScript is needed to see a chart, and no chart library is shipped.

Pure Python: no Django import, so the numbers can be checked without a request.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

# Okabe–Ito colours: distinguishable with the common colour-vision deficiencies.
SERIES_COLOURS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9")


@dataclass(frozen=True)
class Cell:
    x: float
    y: float
    size: float
    fill: str
    text: str
    title: str
    dark: bool  # the fill is dark: write the value in white

    @property
    def centre(self) -> tuple[float, float]:
        """Where the value's text goes (middle anchor, baseline a little below the centre)."""
        return self.x + self.size / 2, self.y + self.size * 0.62


@dataclass(frozen=True)
class Heatmap:
    width: float
    height: float
    cells: list[Cell]
    rows: list[tuple[float, str]]  # (y of the label's baseline, label)
    columns: list[tuple[float, str]]  # (x of the label's anchor, label)
    margin: float

    @property
    def label_edge(self) -> float:
        """x of the row labels' end and y of the column labels' baseline."""
        return self.margin - 6


def _diverging(value: float) -> tuple[str, bool]:
    """-1 red .. 0 white .. 1 blue, as an RGB hex colour; and whether it is dark."""
    v = max(-1.0, min(1.0, value))
    if v >= 0:
        r, g, b = (255 - 255 * v * 0.9, 255 - 255 * v * 0.55, 255)
    else:
        r, g, b = (255, 255 + 255 * v * 0.6, 255 + 255 * v * 0.7)
    colour = f"#{int(r):02x}{int(g):02x}{int(b):02x}"
    return colour, abs(v) > 0.6


def heatmap(
    labels: Sequence[str],
    matrix: Sequence[Sequence[float | None]],
    *,
    undefined: Sequence[Sequence[tuple[str, str] | None]] | None = None,
    cell: float = 34,
    margin: float = 110,
) -> Heatmap:
    """A square matrix of values in [-1, 1] (None: undefined) as coloured cells with their values.

    `labels[i]` names row and column i; cells are `cell` px wide, labels get `margin` px. `undefined[i][j]`
    says why cell (i, j) has no value, as (mark, reason): the mark is written in the cell, the reason in
    its title; by default ("–", "not enough shared pairs").
    """
    n = len(labels)
    if any(len(row) != n for row in matrix) or len(matrix) != n:
        raise ValueError(f"matrix must be {n}x{n} to match the labels")
    cells = []
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                mark, reason = (undefined and undefined[i][j]) or ("–", "not enough shared pairs")
                fill, dark, text = "#eeeeee", False, mark
                title = f"{labels[i]} × {labels[j]}: {reason}"
            else:
                fill, dark = _diverging(value)
                text = f"{value:.2f}"
                title = f"{labels[i]} × {labels[j]}: {value:.3f}"
            cells.append(Cell(margin + j * cell, margin + i * cell, cell, fill, text, title, dark))
    rows = [(margin + i * cell + cell * 0.62, label) for i, label in enumerate(labels)]
    columns = [(margin + j * cell + cell / 2, label) for j, label in enumerate(labels)]
    side = margin + n * cell + 4
    # Column labels slant up to the right from their column's centre: the last one needs room past it.
    width = side + margin / 2
    return Heatmap(width=width, height=side, cells=cells, rows=rows, columns=columns, margin=margin)


@dataclass(frozen=True)
class Line:
    name: str
    colour: str
    points: str  # "x,y x,y ..." for <polyline points>
    dots: list[tuple[float, float, str]]  # (x, y, title) for each point
    dashed: bool = False


@dataclass(frozen=True)
class Plot:
    """A chart's frame: its size and its plotting area, in px (drawn by partials/_chart_axes.html)."""

    width: float
    height: float
    left: float
    top: float
    plot_width: float
    plot_height: float

    @property
    def plot_right(self) -> float:
        return self.left + self.plot_width

    @property
    def plot_bottom(self) -> float:
        return self.top + self.plot_height


@dataclass(frozen=True)
class LineChart(Plot):
    lines: list[Line]
    y_ticks: list[tuple[float, str]]  # (y, label)
    x_ticks: list[tuple[float, str]]  # (x, label)
    empty: bool = False
    y_label: str = ""
    x_label: str = ""
    legend: list[tuple[str, str, bool]] = field(default_factory=list)  # (name, colour, dashed)


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        high = low + 1.0
    raw = (high - low) / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    # From the step at or below `low` to the first at or above `high`, so every value is inside the axis.
    ticks = [round(math.floor(low / step) * step, 10)]
    while ticks[-1] < high - step * 1e-9:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _format(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def line_chart(
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    *,
    width: float = 560,
    height: float = 240,
    y_range: tuple[float, float] | None = None,
    x_labels: dict[float, str] | None = None,
    y_label: str = "",
    x_label: str = "",
    dashed: Sequence[str] = (),
) -> LineChart:
    """Line series `(name, [(x, y), ...])` scaled into a `width` × `height` px chart with axis ticks.

    `y_range` fixes the y axis (e.g. (0, 1) for rates); otherwise it spans the data. `x_labels` maps
    x values to tick labels (e.g. day numbers to dates); otherwise x ticks are numbers. Series named in
    `dashed` are drawn dashed (e.g. eval next to train). Non-finite points are left out.
    """
    left, right, top, bottom = 52.0, 12.0, 12.0, 34.0
    plot_w, plot_h = width - left - right, height - top - bottom
    clean = [
        (name, [(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)]) for name, pts in series
    ]
    xs = [x for _, pts in clean for x, _ in pts]
    ys = [y for _, pts in clean for _, y in pts]
    if not xs:
        return LineChart(width, height, left, top, plot_w, plot_h, [], [], [], empty=True,
                         y_label=y_label, x_label=x_label)  # fmt: skip
    x_low, x_high = min(xs), max(xs)
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    if y_range is not None:
        y_ticks_values = _nice_ticks(*y_range)
    else:
        y_low, y_high = min(ys), max(ys)
        if y_high == y_low:
            y_low, y_high = y_low - 0.5, y_high + 0.5
        y_ticks_values = _nice_ticks(y_low, y_high)
    y_low, y_high = y_ticks_values[0], y_ticks_values[-1]

    def sx(x: float) -> float:
        return round(left + (x - x_low) / (x_high - x_low) * plot_w, 1)

    def sy(y: float) -> float:
        return round(top + plot_h - (y - y_low) / (y_high - y_low) * plot_h, 1)

    lines, legend = [], []
    for index, (name, pts) in enumerate(clean):
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        is_dashed = name in dashed
        legend.append((name, colour, is_dashed))
        if not pts:
            continue
        points = " ".join(f"{sx(x)},{sy(y)}" for x, y in pts)
        label = x_labels or {}
        dots = [(sx(x), sy(y), f"{name}: {_format(y)} at {label.get(x, _format(x))}") for x, y in pts]
        lines.append(Line(name, colour, points, dots, is_dashed))
    y_ticks = [(sy(v), _format(v)) for v in y_ticks_values]
    if x_labels:
        keys = sorted(x_labels)
        every = max(1, math.ceil(len(keys) / 6))
        x_ticks = [(sx(k), x_labels[k]) for k in keys[::every]]
    else:
        x_ticks = [(sx(v), _format(v)) for v in _nice_ticks(x_low, x_high, 6) if x_low <= v <= x_high]
    return LineChart(width, height, left, top, plot_w, plot_h, lines, y_ticks, x_ticks,
                     y_label=y_label, x_label=x_label, legend=legend)  # fmt: skip


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


@dataclass(frozen=True)
class Histogram(Plot):
    bars: list[Bar]
    y_ticks: list[tuple[float, str]]  # (y, label)
    x_ticks: list[tuple[float, str]]  # (x, label)
    limit_x: float  # where the last bin ("over the limit") begins
    legend: list[tuple[str, str]]  # (name, colour)
    x_label: str = ""
    over_label: str = ""  # written beside the limit line, over the last bin


def histogram(
    edges: Sequence[float],
    counts: dict[str, Sequence[int]],
    *,
    width: float = 560,
    height: float = 220,
    over_label: str = "over",
    x_label: str = "",
) -> Histogram:
    """Grouped bars of several series over the same bins, as SVG coordinates.

    `edges` are the `n + 1` bin boundaries and every series in `counts` has `n + 1` counts: one per bin and
    a last one for values past `edges[-1]` (drawn after a dashed limit line, with `over_label` beside it).
    """
    left, right, top, bottom = 44.0, 12.0, 10.0, 34.0
    plot_w, plot_h = width - left - right, height - top - bottom
    slots = len(edges)  # n bins and the "over" bin
    slot = plot_w / slots
    names = list(counts)
    top_count = max((max(c) for c in counts.values() if len(c)), default=0)
    ticks = _nice_ticks(0, max(1, top_count), 4)
    high = ticks[-1]
    bars = []
    inner = slot * 0.84 / max(1, len(names))
    for s, name in enumerate(names):
        colour = SERIES_COLOURS[s % len(SERIES_COLOURS)]
        for i, n in enumerate(counts[name]):
            if not n:
                continue
            h = n / high * plot_h
            x = left + i * slot + slot * 0.08 + s * inner
            where = (
                f"over {_format(edges[-1])}"
                if i == slots - 1
                else f"{_format(edges[i])}–{_format(edges[i + 1])}"
            )
            bars.append(Bar(round(x, 1), round(top + plot_h - h, 1), round(inner, 1), round(h, 1), colour,
                            f"{name}: {n} with {where} tokens"))  # fmt: skip
    y_ticks = [(round(top + plot_h - v / high * plot_h, 1), _format(v)) for v in ticks]
    every = max(1, math.ceil(slots / 8))
    # Edge labels every few bins, none crowding the limit's own label.
    x_ticks = [
        (round(left + i * slot, 1), _format(edges[i])) for i in range(0, slots - 1 - every // 2, every)
    ]
    x_ticks.append((round(left + (slots - 1) * slot, 1), _format(edges[-1])))
    legend = [(name, SERIES_COLOURS[s % len(SERIES_COLOURS)]) for s, name in enumerate(names)]
    return Histogram(width, height, left, top, plot_w, plot_h, bars, y_ticks, x_ticks,
                     round(left + (slots - 1) * slot, 1), legend, x_label, over_label)  # fmt: skip
