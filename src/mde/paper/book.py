"""Book: the trading side of a paper session, whatever drives its clock: the strategy through the
same StrategyRunner and SimBroker as replay, the RiskEngine in front of every order, the traded
series in memory (each symbol on its own timeframe), and the summary at the end."""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from ..broker import Fill
from ..clock import as_us, us_to_datetime
from ..errors import StrategyError
from ..resample import with_close
from ..strategy import SeriesData, Strategy, StrategyRunner
from ..timeframes import Timeframe
from .journal import KILL_SWITCH, JournalEvent, Log, fill_line, fill_payload, journal_error, note_payload, reject_event
from .risk import HALTED, RiskEngine, RiskLimits
from .state import TradeState

if TYPE_CHECKING:
    from ..runs import ReplayResult

log = logging.getLogger("mde.paper")


@dataclass
class SessionResult:
    name: str
    trades: pl.DataFrame
    candles: int  # processed in this run (re-runs of a resume included)
    resumed_from: int  # candles (live) or series marks (sample) already journaled when this run started
    cash: float
    summary: ReplayResult  # the same summary, trades file and report as `mde replay`
    status: str  # finished | halted | interrupted

    @property
    def net_pnl(self) -> float:
        """The closed trades' P&L after charges (what `mde paper` prints at the end)."""
        return float(self.trades["net_pnl"].sum()) if self.trades.height else 0.0


class PaperRunner(StrategyRunner):
    """The StrategyRunner of a paper session, whose symbols may trade on different timeframes
    (NIFTY on 1m, BANKNIFTY on 15m). A symbol's own timeframe is its default series
    (`ctx.window("BANKNIFTY")`, its indicators, its marks); `timeframe` (what `ctx.timeframe`
    says) is the timeframe of the candle being processed."""

    def __init__(
        self,
        strategies: Strategy,
        engine: Any,
        *,
        symbols: Sequence[str],
        timeframes: Mapping[str, Timeframe],
        broker: Any,
        as_of: datetime,
    ) -> None:
        super().__init__(
            [strategies], engine, symbols=symbols, timeframe=timeframes[symbols[0]], broker=broker, as_of=as_of
        )
        self.timeframes = dict(timeframes)

    def series(self, symbol: str, timeframe: str | None = None) -> SeriesData:
        if timeframe is None and symbol in self.timeframes:
            timeframe = self.timeframes[symbol].name
        return super().series(symbol, timeframe)

    def forget_other_series(self) -> None:
        """Drop every series but the traded ones: the next window of another series (another
        timeframe, another symbol) reads it again as of the new now."""
        keep = {(s, tf.name) for s, tf in self.timeframes.items()}
        for key in [k for k in self._series if k not in keep]:
            del self._series[key]

    def _last_price(self, symbol: str) -> float | None:
        own = self.timeframes.get(symbol)
        candle = self.candle
        if own is None or own == self.timeframe or (candle is not None and candle[0] == symbol):
            return super()._last_price(symbol)
        data = self.series(symbol)
        k = data.visible(self.now_us)
        return data.close[k - 1] if k else super()._last_price(symbol)


class Book:
    """The trading side of a paper session, whatever drives its clock: the strategy through
    the same StrategyRunner and SimBroker as replay, the RiskEngine in front of every order,
    and the traded series in memory (each on its own timeframe), extended as their candles close."""

    def __init__(
        self,
        engine: Any,
        strategy: str | type[Strategy] | Strategy,
        params: Mapping[str, Any] | None,
        names: Sequence[str],
        timeframes: Mapping[str, Timeframe],
        *,
        costs: str,
        segment: str | None,
        cash: float,
        slippage_ticks: int,
        limits: RiskLimits,
        as_of: datetime,
        fill_on_candles: bool,
    ) -> None:
        from ..runs import build_broker, build_strategy

        self.engine, self.names, self.cash = engine, list(names), cash
        self.timeframes = {s: timeframes[s] for s in self.names}
        self.segment, self.slippage_ticks = segment, slippage_ticks
        self.buffer: list[Fill] = []  # the fills of the step being processed
        self.broker, self.models, self.ticks = build_broker(
            engine,
            names,
            costs=costs,
            segment=segment,
            cash=cash,
            slippage_ticks=slippage_ticks,
            on_fill=self.buffer.append,
        )
        self.strat = build_strategy(strategy, params)
        self.runner = PaperRunner(
            self.strat, engine, symbols=self.names, timeframes=self.timeframes, broker=self.broker, as_of=as_of
        )
        self.runner.fill_on_candles = fill_on_candles
        self.runner.on_note = lambda note: None  # kept in runner.notes; journaled and shown by the engine
        self.guard = RiskEngine(limits)
        self.runner.risk_check = self._check
        self.series: dict[str, SeriesData] = {}
        self.cursor: dict[str, int] = {}  # symbol -> close of the last candle processed in this run
        self.processed = 0

    def _check(self, sid: str, sym: str, side: int, qty: int, now_us: int) -> str | None:
        pos = self.broker.position(sid, sym)
        data = self.series[sym]
        k = data.visible(now_us)
        return self.guard.check(pos.qty if pos else 0, side, qty, data.close[k - 1] if k else 0.0, now_us)

    def key(self, sym: str) -> str:
        """The journal's progress key of a traded series, `NIFTY:5m`."""
        return f"{sym}:{self.timeframes[sym]}"

    def load(self, sym: str, now: datetime, cursor_us: int) -> SeriesData:
        """Read a series as of `now` (warm-up history included); candles after `cursor_us` are new."""
        tf = self.timeframes[sym]
        history = self._priced(sym, self.engine.history(sym, tf, as_of=now))
        data = SeriesData(sym, tf, history, self.engine.built_from(sym, tf))
        self.series[sym] = data
        self.runner.add_series(data)
        self.cursor[sym] = cursor_us
        return data

    def _priced(self, sym: str, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame` without candles that have no valid price (a source's NaN/inf/0 candle, kept
        in the cache and counted): the strategy never sees one, fills never use one, as a
        missing candle; each left out is said once (a warning on stderr, not with -q)."""
        from ..runs import unpriced
        from ..validate import unpriced as rule

        bad = unpriced(frame)
        if not bad:
            return frame
        log.warning("%s %s: %s, left out (as a missing candle)", sym, self.timeframes[sym], bad)
        return frame.filter(~rule())

    def catch_up(self, sym: str, now: datetime) -> tuple[SeriesData, int, int]:
        """Append the candles that closed by `now` since the series was read: only the newest
        partition is read (a full re-read only after a long gap). Returns the new span."""
        data = self.series[sym]
        tf = self.timeframes[sym]
        if not len(data):
            data = self.load(sym, now, self.cursor[sym])
        else:
            last = data.ts_us[-1]
            n = 8
            while True:
                tail = self.engine.get_window(sym, tf, limit=n, as_of=now)
                fresh = tail.filter(pl.col("ts").dt.epoch("us") > last)
                if fresh.height < tail.height:
                    data.extend(with_close(self._priced(sym, fresh), tf, self.engine.calendar))
                    break
                if n >= 1000:  # more than 1000 candles behind: read the series again
                    data = self.load(sym, now, self.cursor[sym])
                    break
                n = min(n * 8, 1000)
        return data, data.visible(self.cursor[sym]), data.visible(as_us(now))

    def step(self, data: SeriesData, i: int) -> list[JournalEvent]:
        """Candle i through the strategies (decisions, risk checks, candle fills); its journal events."""
        broker = self.broker
        self.buffer.clear()
        rejected_before, first_id = len(broker.rejections), broker.next_order_id
        notes_before = len(self.runner.notes)
        self.runner.timeframe = data.timeframe  # ctx.timeframe: the candle's
        self.runner.process_span(data, i, i + 1)
        self.processed += 1
        self.cursor[data.symbol] = data.close_us[i]
        at = data.close_us[i]
        events: list[JournalEvent] = [
            (
                "order",
                at,
                {"order": o.id, "side": o.side, "qty": o.qty, "kind": o.kind, "price": o.price, "reason": o.reason},
                o.symbol,
            )
            for orders in broker.pending.values()
            for o in orders
            if o.id >= first_id
        ]
        events += [("fill", f.ts_us, fill_payload(f), f.symbol) for f in self.buffer]
        events += [reject_event(r) for r in broker.rejections[rejected_before:]]
        events += [("note", at, note_payload(n), n.symbol) for n in self.runner.notes[notes_before:] if n.kind == "log"]
        return events

    def risk_after(self, equity: float, ts_us: int) -> list[JournalEvent]:
        """The day's loss limit, checked on the latest marks: halt and flatten when reached."""
        if self.guard.on_day_pnl(equity - self.cash):
            self.flatten(ts_us, "risk halt")
            return [("risk", ts_us, {"state": self.guard.state, "reason": self.guard.reason}, None)]
        return []

    def finish(self, state: TradeState, halting: bool, say: Log, via: str | None = None) -> None:
        """The end of a session, whatever drives it: what is still open closes (the runner's
        marks), the strategy's on_stop runs, and the closing fills and log lines are journaled
        with the session's final status in one commit each. A strategy that raises is journaled."""
        runner = self.runner
        self.buffer.clear()
        notes_before = len(runner.notes)
        try:
            runner.finish(KILL_SWITCH if halting else "end of session")
        except StrategyError as exc:
            journal_error(state, runner, exc)
            raise
        notes: list[JournalEvent] = [
            ("note", runner.now_us, note_payload(n), n.symbol) for n in runner.notes[notes_before:] if n.kind == "log"
        ]
        for _, _, payload, _ in notes:
            say(payload["line"])
        fills: list[JournalEvent] = [("fill", f.ts_us, fill_payload(f, via), f.symbol) for f in self.buffer]
        state.processed("_end", runner.now_us, fills + notes)
        state.set_meta({"status": "halted" if halting else "finished"})

    def flatten(self, ts_us: int, reason: str) -> None:
        """Market orders that close every open position (past any risk check), placed at `ts_us`."""
        self.runner.now_us = max(self.runner.now_us, ts_us)
        self.runner.flatten_all(reason)

    def halt(self, ts_us: int, reason: str = KILL_SWITCH) -> None:
        """The kill switch: no new orders (the RiskEngine refuses them), every pending order
        cancelled, every position flattened by a market order."""
        self.guard.set_state(HALTED, reason)
        for orders in list(self.broker.pending.values()):
            for order in list(orders):
                self.broker.cancel(order)
        self.flatten(ts_us, reason)

    def result(
        self, name: str, resumed_from: int, status: str, lo: date, hi: date, since_us: int, warnings: list[str]
    ) -> SessionResult:
        from ..runs import Run, summarize
        from ..strategy import RunOutcome

        runner = self.runner
        runner.timeframe = min(self.timeframes.values(), key=lambda tf: tf.length)  # the summary's basis
        series = [self.series[sym] for sym in self.names]
        spans = [(d, bisect_left(d.ts_us, since_us), len(d)) for d in series]
        run = Run(
            self.engine,
            self.strat,
            runner,
            self.models,
            self.ticks,
            spans,
            lo,
            hi,
            self.cash,
            self.segment,
            self.slippage_ticks,
            None,
            warnings,
        )
        outcome = RunOutcome(
            self.broker, runner.equity_us, runner.equity_values, runner.exposed_count, self.processed, runner.notes
        )
        summary = summarize(run, outcome)
        return SessionResult(
            name, self.broker.trades_frame(), self.processed, resumed_from, self.broker.cash, summary, status
        )


def snapshot(
    name: str,
    now: datetime,
    runner: StrategyRunner,
    guard: RiskEngine,
    series: Sequence[SeriesData],
    state_rejects: Sequence[Any] = (),
    marks: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """What the dashboard shows after a loop: clock, per symbol the last candle and its age,
    position and P&L, charges, the risk state and the latest fills and rejections."""
    broker = runner.broker
    assert broker is not None
    now_us = as_us(now)
    rows = []
    for data in series:
        k = data.visible(now_us)
        last_close = data.close[k - 1] if k else None
        mark = (marks or {}).get(data.symbol, last_close)  # live: the last traded price
        qty = broker.net.get(data.symbol, 0)
        avg = 0.0
        for (_sid, sym), pos in broker.positions.items():
            if sym == data.symbol and pos.qty:
                avg = pos.avg_price
        rows.append(
            {
                "symbol": data.symbol,
                "last_ts": us_to_datetime(data.ts_us[k - 1]) if k else None,
                "last_close": last_close,
                "age_s": (now_us - data.close_us[k - 1]) / 1e6 if k else None,
                "position": qty,
                "avg_price": avg,
                "ltp": (marks or {}).get(data.symbol),
                "unrealised": (mark - avg) * qty if qty and mark is not None else 0.0,
            }
        )
    realised = sum(t.gross for t in broker.trades)
    return {
        "session": name,
        "clock": now,
        "risk": guard.state,
        "risk_reason": guard.reason,
        "symbols": rows,
        "realised": realised,
        "charges": broker.charges_paid,
        "cash": broker.cash,
        "equity": runner.equity(),
        "fills": [fill_line(f.symbol, fill_payload(f)) for f in broker.fills[-5:]],
        "rejections": [f"order {o.id} {o.symbol}: {why}" for o, why in list(state_rejects)[-5:]],
        "log": [n.line() for n in runner.notes[-5:] if n.kind == "log"],  # the strategy's latest ctx.log lines
    }
