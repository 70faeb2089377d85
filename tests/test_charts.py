"""Chart geometry (pure: no Django)."""

from __future__ import annotations

import math

import pytest

from prefstudio import charts


def test_a_heatmap_has_room_for_its_slanted_column_labels():
    labels = ["annotator-one", "annotator-two", "annotator-six"]
    matrix = [[1.0, 0.5, None], [0.5, 1.0, -0.2], [None, -0.2, 1.0]]
    chart = charts.heatmap(labels, matrix, cell=34, margin=110)
    assert [c.text for c in chart.cells[:3]] == ["1.00", "0.50", "–"]
    # A 14-character label at 11 px (about 6.2 px a character) slanted at 45 degrees from the last
    # column's centre must end inside the drawing.
    last_x = chart.columns[-1][0]
    assert last_x + 14 * 6.2 * math.cos(math.pi / 4) <= chart.width
    assert chart.height == 110 + 3 * 34 + 4


def test_a_heatmap_refuses_a_matrix_that_does_not_match_its_labels():
    with pytest.raises(ValueError, match="2x2"):
        charts.heatmap(["a", "b"], [[1.0]])


@pytest.mark.parametrize("ys", [[0.6931, 0.6841, 0.6906], [0.02, -0.01, 0.013], [3.0, 3.0], [-5.5, 120.2]])
def test_every_point_of_a_line_chart_lies_inside_its_plot(ys):
    """A loss starting at 0.6931 was drawn above the top tick (0.69), outside the plot: the axis must
    reach the first tick at or above the largest value."""
    chart = charts.line_chart([("train", list(enumerate(ys)))])
    top, bottom = chart.top, chart.top + chart.plot_height
    for line in chart.lines:
        for point in line.points.split():
            y = float(point.split(",")[1])
            assert top - 1e-6 <= y <= bottom + 1e-6, (point, top, bottom)


def test_histogram_draws_each_series_per_bin_and_the_limit() -> None:
    chart = charts.histogram([0, 10, 20], {"prompt": [3, 0, 1], "chosen": [0, 6, 2]}, over_label="longer")
    # One bar per non-zero count; the tallest reaches the top tick, which is at or above 6.
    assert sorted(b.title for b in chart.bars) == [
        "chosen: 2 with over 20 tokens", "chosen: 6 with 10–20 tokens",
        "prompt: 1 with over 20 tokens", "prompt: 3 with 0–10 tokens",
    ]  # fmt: skip
    tallest = max(chart.bars, key=lambda b: b.height)
    assert tallest.height <= chart.plot_height and float(chart.y_ticks[-1][1]) >= 6
    # The limit line stands between the last bin and the bin of longer values, labelled with its edge.
    over = [b for b in chart.bars if "over" in b.title]
    assert all(b.x > chart.limit_x for b in over) and chart.x_ticks[-1] == (chart.limit_x, "20")
    assert chart.over_label == "longer" and [name for name, _ in chart.legend] == ["prompt", "chosen"]
