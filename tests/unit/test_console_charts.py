"""The console's server-side SVG charts: well-formed SVG, every text escaped, empty data said so, geometry honest."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from radtrace.console.chart_timeline import Stage, stage_timeline_svg
from radtrace.console.charts import (
    Band,
    Series,
    bar_chart_svg,
    horizontal_bars_svg,
    percent,
    time_series_svg,
)

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert("x")</script> & "quotes"'


def _parse(markup: str) -> ET.Element:
    root = ET.fromstring(str(markup))  # noqa: S314 - our own output, parsed to check it is well-formed
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    assert root.find(f"{SVG}title") is not None
    assert root.find(f"{SVG}desc") is not None
    return root


def _texts(root: ET.Element) -> list[str]:
    return ["".join(node.itertext()) for node in root.iter() if node.tag in (f"{SVG}text", f"{SVG}title")]


def test_time_series_draws_band_target_and_flags_the_flagged_points() -> None:
    labels = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
    svg = time_series_svg(
        labels,
        [Series("Pleural Effusion", [0.15, None, 0.4, 0.42], flagged=[False, False, True, True])],
        title="Prevalence",
        band=Band([0.1, None, 0.1, 0.1], [0.2, None, 0.2, 0.2], centre=0.15),
        target=0.3,
        y_format=percent,
    )
    root = _parse(svg)
    flags = [c for c in root.iter(f"{SVG}circle") if c.get("class") == "chart-flag"]
    points = [c for c in root.iter(f"{SVG}circle") if c.get("class") == "chart-point"]
    assert len(flags) == 2
    assert len(points) == 1  # the gap (None) draws no point
    assert len([r for r in root.iter(f"{SVG}rect") if r.get("class") == "chart-band"]) == 3
    assert any(line.get("class") == "chart-target" for line in root.iter(f"{SVG}line"))
    assert any(line.get("class") == "chart-centre" for line in root.iter(f"{SVG}line"))
    # the gap splits the line: the one polyline joins only the two points after it
    polylines = list(root.iter(f"{SVG}polyline"))
    assert len(polylines) == 1
    assert len(polylines[0].get("points", "").split()) == 2
    # a higher value is drawn higher up (SVG y grows downwards)
    assert float(flags[1].get("cy", 0)) < float(points[0].get("cy", 0))
    assert "Pleural Effusion, 2026-01-03: 40% (flagged)" in _texts(root)


def test_every_text_is_escaped() -> None:
    charts = [
        time_series_svg([HOSTILE], [Series(HOSTILE, [1.0])], title=HOSTILE, band=Band([0.5], [1.5], 1.0, HOSTILE)),
        bar_chart_svg([HOSTILE], {HOSTILE: [3.0]}, title=HOSTILE),
        horizontal_bars_svg([(HOSTILE, 1.0, 0.5, 2.0)], title=HOSTILE, target=1.5, target_name=HOSTILE),
        stage_timeline_svg([Stage(HOSTILE, 0.0, 2.0)], title=HOSTILE),
    ]
    for svg in charts:
        root = _parse(svg)  # parses: nothing broke out of its element or attribute
        assert "<script>" not in str(svg)
        assert list(root.iter(f"{SVG}script")) == []
        assert any(HOSTILE in text for text in _texts(root))  # shown as text, intact


@pytest.mark.parametrize(
    "svg",
    [
        time_series_svg([], [], title="Nothing"),
        time_series_svg(["a", "b"], [Series("s", [None, None])], title="Gaps only"),
        bar_chart_svg(["a"], {"read": [0.0]}, title="Zeros"),
        horizontal_bars_svg([], title="No rows"),
        stage_timeline_svg([], title="No stages"),
    ],
)
def test_empty_data_says_so(svg: str) -> None:
    root = _parse(svg)
    assert any(node.get("class") == "chart-empty" for node in root.iter(f"{SVG}text"))
    assert list(root.iter(f"{SVG}rect")) == [] or all(r.get("class") is None for r in root.iter(f"{SVG}rect"))


def test_stacked_bars_stack_and_scale_by_value() -> None:
    root = _parse(bar_chart_svg(["d1", "d2"], {"read": [80.0, 40.0], "failed": [20.0, 0.0]}, title="Volume"))
    bars = [r for r in root.iter(f"{SVG}rect") if "chart-bar" in (r.get("class") or "")]
    assert len(bars) == 3  # a zero segment is not drawn
    read_1, failed_1, read_2 = bars
    assert float(read_1.get("height", 0)) == pytest.approx(2 * float(read_2.get("height", 0)), rel=0.02)
    # the failed segment sits on top of the read one
    assert float(failed_1.get("y", 0)) + float(failed_1.get("height", 0)) == pytest.approx(
        float(read_1.get("y", 0)), abs=0.11
    )


def test_stage_timeline_places_each_stage_at_its_offset() -> None:
    stages = [Stage("queue_wait", 0.0, 10.0), Stage("inference", 10.0, 30.0), Stage("dispatch", 40.0, 0.2)]
    root = _parse(stage_timeline_svg(stages, title="Study timeline"))
    bars = [r for r in root.iter(f"{SVG}rect") if "chart-bar" in (r.get("class") or "")]
    assert len(bars) == 3
    first, second, third = (float(b.get("x", 0)) for b in bars)
    assert first < second < third
    widths = [float(b.get("width", 0)) for b in bars]
    assert widths[1] == pytest.approx(3 * widths[0], rel=0.02)
    assert widths[2] >= 1.0  # a 200 ms stage stays visible
    assert "inference: 30.0 s, from 10.0 s" in _texts(root)
    assert [g.get("data-stage") for g in root.iter(f"{SVG}g")] == ["queue_wait", "inference", "dispatch"]


def test_horizontal_bars_draw_whiskers_and_flags() -> None:
    root = _parse(
        horizontal_bars_svg(
            [("inference", 30.0, 20.0, 60.0), ("dispatch", 2.0, None, None)],
            title="Latency",
            target=45.0,
            flagged=[True, False],
        )
    )
    assert len([r for r in root.iter(f"{SVG}rect") if r.get("class") == "chart-flag"]) == 1
    assert len([line for line in root.iter(f"{SVG}line") if line.get("class") == "chart-whisker"]) == 3
    assert "inference: 30 (20 to 60)" in _texts(root)
