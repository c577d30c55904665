"""Strategies a user can trust: indicators follow the candle's symbol in multi-symbol runs, a
strategy that raises is one line naming its file:line and the candle (exit 7, paper resumable),
ctx.log is visible in replay and in the report, and file strategies name their sessions by class."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from conftest import run_mde
from mde.config import load
from mde.engine import MarketDataEngine
from mde.errors import MdeError, StrategyError
from mde.paper.rules import default_name
from mde.paper.session import run_sample_session, session_status
from mde.replay import run_replay
from mde.runs import TRADE_CSV_COLUMNS
from mde.strategy import PerSymbolIndicator, Strategy

SYMBOLS = ("NIFTY", "BANKNIFTY")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NIFTY and BANKNIFTY 5m of 2024 Q1 (the bundled real candles), cached."""
    folder = tmp_path_factory.mktemp("trust-strategy-cache")
    eng = MarketDataEngine(load(cache_dir=folder, source="sample", environ={}))
    for sym in SYMBOLS:
        eng.download(sym, "5m", "2024-01-01", "2024-03-31")
    return folder


@pytest.fixture(scope="module")
def eng(cache: Path) -> MarketDataEngine:
    return MarketDataEngine(load(cache_dir=cache, source="sample", environ={}))


def mde(cache: Path, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None):  # noqa: ANN201
    return run_mde(*args, env={"MDE_CACHE_DIR": str(cache), "MDE_SOURCE": "sample", **(env or {})}, cwd=cwd)


# -- 1. indicators in multi-symbol runs ------------------------------------------------------
class Bands(Strategy):
    """Bollinger-style: buy a close below mid - k*sd, exit above mid. Indicators made in on_start
    without symbol= (the README's pattern); with `wake`, woken only where a rule can fire."""

    n: int = 20
    k: float = 2.0
    wake: bool = False

    def on_start(self, ctx):  # noqa: ANN001, ANN201
        n, k = self.n, self.k
        self.trace: list[tuple] = []
        self.mid = ctx.indicator(lambda c: pl.col("close").rolling_mean(n), name="mid")
        self.low = ctx.indicator(
            lambda c: pl.col("close").rolling_mean(n) - k * pl.col("close").rolling_std(n), name="low"
        )
        if self.wake:
            mid = pl.col("close").rolling_mean(n)
            low = mid - k * pl.col("close").rolling_std(n)
            ctx.wake_on(ctx.indicator(lambda c: (pl.col("close") < low) | (pl.col("close") > mid), name="signal"))

    def on_candle(self, ctx, candle):  # noqa: ANN001, ANN201
        mid, low = self.mid.value, self.low.value
        self.trace.append((candle.symbol, candle.ts_us, mid, low, ctx.position()))
        if mid is None or low is None:
            return
        if ctx.position() == 0 and candle.close < low:
            ctx.buy(1)
        elif ctx.position() > 0 and candle.close > mid:
            ctx.close()


def _run(eng: MarketDataEngine, symbols: tuple[str, ...], lo: date, hi: date, **params):  # noqa: ANN003, ANN202
    strat = Bands(**params)
    result = run_replay(eng, strat, list(symbols), "5m", lo, hi, costs="none", cash=1e12)
    return result, strat.trace


def _rows(trades: pl.DataFrame, symbol: str) -> list[tuple]:
    return sorted(trades.filter(pl.col("symbol") == symbol).select(TRADE_CSV_COLUMNS).rows())


def test_an_indicator_made_without_symbol_follows_the_candles_symbol(eng: MarketDataEngine) -> None:
    lo, hi = date(2024, 2, 1), date(2024, 2, 29)
    both, trace = _run(eng, SYMBOLS, lo, hi)
    bank, bank_trace = _run(eng, ("BANKNIFTY",), lo, hi)
    assert len(_rows(bank.trades, "BANKNIFTY")) > 5
    assert _rows(both.trades, "BANKNIFTY") == _rows(bank.trades, "BANKNIFTY")  # not NIFTY's bands
    assert [t for t in trace if t[0] == "BANKNIFTY"] == bank_trace
    # symbol= binds explicitly; ind[symbol] is the bound one of a per-symbol indicator
    seen = {}

    class Reader(Strategy):
        def on_start(self, ctx):  # noqa: ANN001, ANN201
            self.any = ctx.indicator(lambda c: pl.col("close"))
            self.nifty = ctx.indicator(lambda c: pl.col("close"), "NIFTY")
            assert isinstance(self.any, PerSymbolIndicator)

        def on_candle(self, ctx, candle):  # noqa: ANN001, ANN201
            seen.setdefault(candle.symbol, []).append(
                (candle.close, self.any.value, self.any.last(1)[0], self.nifty.value, self.any["NIFTY"].value)
            )

    run_replay(eng, Reader(), list(SYMBOLS), "5m", lo, date(2024, 2, 2), costs="none")
    for rows in seen.values():
        for close, value, last, nifty, nifty2 in rows:
            assert value == last == close
            assert nifty == nifty2
    assert all(close == nifty for close, *_, nifty in seen["NIFTY"])
    assert all(close != nifty for close, *_, nifty in seen["BANKNIFTY"])


@hsettings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(3, 40),
    k=st.floats(0.0, 2.5, allow_nan=False).map(lambda x: round(x, 2)),
    wake=st.booleans(),
    first=st.dates(date(2024, 1, 1), date(2024, 3, 20)),
    days=st.integers(0, 40),
)
def test_a_two_symbol_run_is_the_union_of_the_one_symbol_runs(
    eng: MarketDataEngine, n: int, k: float, wake: bool, first: date, days: int
) -> None:
    """Decisions per symbol are independent: each symbol's trades, fills and every on_candle call
    (indicator values, position) in the two-symbol run are those of its one-symbol run."""
    last = min(first + timedelta(days=days), date(2024, 3, 31))
    if not any(eng.calendar.sessions(first + timedelta(days=d)) for d in range((last - first).days + 1)):
        return  # no session in the range: nothing to replay
    both, trace = _run(eng, SYMBOLS, first, last, n=n, k=k, wake=wake)
    for sym in SYMBOLS:
        one, one_trace = _run(eng, (sym,), first, last, n=n, k=k, wake=wake)
        assert _rows(both.trades, sym) == _rows(one.trades, sym)
        assert [t for t in trace if t[0] == sym] == one_trace
    assert both.trades.height == sum(len(_rows(both.trades, s)) for s in SYMBOLS)


def test_wake_on_a_per_symbol_indicator_wakes_each_symbol_on_its_own_values(eng: MarketDataEngine) -> None:
    lo, hi = date(2024, 1, 1), date(2024, 3, 31)
    dense, dense_trace = _run(eng, SYMBOLS, lo, hi, n=20, k=1.5)
    woken, woken_trace = _run(eng, SYMBOLS, lo, hi, n=20, k=1.5, wake=True)
    assert woken.trades.select(TRADE_CSV_COLUMNS).rows() == dense.trades.select(TRADE_CSV_COLUMNS).rows()
    for sym in SYMBOLS:  # each symbol skipped the candles where neither rule can fire
        calls = [t for t in woken_trace if t[0] == sym]
        assert 0 < len(calls) < len([t for t in dense_trace if t[0] == sym])


# -- 2. a strategy that raises ----------------------------------------------------------------
RAISER = """
import os
from mde import Strategy


def helper(x):
    return 1 / x  # HELPER


class RsiReversion(Strategy):
    where: str = "on_candle"
    at: int = 10

    def validate(self):
        if self.where == "validate":
            raise ValueError("bad combination")  # VALIDATE

    def on_start(self, ctx):
        ctx.log("warming up")
        if self.where == "on_start":
            raise KeyError("nope")  # ON_START

    def on_candle(self, ctx, candle):
        if self.where == "flag" and candle.minute == 11 * 60 and os.path.exists(os.environ["RAISER_FLAG"]):
            raise RuntimeError("flag is set")  # FLAG
        if self.where == "flag":
            if candle.minute == 10 * 60 and ctx.position() == 0:
                ctx.buy(lots=1)
                ctx.log("bought at the close of " + str(candle.close))
            elif candle.minute == 12 * 60 and ctx.position():
                ctx.close()
            return
        if self.where == "on_candle" and candle.day.day == self.at and candle.minute == 10 * 60 + 15:
            helper(0)  # CALL

    def on_stop(self, ctx):
        if self.where == "on_stop":
            raise RuntimeError("stopping")  # ON_STOP
"""


def _line(marker: str) -> int:
    return next(i for i, text in enumerate(RAISER.splitlines(), 1) if f"# {marker}" in text)


@pytest.fixture
def raiser(tmp_path: Path) -> Path:
    """The strategy file in the working directory, named as a user would: mystrats.py."""
    path = Path.cwd() / "mystrats.py"
    path.write_text(RAISER)
    return path


def test_a_raising_on_candle_is_one_line_naming_file_line_symbol_and_candle(
    eng: MarketDataEngine, raiser: Path
) -> None:
    with pytest.raises(StrategyError) as info:
        run_replay(
            eng,
            "mystrats.py:RsiReversion",
            ["NIFTY", "BANKNIFTY"],
            "5m",
            "2024-01-01",
            "2024-01-31",
            costs="none",
            params={"at": "10"},
        )
    err = info.value
    assert err.exit_code == 7 and isinstance(err, MdeError)
    assert str(err) == (
        f"strategy RsiReversion raised ZeroDivisionError: division by zero at mystrats.py:{_line('HELPER')} "
        "on NIFTY 5m candle 2024-01-10 10:15+05:30 (run with -v for the traceback)"
    )
    assert "\n" not in str(err) and "Traceback" in err.traceback and "ZeroDivisionError" in err.traceback
    assert isinstance(err.__cause__, ZeroDivisionError)


@pytest.mark.parametrize(
    "where,marker,when",
    [
        ("on_start", "ON_START", "in on_start at 2024-01-01 00:00+05:30"),
        ("on_stop", "ON_STOP", "in on_stop at 2024-01-31 15:30+05:30"),
        ("validate", "VALIDATE", "when created"),
    ],
)
def test_on_start_on_stop_and_validate_raising_are_one_line_too(
    eng: MarketDataEngine, raiser: Path, where: str, marker: str, when: str
) -> None:
    with pytest.raises(StrategyError) as info:
        run_replay(
            eng,
            "mystrats.py:RsiReversion",
            ["NIFTY"],
            "5m",
            "2024-01-01",
            "2024-01-31",
            costs="none",
            params={"where": where},
        )
    assert f"at mystrats.py:{_line(marker)} {when} (run with -v" in str(info.value)
    assert str(info.value).startswith("strategy RsiReversion raised ")


def test_replay_cli_prints_one_line_and_exits_7_and_the_traceback_with_v(cache: Path, raiser: Path) -> None:
    args = (
        "replay",
        "--strategy",
        "mystrats.py:RsiReversion",
        "-s",
        "NIFTY",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-31",
        "--costs",
        "none",
    )
    res = mde(cache, *args, cwd=raiser.parent)
    assert res.returncode == 7, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: strategy RsiReversion raised ZeroDivisionError: division by zero at mystrats.py:"
        f"{_line('HELPER')} on NIFTY 5m candle 2024-01-10 10:15+05:30 (run with -v for the traceback)"
    ]
    assert "Traceback" not in res.stderr and res.stdout == ""
    verbose = mde(cache, "-v", *args, cwd=raiser.parent)
    assert verbose.returncode == 7
    assert (
        "Traceback (most recent call last)" in verbose.stderr
        and f"line {_line('CALL')}, in on_candle" in verbose.stderr
    )
    assert errors[0] in verbose.stderr.splitlines()


def test_a_sweep_on_a_process_pool_reports_the_strategy_error_in_one_line(cache: Path, raiser: Path) -> None:
    res = mde(
        cache,
        "replay",
        "--strategy",
        "mystrats.py:RsiReversion",
        "-s",
        "NIFTY",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-31",
        "--costs",
        "none",
        "-p",
        "at=10,11,40",
        "--workers",
        "2",
        "--json",
        cwd=raiser.parent,
    )
    assert res.returncode == 7, res.stderr
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and len(res.stderr.strip().splitlines()) == 1
    assert re.fullmatch(
        r"error: strategy RsiReversion raised ZeroDivisionError: division by zero at mystrats\.py:\d+ "
        r"on NIFTY 5m candle 2024-01-10 10:15\+05:30 with at=10 \(2 of 3 combinations failed; .*\)",
        errors[0],
    )
    rows = json.loads(res.stdout)  # the table of results still comes, the failures in their rows
    assert [("error" in r) for r in rows] == [False, True, True]
    assert rows[0]["params"]["at"] == 40


def test_a_paper_session_whose_strategy_raises_stops_resumably(
    tmp_path: Path, raiser: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load(cache_dir=tmp_path / "cache", source="sample", environ={})
    flag = tmp_path / "flag"
    monkeypatch.setenv("RAISER_FLAG", str(flag))
    common = dict(params={"where": "flag"}, segment="futures")
    clean = run_sample_session(
        settings, "mystrats.py:RsiReversion", ["NIFTY"], "5m", "2024-06-14", name="clean", **common
    )
    assert clean.trades.height == 1
    flag.touch()
    lines: list[str] = []
    with pytest.raises(StrategyError) as info:
        run_sample_session(
            settings, "mystrats.py:RsiReversion", ["NIFTY"], "5m", "2024-06-14", log=lines.append, **common
        )
    assert f"at mystrats.py:{_line('FLAG')} on NIFTY 5m candle 2024-06-14 11:00+05:30" in str(info.value)
    name = "RsiReversion-2024-06-14"  # the default name: the class, not the file path
    (status,) = session_status(settings, name)
    assert status["status"] == "stopped" and status["error"] == str(info.value) and status["positions"] == {"NIFTY": 75}
    with sqlite3.connect(settings.cache_dir / "_paper" / f"{name}.sqlite") as db:
        (payload,) = [json.loads(p) for (p,) in db.execute("SELECT payload FROM events WHERE kind = 'error'")]
        notes = [json.loads(p)["line"] for (p,) in db.execute("SELECT payload FROM events WHERE kind = 'note'")]
    assert payload["error"] == str(info.value)
    assert len(notes) == 1 and re.fullmatch(
        r"2024-06-14 10:00 RsiReversion NIFTY: bought at the close of [\d.]+", notes[0]
    )
    assert notes[0] in lines  # shown as well as journaled
    flag.unlink()  # the user fixes the cause and runs the same session again: it resumes and finishes
    done = run_sample_session(settings, "mystrats.py:RsiReversion", ["NIFTY"], "5m", "2024-06-14", **common)
    assert done.status == "finished" and done.resumed_from == 1
    assert done.trades.select(TRADE_CSV_COLUMNS).rows() == clean.trades.select(TRADE_CSV_COLUMNS).rows()
    assert session_status(settings, name)[0]["status"] == "finished"


def test_paper_cli_strategy_error_is_one_line_exit_7(tmp_path: Path, raiser: Path) -> None:
    flag = tmp_path / "flag"
    flag.touch()
    cache = tmp_path / "cache"
    args = (
        "paper",
        "--strategy",
        "mystrats.py:RsiReversion",
        "-s",
        "NIFTY",
        "--source",
        "sample",
        "--date",
        "2024-06-14",
        "--segment",
        "futures",
        "-p",
        "where=flag",
    )
    res = mde(cache, *args, cwd=raiser.parent, env={"RAISER_FLAG": str(flag)})
    assert res.returncode == 7, res.stderr
    assert "Traceback" not in res.stderr
    assert [x for x in res.stderr.splitlines() if x.startswith("error:")] == [
        f"error: strategy RsiReversion raised RuntimeError: flag is set at mystrats.py:{_line('FLAG')} on NIFTY 5m "
        "candle 2024-06-14 11:00+05:30 (run with -v for the traceback)"
    ]
    status = json.loads(mde(cache, "paper", "--status", "--json").stdout)
    assert [(s["session"], s["status"]) for s in status] == [("RsiReversion-2024-06-14", "stopped")]
    table = mde(cache, "paper", "--status").stdout
    assert "RsiReversion-2024-06-14 stopped: strategy RsiReversion raised RuntimeError: flag is set" in table
    flag.unlink()
    again = mde(cache, *args, cwd=raiser.parent, env={"RAISER_FLAG": str(flag)})
    assert again.returncode == 0, again.stderr
    assert "session RsiReversion-2024-06-14 finished" in again.stdout


# -- 3. ctx.log in replay ---------------------------------------------------------------------
class Chatty(Strategy):
    def on_start(self, ctx):  # noqa: ANN001, ANN201
        ctx.log("hello")

    def on_candle(self, ctx, candle):  # noqa: ANN001, ANN201
        ctx.log(f"close {candle.close}")


def test_ctx_log_is_on_stderr_in_replay_but_not_with_q_and_json_stays_pure(cache: Path, raiser: Path) -> None:
    args = (
        "replay",
        "--strategy",
        "mystrats.py:RsiReversion",
        "-s",
        "NIFTY",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-31",
        "--costs",
        "none",
        "-p",
        "where=flag",
    )
    env = {"RAISER_FLAG": str(raiser.parent / "no-such-flag")}
    res = mde(cache, *args, "--json", cwd=raiser.parent, env=env)
    assert res.returncode == 0, res.stderr
    json.loads(res.stdout)
    lines = res.stderr.splitlines()
    assert lines[0] == "2024-01-01 00:00 RsiReversion: warming up"
    assert re.fullmatch(r"2024-01-01 10:00 RsiReversion NIFTY: bought at the close of [\d.]+", lines[1])
    assert len(lines) > 15
    quiet = mde(cache, "-q", *args, cwd=raiser.parent, env=env)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_the_report_has_a_bounded_strategy_log(eng: MarketDataEngine, tmp_path: Path) -> None:
    result = run_replay(eng, Chatty(), ["NIFTY"], "5m", "2024-01-01", "2024-01-31", costs="none")
    assert len(result.log) == 1 + result.events > 1001
    assert result.log[1].line().startswith("2024-01-01 09:15 Chatty NIFTY: close ")
    path = tmp_path / "report.html"
    result.write_report(path)
    html = path.read_text()
    assert "<h2>Strategy log</h2>" in html
    assert f"showing the first 1,000; {len(result.log) - 1000:,} more not shown" in html
    shown = html.split('<pre id="log-lines">')[1].split("</pre>")[0].splitlines()
    assert shown[0] == "2024-01-01 00:00 Chatty: hello" and len(shown) == 1000


# -- 4. default session names -----------------------------------------------------------------
def test_default_session_names() -> None:
    day = date(2024, 6, 14)
    assert default_name("/tmp/mystrats/rsi.py:RsiReversion", day) == "RsiReversion-2024-06-14"
    assert default_name("mypkg.strats:Breakout", day) == "Breakout-2024-06-14"
    assert default_name("sma_cross", day) == "sma_cross-2024-06-14"
    assert default_name("orb", day) == "orb-2024-06-14"


class Hold(Strategy):
    """Buys 1 of each symbol at its first candle and holds to the end."""

    def on_candle(self, ctx, candle):  # noqa: ANN001, ANN201
        if ctx.position() == 0 and not ctx.open_orders(candle.symbol):  # open_orders() lists every symbol's
            ctx.buy(1)


def test_a_position_open_at_the_end_closes_at_its_own_symbols_last_candle(tmp_path: Path) -> None:
    """A series that ends before the others (a gap at the end, --allow-gaps) closes at its own last
    close and time, as in its one-symbol run, not at another symbol's later close time."""
    eng = MarketDataEngine(load(cache_dir=tmp_path / "cache", source="sample", environ={}))
    eng.download("NIFTY", "5m", "2024-01-01", "2024-01-31")
    eng.download("BANKNIFTY", "5m", "2024-01-01", "2024-01-30")
    kw = dict(costs="none", allow_gaps=True)
    both = run_replay(eng, Hold(), list(SYMBOLS), "5m", "2024-01-01", "2024-01-31", **kw)
    for sym in SYMBOLS:
        one = run_replay(eng, Hold(), [sym], "5m", "2024-01-01", "2024-01-31", **kw)
        assert _rows(both.trades, sym) == _rows(one.trades, sym)
    (bank,) = both.trades.filter(pl.col("symbol") == "BANKNIFTY").iter_rows(named=True)
    assert bank["exit_reason"] == "end of replay" and bank["exit_ts"].isoformat() == "2024-01-30T15:30:00+05:30"


def test_the_paper_panel_shows_the_strategys_latest_log_lines(
    tmp_path: Path, raiser: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    from mde.render import paper_dashboard

    monkeypatch.setenv("RAISER_FLAG", str(tmp_path / "no-flag"))
    settings = load(cache_dir=tmp_path / "cache", source="sample", environ={})
    snaps: list[dict] = []
    run_sample_session(
        settings,
        "mystrats.py:RsiReversion",
        ["NIFTY"],
        "5m",
        "2024-06-14",
        params={"where": "flag"},
        segment="futures",
        until="10:30",
        on_tick=snaps.append,
    )
    assert snaps[0]["log"] == ["2024-06-14 00:00 RsiReversion: warming up"] and re.fullmatch(
        r"2024-06-14 10:00 RsiReversion NIFTY: bought at the close of [\d.]+", snaps[-1]["log"][-1]
    )
    console = Console(width=200, record=True, file=open(tmp_path / "panel.txt", "w"))  # noqa: SIM115
    console.print(paper_dashboard(snaps[-1]))
    text = console.export_text()
    assert "strategy log:" in text and snaps[-1]["log"][-1] in text


def test_open_orders_and_cancel_all_default_to_the_current_candles_symbol(tmp_path: Path) -> None:
    """Like position(): a multi-symbol strategy asking `if not ctx.open_orders()` must not see the
    other symbol's orders (that coupled the symbols silently)."""
    from mde.engine import MarketDataEngine

    seen: list[tuple[str, int, int]] = []

    class Limits(Strategy):
        def on_candle(self, ctx, candle):
            if not ctx.open_orders():
                ctx.buy(1, limit=round(candle.close * 0.5, 1))  # far below: never fills, stays open
            seen.append((ctx.symbol, len(ctx.open_orders()), len(ctx.open_orders(every=True))))
            if candle.minute == 15 * 60:
                ctx.cancel_all()

    settings = load(cache_dir=tmp_path / "cache", source="sample", environ={})
    eng = MarketDataEngine(settings)
    for sym in ("NIFTY", "BANKNIFTY"):
        eng.download(sym, "5m", "2024-06-14", "2024-06-14")
    run_replay(eng, Limits, ["NIFTY", "BANKNIFTY"], "5m", "2024-06-14", "2024-06-14", costs="none")
    assert {s for s, _, _ in seen} == {"NIFTY", "BANKNIFTY"}
    assert all(own == 1 for _, own, _ in seen)  # each symbol keeps exactly its own order
    assert max(every for _, _, every in seen) == 2
