"""One PaperEngine: each symbol on its own timeframe, a cache update that raises anything is
`stale` and the session goes on, a strategy that raises stops it resumably, and the clock and
fill policy plug in (a tick-driven clock with tick fills, as the live stream will bring)."""

from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from conftest import run_mde
from mde.clock import IST, as_us
from mde.config import Settings, load
from mde.engine import MarketDataEngine
from mde.errors import InputError, SessionBusy, StrategyError
from mde.paper import PaperEngine, PriceFills, run_session, session_status, symbol_timeframes
from mde.paper.state import TradeState, session_path
from mde.replay import run_replay
from mde.strategy import Strategy

DAY = "2024-06-14"
PARAMS = {"fast": 3, "slow": 8}
COLS = ["symbol", "side", "qty", "entry_ts", "entry_price", "exit_ts", "exit_price", "charges"]
MIXED = '[refresh]\ntimeframes = ["5m"]\n[refresh.multi_tf]\nNIFTY = ["1m", "5m"]\n"NSE:NIFTY BANK" = ["15m"]\n'


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("paper-engine") / "cache"
    eng = MarketDataEngine(load(cache_dir=folder, source="sample", environ={}))
    for tf in ("1m", "5m"):
        eng.download("NIFTY", tf, "2024-06-03", "2024-06-13")
        eng.download("BANKNIFTY", tf, "2024-06-03", "2024-06-13")
    return folder


def mixed_settings(tmp_path: Path, cache: Path) -> Settings:
    conf = tmp_path / "mde.toml"
    conf.write_text(MIXED)
    return load(conf, cache_dir=cache, source="sample", environ={})


def journal(
    cache: Path, name: str
) -> tuple[dict[str, str], dict[str, int], list[tuple[str, str | None, dict[str, Any]]]]:
    with TradeState(session_path(cache / "_paper", name), readonly=True) as state:
        return state.meta(), state.progress(), [(e.kind, e.symbol, e.payload) for e in state.events()]


def test_each_symbol_trades_on_its_own_first_multi_tf_timeframe(cache: Path, tmp_path: Path) -> None:
    st = mixed_settings(tmp_path, cache)
    assert {s: tf.name for s, tf in symbol_timeframes(st, ["NIFTY", "BANKNIFTY"]).items()} == {
        "NIFTY": "1m",
        "BANKNIFTY": "15m",
    }
    assert {tf.name for tf in symbol_timeframes(st, ["NIFTY", "BANKNIFTY"], "5m").values()} == {
        "5m"
    }  # --timeframe: all
    lines: list[str] = []
    result = run_session(
        st,
        "sma_cross",
        ["NIFTY", "BANKNIFTY"],
        day=DAY,
        name="mixed",
        params=PARAMS,
        segment="futures",
        log=lines.append,
    )
    assert result.status == "finished" and result.candles == 375 + 25
    assert lines[0].startswith(f"session mixed: playing {DAY} NIFTY 1m, BANKNIFTY 15m as fast as possible")
    # each symbol's trades are exactly those of replaying it alone on its own timeframe
    for sym, tf in (("NIFTY", "1m"), ("BANKNIFTY", "15m")):
        alone = run_replay(MarketDataEngine(st), "sma_cross", [sym], tf, DAY, DAY, params=PARAMS, segment="futures")
        assert alone.trades.height >= 1
        assert result.trades.filter(pl.col("symbol") == sym).select(COLS).equals(alone.trades.select(COLS)), sym
    assert result.net_pnl == pytest.approx(float(result.trades["net_pnl"].sum()))
    assert result.net_pnl == pytest.approx(result.summary.metrics["net_pnl"], abs=0.011)
    meta, progress, _ = journal(cache, "mixed")
    assert meta["timeframe"] == "1m,15m" and meta["symbols"] == "NIFTY,BANKNIFTY"
    assert progress == {
        "NIFTY:1m": as_us(datetime(2024, 6, 14, 15, 30, tzinfo=IST)),
        "BANKNIFTY:15m": as_us(datetime(2024, 6, 14, 15, 30, tzinfo=IST)),
        "_end": progress["_end"],
    }
    (status,) = session_status(st, "mixed")
    assert status["timeframe"] == "1m,15m" and status["positions"] == {}
    assert status["net_pnl"] == pytest.approx(result.summary.metrics["net_pnl"], abs=0.011)


class Recorder(Strategy):
    """Notes what it sees: the candle's series, ctx.timeframe, whether its default window is
    its own series, and the spacing of the other symbol's default window."""

    seen: list[tuple[str, str, str, bool, timedelta]] = []

    def on_candle(self, ctx, candle):  # type: ignore[no-untyped-def]
        own = ctx.window(n=1)["ts"][-1] == candle.ts
        other = ctx.window("BANKNIFTY" if candle.symbol == "NIFTY" else "NIFTY", n=2)["ts"]
        Recorder.seen.append((candle.symbol, candle.timeframe, ctx.timeframe, own, other[-1] - other[-2]))


def test_the_strategy_sees_each_symbols_own_timeframe(cache: Path, tmp_path: Path) -> None:
    st = mixed_settings(tmp_path, cache)
    Recorder.seen = []
    run_session(st, Recorder, ["NIFTY", "BANKNIFTY"], day=DAY, name="recorder", costs="none", until="10:00")
    assert set(Recorder.seen) == {
        ("NIFTY", "1m", "1m", True, timedelta(minutes=15)),
        # at 09:30 the day's first 15m candle (09:15) has closed: overnight from 15:15
        ("NIFTY", "1m", "1m", True, timedelta(hours=18)),
        ("BANKNIFTY", "15m", "15m", True, timedelta(minutes=1)),
    }
    # close-time order: at 09:30 NIFTY's 09:29 1m candle, then BANKNIFTY's 09:15 15m candle (the symbols' order)
    assert [s[0] for s in Recorder.seen[13:17]] == ["NIFTY", "NIFTY", "BANKNIFTY", "NIFTY"]
    assert len(Recorder.seen) == 45 + 3  # closes 09:16..10:00, and 09:30, 09:45, 10:00


def test_the_cli_trades_each_symbol_on_its_multi_tf_timeframe_and_timeframe_sets_one_for_all(
    cache: Path, tmp_path: Path
) -> None:
    conf = tmp_path / "mde.toml"
    conf.write_text(MIXED)
    env = {"MDE_CACHE_DIR": str(cache), "MDE_SOURCE": "sample"}
    args = (
        "--config",
        str(conf),
        "paper",
        "--strategy",
        "sma_cross",
        "-s",
        "NIFTY",
        "BANKNIFTY",
        "--date",
        DAY,
        "--segment",
        "futures",
        "-p",
        "fast=3",
        "-p",
        "slow=8",
        "--until",
        "11:00",
    )
    res = run_mde(*args, "--session", "cli-mixed", env=env)
    assert res.returncode == 0, res.stderr
    assert "session cli-mixed finished: 112 candles" in res.stdout  # by 11:00: 105 NIFTY 1m, 7 BANKNIFTY 15m
    _, progress, _ = journal(cache, "cli-mixed")
    assert set(progress) == {"NIFTY:1m", "BANKNIFTY:15m", "_end"}
    res = run_mde(*args, "--session", "cli-one", "--timeframe", "5m", "--json", env=env)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["timeframe"] == "5m"
    _, progress, _ = journal(cache, "cli-one")
    assert set(progress) == {"NIFTY:5m", "BANKNIFTY:5m", "_end"}


class Flaky(MarketDataEngine):
    """A cache whose update raises what mde does not know (a bug, an OS fault) a few times."""

    def __init__(self, settings: Settings, fail: dict[str, list[BaseException]]) -> None:
        super().__init__(settings)
        self.fail = fail

    def update_cache(self, symbol: str, timeframe: Any = "5m") -> int:
        due = self.fail.get(symbol)
        if due and self.now().hour >= 10:
            raise due.pop(0)
        return super().update_cache(symbol, timeframe)


def test_any_exception_from_a_cache_update_is_journaled_stale_and_the_session_goes_on(cache: Path) -> None:
    st = load(cache_dir=cache, source="sample", environ={})
    clean = run_session(
        st, "sma_cross", ["NIFTY", "BANKNIFTY"], "5m", day=DAY, name="clean", params=PARAMS, segment="futures"
    )
    end = datetime(2024, 6, 14, 23, 59, 59, 999999, tzinfo=IST)
    engine = Flaky(
        st.with_overrides(now=end), {"BANKNIFTY": [RuntimeError("boom"), ZeroDivisionError("x"), OSError(5, "I/O")]}
    )
    lines: list[str] = []
    flaky = run_session(
        st,
        "sma_cross",
        ["NIFTY", "BANKNIFTY"],
        "5m",
        day=DAY,
        name="flaky",
        params=PARAMS,
        segment="futures",
        engine=engine,
        log=lines.append,
    )
    assert flaky.status == "finished" and flaky.candles == clean.candles  # the late candles were run once they came
    assert flaky.trades.select(COLS).equals(clean.trades.select(COLS))  # fills at the next open: nothing changes
    _, _, events = journal(cache, "flaky")
    stale = [(sym, p["error"]) for kind, sym, p in events if kind == "stale"]
    assert stale == [
        ("BANKNIFTY", "RuntimeError: boom"),
        ("BANKNIFTY", "ZeroDivisionError: x"),
        ("BANKNIFTY", "OSError: [Errno 5] I/O"),
    ]
    assert "10:00:00 BANKNIFTY: cache update failed (RuntimeError: boom); going on with the cached data" in lines


class RaisesOnBankNifty(Strategy):
    def on_candle(self, ctx, candle):  # type: ignore[no-untyped-def]
        if candle.symbol == "BANKNIFTY" and candle.ts.hour == 11 and not Path(self.flag).exists():  # type: ignore[attr-defined]
            raise RuntimeError("no data for the signal")
        if candle.symbol == "NIFTY" and not ctx.position() and candle.ts.minute == 0:
            ctx.buy(75)
        elif ctx.position("NIFTY") and candle.symbol == "NIFTY" and candle.ts.minute == 30:
            ctx.close("NIFTY")

    flag: str = ""


def test_a_strategy_that_raises_stops_the_session_resumably_naming_strategy_symbol_and_candle(
    cache: Path, tmp_path: Path
) -> None:
    st = mixed_settings(tmp_path, cache)
    flag = tmp_path / "fixed"
    kw: dict[str, Any] = dict(day=DAY, name="raises", params={"flag": str(flag)}, segment="futures")
    with pytest.raises(StrategyError) as info:
        run_session(st, RaisesOnBankNifty, ["NIFTY", "BANKNIFTY"], **kw)
    assert "strategy RaisesOnBankNifty raised RuntimeError: no data for the signal" in str(info.value)
    assert "on BANKNIFTY 15m candle 2024-06-14 11:00+05:30" in str(info.value)
    assert str(info.value).count("\n") == 0
    (status,) = session_status(st, "raises")
    assert status["status"] == "stopped" and status["error"] == str(info.value)
    flag.touch()  # fixed: the same session resumes at that candle and finishes
    done = run_session(st, RaisesOnBankNifty, ["NIFTY", "BANKNIFTY"], **kw)
    assert done.status == "finished" and done.resumed_from == 2
    once = run_session(
        mixed_settings(tmp_path, cache), RaisesOnBankNifty, ["NIFTY", "BANKNIFTY"], **{**kw, "name": "raises-never"}
    )
    assert done.trades.select(COLS).equals(once.trades.select(COLS)) and once.trades.height >= 5


class FiveMinuteTicks:
    """A tick-driven clock as the live stream brings (issue 17), here a tick at each 5m close:
    real time (not replayable), a resume catches up by walking the journal."""

    replayable = False

    def __init__(self, day: date, start: datetime, end: datetime, stop_at: datetime | None = None) -> None:
        self.day, self.start, self.opens, self.end = day, start, start, end
        self.now = start
        self.stop_at = stop_at

    def next(self, wait: Any) -> datetime | None:
        self.now += timedelta(minutes=5)
        if self.stop_at is not None and self.now >= self.stop_at:
            raise KeyboardInterrupt  # Ctrl-C between two ticks
        return self.now if self.now <= self.end else None

    def resume(self, journaled_until_us: int) -> None:
        pass

    def describe(self, what: str) -> str:
        return f"on ticks, {self.day} {what}"


def test_a_tick_clock_and_tick_fills_plug_in_without_touching_the_engine(cache: Path) -> None:
    """A FillPolicy that fills at the next tick's price (here: the next candle's open, as ticks
    would carry it) gives replay's trades, journals its fills with its own tag, and a session on
    it resumes by walking its journal to the same fills."""
    st = load(cache_dir=cache, source="sample", environ={})
    day = MarketDataEngine(st.with_overrides(now=datetime(2024, 6, 15, tzinfo=IST))).history("NIFTY", "5m")
    day = day.filter(pl.col("ts").dt.date() == date(2024, 6, 14))
    opens = dict(zip(day["ts"].dt.epoch("us").to_list(), day["open"].to_list(), strict=True))
    last_close = float(day["close"][-1])
    nine15, close = datetime(2024, 6, 14, 9, 15, tzinfo=IST), datetime(2024, 6, 14, 15, 30, tzinfo=IST)

    def session(name: str, start: datetime, stop_at: datetime | None = None) -> PaperEngine:
        clock = FiveMinuteTicks(date(2024, 6, 14), start, close, stop_at)

        def quote(keys: Any) -> dict[str, float]:  # the last traded price at the clock's instant
            return {"NSE:NIFTY 50": opens.get(as_us(clock.now), last_close)}

        fills = PriceFills(quote, {"NIFTY": "NSE:NIFTY 50"}, via="tick", what="tick stream")
        engine = MarketDataEngine(st.with_overrides(now=start))
        return PaperEngine(
            st,
            engine,
            "sma_cross",
            ["NIFTY"],
            symbol_timeframes(st, ["NIFTY"], "5m"),
            clock,
            fills,
            name=name,
            params=PARAMS,
            segment="futures",
        )

    whole = session("ticks", nine15).run()
    replay = run_replay(MarketDataEngine(st), "sma_cross", ["NIFTY"], "5m", DAY, DAY, params=PARAMS, segment="futures")
    assert whole.trades.height >= 2 and whole.trades.select(COLS).equals(replay.trades.select(COLS))
    meta, _, events = journal(cache, "ticks")
    assert meta["mode"] == "live"
    fills = [(sym, p) for kind, sym, p in events if kind == "fill"]
    assert "tick" in {p.get("via") for _, p in fills} and {p.get("via") for _, p in fills} <= {"tick", "close"}
    # Ctrl-C between the 11:00 and 11:05 ticks, then the same session on a clock that goes on from 11:00
    cut = session("ticks-cut", nine15, stop_at=datetime(2024, 6, 14, 11, 2, tzinfo=IST)).run()
    assert cut.status == "interrupted" and 0 < len(journal(cache, "ticks-cut")[2]) < len(events)
    resumed = session("ticks-cut", datetime(2024, 6, 14, 11, 0, tzinfo=IST)).run()
    assert resumed.status == "finished" and resumed.resumed_from == 21  # the candles that closed by 11:00
    assert [(s, p) for k, s, p in journal(cache, "ticks-cut")[2] if k == "fill"] == fills
    assert resumed.trades.select(COLS).equals(whole.trades.select(COLS))


def test_run_session_holds_the_date_and_source_rules(cache: Path) -> None:
    st = load(cache_dir=cache, source="sample", environ={})
    with pytest.raises(InputError, match="add --date YYYY-MM-DD"):
        run_session(st, "sma_cross", ["NIFTY"])
    kite = load(cache_dir=cache, source="kite", environ={"KITE_API_KEY": "k", "KITE_ACCESS_TOKEN": "t"})
    with pytest.raises(InputError, match="--date plays a bundled day: use it with --source sample"):
        run_session(kite, "sma_cross", ["NIFTY"], day=DAY)
    assert not (cache / "_paper" / f"sma_cross-{DAY}.sqlite").exists()


def test_session_busy_is_in_the_error_tree() -> None:
    import mde.errors
    import mde.paper.state

    assert mde.paper.state.SessionBusy is SessionBusy is mde.errors.SessionBusy
    assert issubclass(SessionBusy, mde.errors.MdeError) and SessionBusy.exit_code == 2


def test_a_resumed_sample_session_journals_each_candle_once(cache: Path, tmp_path: Path) -> None:
    """Ctrl-C mid-day in a mixed session, then the same session: every series mark once, the
    trades of an uninterrupted run."""
    st = mixed_settings(tmp_path, cache)

    def stop(snap: dict[str, Any]) -> None:
        if snap["clock"].hour == 12:
            raise KeyboardInterrupt

    kw: dict[str, Any] = dict(day=DAY, params=PARAMS, segment="futures")
    first = run_session(st, "sma_cross", ["NIFTY", "BANKNIFTY"], name="cut", on_tick=stop, **kw)
    assert first.status == "interrupted"
    done = run_session(st, "sma_cross", ["NIFTY", "BANKNIFTY"], name="cut", **kw)
    whole = run_session(st, "sma_cross", ["NIFTY", "BANKNIFTY"], name="uncut", **kw)
    assert done.status == "finished" and done.trades.select(COLS).equals(whole.trades.select(COLS))
    with sqlite3.connect(cache / "_paper" / "cut.sqlite") as db:
        fills = db.execute("SELECT payload FROM events WHERE kind = 'fill' ORDER BY seq").fetchall()
    with sqlite3.connect(cache / "_paper" / "uncut.sqlite") as db:
        assert db.execute("SELECT payload FROM events WHERE kind = 'fill' ORDER BY seq").fetchall() == fills
