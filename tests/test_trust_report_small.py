"""The HTML report speaks to people: a label for every metric, durations in words, instants in IST."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from mde.config import load
from mde.engine import MarketDataEngine
from mde.replay import run_replay
from mde.report import LABELS, fmt_metric, metric_label, parse_duration


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("12:20:27.731092", "12 h 20 min"),
        ("3 days, 4:00:00", "3 d 4 h"),
        ("1 day, 0:00:00", "1 d"),
        ("0:25:00", "25 min"),
        ("0:00:45", "45 s"),
        ("2:00:00", "2 h"),
        (timedelta(hours=12, minutes=20, seconds=27), "12 h 20 min"),
    ],
)
def test_durations_read_as_people_write_them(value: object, shown: str) -> None:
    assert fmt_metric("avg_holding", value) == shown


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)))
def test_a_duration_and_its_str_read_the_same_and_round_to_their_last_unit(td: timedelta) -> None:
    """The JSON summary holds str(timedelta); the report shows the same words for both, and the
    words are the duration to within half of their last unit."""
    assert parse_duration(str(td)) == td
    text = fmt_metric("avg_holding", str(td))
    assert text == fmt_metric("avg_holding", td)
    units = {"d": 86400, "h": 3600, "min": 60, "s": 1}
    parts = re.findall(r"(\d+) (d|h|min|s)\b", text)
    assert parts and " ".join(f"{n} {u}" for n, u in parts) == text
    total = sum(int(n) * units[u] for n, u in parts)
    assert abs(total - td.total_seconds()) <= units[parts[-1][1]] / 2 + 0.5


def test_every_metric_of_a_real_replay_has_a_human_label(tmp_path: Path) -> None:
    eng = MarketDataEngine(load(cache_dir=tmp_path / "cache", source="sample", environ={}))
    eng.download("NIFTY", "5m", "2024-09-01", "2024-12-31")
    result = run_replay(eng, "sma_cross", ["NIFTY"], "5m", "2024-10-01", "2024-12-31", segment="futures")
    missing = [k for k in result.metrics if k not in LABELS]
    assert not missing, f"metrics without a label in mde.report.LABELS: {missing}"
    out = tmp_path / "r.html"
    result.write_report(out)
    table = re.search(r'<table class="kv" id="metrics-table">(.*?)</table>', out.read_text(), re.S)
    assert table
    rows = re.findall(r"<tr><th>(.*?)</th><td[^>]*>(.*?)</td></tr>", table.group(1))
    assert len(rows) == len(result.metrics)
    for label, value in rows:
        assert "_" not in label and label[:1].isupper(), label
        assert not re.search(r"\d:\d\d:\d\d", value), (label, value)  # no raw timedelta or ISO time
    shown = dict(rows)
    assert shown["Max drawdown (candles under water)"] == f"{result.metrics['max_drawdown_bars']:,}"
    assert shown["Candles"] == f"{result.metrics['bars']:,}"
    assert re.fullmatch(r"\d+ h \d+ min|\d+ h|\d+ min|\d+ d \d+ h|\d+ d", shown["Average holding time"])
    assert re.fullmatch(r"2024-\d\d-\d\d \d\d:\d\d IST", shown["Max drawdown from (peak)"])


def test_an_unknown_metric_is_shown_in_words() -> None:
    assert metric_label("win_streak") == "Win streak" and metric_label("hit_pct") == "Hit (%)"
