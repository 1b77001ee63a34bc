"""Grouped bar charts with 95% intervals, as geometry for the report's inline SVG.

The template draws each bar as a `<rect>` and each interval as a `<line>`; every label goes through
Jinja's autoescaping like the rest of the page.
"""

from __future__ import annotations

from dataclasses import dataclass

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 900, 260, 40, 40, 10
COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


@dataclass(frozen=True)
class Bar:
    """One bar: position, size, colour, its interval's ends (y) and the value shown on hover."""

    x: float
    y: float
    width: float
    height: float
    colour: str
    low_y: float | None
    high_y: float | None
    title: str


@dataclass(frozen=True)
class Chart:
    """A grouped bar chart: bars, group labels (x, text), legend (colour, text) and the y scale ticks."""

    width: int
    height: int
    bars: list[Bar]
    labels: list[tuple[float, str]]
    legend: list[tuple[str, str]]
    ticks: list[tuple[float, str]]


Point = tuple[float | None, float | None, float | None]
"""A value and its interval (low, high); any may be None."""


def grouped_bars(groups: list[str], series: dict[str, list[Point]], top: float) -> Chart:
    """Bars for each series in each group, scaled so that `top` is the full height."""
    plot_height = HEIGHT - BOTTOM - TOP
    slot = (WIDTH - LEFT) / max(1, len(groups))
    width = slot * 0.8 / max(1, len(series))

    def y(value: float) -> float:
        return TOP + plot_height * (1 - min(max(value / top, 0.0), 1.0))

    bars = []
    for index, (name, points) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        for position, (value, low, high) in enumerate(points):
            shown = value or 0.0
            x = LEFT + position * slot + slot * 0.1 + index * width
            bars.append(
                Bar(
                    x=round(x, 1),
                    y=round(y(shown), 1),
                    width=round(width * 0.9, 1),
                    height=round(TOP + plot_height - y(shown), 1),
                    colour=colour,
                    low_y=None if low is None else round(y(low), 1),
                    high_y=None if high is None else round(y(high), 1),
                    title=f"{name} {groups[position]}: {value} [{low}, {high}]",
                )
            )
    labels = [(round(LEFT + (position + 0.5) * slot, 1), group) for position, group in enumerate(groups)]
    legend = [(COLOURS[index % len(COLOURS)], name) for index, name in enumerate(series)]
    ticks = [(round(y(top * step / 4), 1), f"{top * step / 4:g}") for step in range(5)]
    return Chart(WIDTH, HEIGHT, bars, labels, legend, ticks)
