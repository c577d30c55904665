"""The simulated broker shared by replay and paper: orders, fills, positions, closed trades.

The fill model (printed in every report, written in the README):

* A decision taken on candle t (at its close) fills at the open of candle t+1 of the same
  symbol, never inside candle t.
* A stop order fills at its price when candle t+1 trades through it, or at the open when
  the candle gaps past it; a limit order likewise, at its price or the better open.
* A bracket (stop-loss and target around an entry) is live from the entry's fill. When both
  legs are touched in one candle, the stop-loss is taken. In the entry's own candle a
  target counts only if the entry filled at that candle's open (we cannot know whether the
  rest of the candle came before or after a fill inside it); a stop-loss always counts.
* Market and stop fills move against the order by `slippage_ticks` x tick size.
* Intraday strategies are squared off at the open of the first candle that has not closed
  by the square-off time (15:20 by default: the 15:20 candle at 1m or 5m, the 15:15 one at 15m).
* A position still open at the end of a replay is closed at the last candle's close.
* Every fill that opens or grows a position is checked against buying power (margins.py):
  equity (cash + open positions at their latest close) less the margin blocked by open
  positions must cover the new margin plus the opening leg's charges, else the order is
  rejected with its reason. Closing or reducing fills are always allowed.
* Placing is checked too: an order of a contract traded in lots must be a whole number of
  lots, and a bracket's stop-loss and target must lie on the right side of its entry (the
  limit or stop price, or for a market entry the last close at placing time). Limit, stop,
  stop-loss and target prices are rounded to the instrument's tick (margins.round_order_prices).

Times are integer microseconds since the epoch (what Parquet stores) so that the hot loop
builds no datetime objects; they become tz-aware datetimes only in the trades frame.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import polars as pl

from .clock import ist_date, ist_day
from .costs import NO_CHARGES, CostModel
from .errors import InputError
from .margins import DEFAULT_CONTRACT, Contract, MarginTable, load_margins, round_order_prices

FILL_MODEL = """\
Fills: a decision taken at the close of candle t fills at the OPEN of candle t+1 (same symbol), never inside candle t.
Stop/limit orders fill at their price when candle t+1 trades through it, or at the open when it gaps past it.
Brackets: when stop-loss and target are both touched in one candle, the stop-loss is taken (pessimistic);
  in the entry's own candle a target counts only if the entry filled at the open.
Slippage: {slippage} tick(s) against market and stop fills (tick {tick}).
Intraday strategies are squared off at the open of the first candle not closed by {square_off} IST.
A position still open at the end is closed at the last candle's close (marked "end of replay").
Buying power, checked at each fill that opens or grows a position: cash + open positions at their latest close,
  less the margin open positions block, must cover this fill's margin and its charges, else the order is rejected
  ("buying power"); closing or reducing fills always go. Realised profits are usable at once (no T+1 wait);
  --cash is the starting capital. Margins are approximations: {margins}.
Lots: an order of a contract traded in lots must be a whole number of lots, else it is rejected ("lot size"). {lots}
Ticks: limit, stop, stop-loss and target prices are rounded to the tick so they never fill where the price asked
  could not (buy limit down, sell limit up, buy stop up, sell stop down: a long's stop-loss down, its target up).
Brackets: a stop-loss or target on the wrong side of the entry (its limit/stop price, or for a market entry the last
  close when placed) is rejected when placed ("bracket side"), not filled at once."""

MARKET, LIMIT, STOP = "market", "limit", "stop"


@dataclass(slots=True)
class Order:
    id: int
    strategy: str
    symbol: str
    side: int  # +1 buy, -1 sell
    qty: int
    kind: str  # market | limit | stop
    price: float | None
    placed_us: int
    reason: str = "signal"  # signal | stop | target | square-off
    stop_loss: float | None = None  # bracket legs placed when this entry fills
    target: float | None = None
    oco: int | None = None  # the other leg of a bracket
    bracket_of: int | None = None  # the entry a leg protects
    status: str = "pending"  # pending | filled | cancelled | rejected
    tag: str = ""


@dataclass(slots=True)
class Rejection:
    """An order the broker refused: when, which, why (`code` is the category the summary counts)."""

    ts_us: int
    order: Order
    code: str  # buying power | lot size | bracket side | after square-off | risk limit | ...
    why: str


@dataclass(slots=True)
class Fill:
    order_id: int
    strategy: str
    symbol: str
    side: int
    qty: int
    price: float
    ts_us: int
    reason: str


@dataclass(slots=True)
class Position:
    qty: int = 0
    lots: deque[list[Any]] = field(default_factory=deque)  # [signed qty, price, ts_us] FIFO
    opened_day: int = -1

    @property
    def avg_price(self) -> float:
        total = sum(q for q, _, _ in self.lots)
        return sum(q * p for q, p, _ in self.lots) / total if total else 0.0


@dataclass(slots=True)
class ClosedTrade:
    strategy: str
    symbol: str
    side: int  # +1 long, -1 short
    qty: int
    entry_us: int
    entry_price: float
    exit_us: int
    exit_price: float
    reason: str
    charges: float

    @property
    def gross(self) -> float:
        return (self.exit_price - self.entry_price) * self.qty * self.side


class SimBroker:
    """Holds cash, orders and positions per (strategy, symbol); fills orders against candles."""

    def __init__(
        self,
        cash: float,
        costs: Callable[[str], CostModel],
        tick: Callable[[str], float],
        slippage_ticks: int = 0,
        on_fill: Callable[[Fill], None] | None = None,
        contracts: dict[str, Contract] | None = None,
        margins: MarginTable | None = None,
    ) -> None:
        if slippage_ticks < 0:
            raise InputError("slippage must be 0 or more ticks")
        self.initial_cash = float(cash)
        self.cash = float(cash)
        self._costs = costs
        self._tick = tick
        self.slippage_ticks = slippage_ticks
        self._slip: dict[str, float] = {}
        self.pending: dict[
            str, list[Order]
        ] = {}  # symbol -> live orders in placement order (a symbol's list is never replaced)
        self.positions: dict[tuple[str, str], Position] = {}
        self.net: dict[str, int] = {}  # symbol -> net quantity over strategies, open positions only
        self.fills: list[Fill] = []
        self.trades: list[ClosedTrade] = []
        self.rejected: list[tuple[Order, str]] = []
        self.rejections: list[Rejection] = []  # the same refusals, with time and category
        self.contracts = contracts or {}  # symbol -> margin segment, lot size (others: delivery, lots of 1)
        self.margins = margins if margins is not None else load_margins()
        self.intraday: set[str] = set()  # strategies squared off daily: their equity is margined as intraday (MIS)
        # the latest close of a symbol, for equity at a fill (the runner sets it); else the position's average price
        self.mark: Callable[[str], float | None] | None = None
        self.charges_paid = 0.0
        self._next_id = 1
        self._on_fill = on_fill

    # -- orders -------------------------------------------------------------------------
    @property
    def next_order_id(self) -> int:
        return self._next_id

    def place(
        self,
        strategy: str,
        symbol: str,
        side: int,
        qty: int,
        placed_us: int,
        *,
        limit: float | None = None,
        stop: float | None = None,
        stop_loss: float | None = None,
        target: float | None = None,
        reason: str = "signal",
        tag: str = "",
    ) -> Order:
        if isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
            raise InputError(f"order quantity must be a positive whole number, not {qty!r}")
        if limit is not None and stop is not None:
            raise InputError("an order is a limit or a stop order, not both")
        kind = LIMIT if limit is not None else STOP if stop is not None else MARKET
        if (
            limit is not None or stop is not None or stop_loss is not None or target is not None
        ):  # a plain market order has no price
            for name, level in (("limit", limit), ("stop", stop), ("stop_loss", stop_loss), ("target", target)):
                if level is not None and (
                    isinstance(level, bool)
                    or not isinstance(level, (int, float))
                    or not level > 0
                    or level == float("inf")
                ):
                    raise InputError(f"{name} must be a positive price, not {level!r}")
            limit, stop, stop_loss, target = round_order_prices(
                side, self._tick(symbol), limit, stop, stop_loss, target
            )
        price = limit if limit is not None else stop
        order = Order(
            self._next_id, strategy, symbol, side, qty, kind, price, placed_us, reason, stop_loss, target, tag=tag
        )
        self._next_id += 1
        self.pending.setdefault(symbol, []).append(order)
        return order

    def reject(self, order: Order, why: str, code: str = "", ts_us: int | None = None) -> None:
        order.status = "rejected"
        self._drop(order)
        self.rejected.append((order, why))
        self.rejections.append(Rejection(order.placed_us if ts_us is None else ts_us, order, code or why, why))

    def contract(self, symbol: str) -> Contract:
        """The symbol's contract; without one, margined as its cost model's segment (else delivery), in ones."""
        c = self.contracts.get(symbol)
        if c is None:
            seg = self._costs(symbol).segment
            c = self.contracts[symbol] = Contract(seg) if seg else DEFAULT_CONTRACT
        return c

    def vet(self, order: Order, reference: float | None) -> tuple[str, str] | None:
        """Checks at placing: whole lots, and a bracket on the right side of its entry.

        `reference` is the entry price the bracket is judged against: the order's limit or stop
        price, else (a market order) the last close when it is placed. Returns (code, why) or None.
        """
        lot = self.contract(order.symbol).lot_size
        if lot > 1 and order.qty % lot:
            return "lot size", (
                f"{order.symbol} trades in lots of {lot}: quantity {order.qty:,} is not a multiple "
                f"(use lots=N, or a quantity like {max(lot, order.qty // lot * lot):,})"
            )
        entry = order.price if order.price is not None else reference
        if entry is None:
            return None
        side, what = order.side, "long" if order.side > 0 else "short"
        ref = f"the entry {entry:,.2f}" + ("" if order.price is not None else " (last close when placed)")
        if order.stop_loss is not None and (order.stop_loss >= entry if side > 0 else order.stop_loss <= entry):
            return "bracket side", (
                f"stop_loss {order.stop_loss:,.2f} of a {what} entry is not {'below' if side > 0 else 'above'} {ref}"
            )
        if order.target is not None and (order.target <= entry if side > 0 else order.target >= entry):
            return "bracket side", (
                f"target {order.target:,.2f} of a {what} entry is not {'above' if side > 0 else 'below'} {ref}"
            )
        return None

    def cancel(self, order: Order) -> None:
        if order.status == "pending":
            order.status = "cancelled"
            self._drop(order)

    def cancel_where(self, symbol: str, strategy: str) -> None:
        for order in list(self.pending.get(symbol, ())):
            if order.strategy == strategy:
                self.cancel(order)

    def _drop(self, order: Order) -> None:
        live = self.pending.get(order.symbol)
        if live and order in live:
            live.remove(order)

    # -- fills --------------------------------------------------------------------------
    def slip(self, symbol: str) -> float:
        s = self._slip.get(symbol)
        if s is None:
            s = self._slip[symbol] = self.slippage_ticks * self._tick(symbol)
        return s

    def on_candle(self, symbol: str, ts_us: int, o: float, h: float, low: float) -> None:
        """Fill what candle (o, h, low) triggers among the symbol's live orders, in placement order.

        `ts_us` is the candle's start: an order placed after it trades from the next candle.
        """
        live = self.pending.get(symbol)
        if not live:
            return
        slip = self.slip(symbol)
        first = live[0]
        if len(live) == 1 and first.kind == MARKET and first.bracket_of is None and first.placed_us <= ts_us:
            self._fill(first, o + first.side * slip, ts_us)  # the common case: one market order
            if (
                live and live[0].bracket_of is not None
            ):  # the fill replaced `first` with its bracket's legs  # its bracket legs, live from this fill
                self._resolve_brackets(symbol, ts_us, o, h, low, slip, {live[0].bracket_of})
            return
        at_open: set[int] = set()
        for order in list(live):
            if order.status != "pending" or order.placed_us > ts_us or order.bracket_of is not None:
                continue  # bracket legs are resolved together below
            hit = self._trigger(order, o, h, low, slip)
            if hit is not None:
                if hit[1]:
                    at_open.add(order.id)
                self._fill(order, hit[0], ts_us)
        if any(x.bracket_of is not None for x in live):
            self._resolve_brackets(symbol, ts_us, o, h, low, slip, at_open)

    def on_price(self, symbol: str, ts_us: int, price: float) -> None:
        """Live paper: fill at a last traded price what it triggers, as a one-price candle.

        A market order fills at the price plus slippage; a stop or limit the price has passed
        fills at the price (the gap rule), one it has reached at its own level.
        """
        self.on_candle(symbol, ts_us, price, price, price)

    def fill_order(self, order_id: int, symbol: str, price: float, ts_us: int) -> Fill:
        """Book a journaled fill of a pending order again (a live session's resume): the journal
        is the record, so it is not checked against buying power again."""
        order = next((o for o in self.pending.get(symbol, ()) if o.id == order_id), None)
        if order is None:
            raise KeyError(order_id)
        self._fill(order, price, ts_us, check=False)
        return self.fills[-1]

    @staticmethod
    def _trigger(order: Order, o: float, h: float, low: float, slip: float) -> tuple[float, bool] | None:
        """(fill price, filled at the open?) or None if the candle does not reach the order."""
        side, p = order.side, order.price
        if order.kind == MARKET:
            return o + side * slip, True
        assert p is not None
        if order.kind == LIMIT:
            if side > 0:
                return (o, True) if o <= p else (p, False) if low <= p else None
            return (o, True) if o >= p else (p, False) if h >= p else None
        if side > 0:  # buy stop
            return (o + slip, True) if o >= p else (p + slip, False) if h >= p else None
        return (o - slip, True) if o <= p else (p - slip, False) if low <= p else None

    def _resolve_brackets(
        self, symbol: str, ts_us: int, o: float, h: float, low: float, slip: float, at_open: set[int]
    ) -> None:
        live = self.pending.get(symbol, [])
        for leg in [x for x in live if x.bracket_of is not None]:
            if leg.status != "pending" or leg.placed_us > ts_us:
                continue
            # In the entry's own candle only a stop-loss counts, unless the entry filled at the open.
            target_ok = leg.placed_us < ts_us or leg.bracket_of in at_open
            if leg.reason == "stop":
                other = next((x for x in live if x.id == leg.oco and x.status == "pending"), None)
                hit = self._trigger(leg, o, h, low, slip)
                if hit is not None:  # touched: the stop-loss wins even if the target was touched too
                    if other is not None:
                        self.cancel(other)
                    self._fill(leg, hit[0], ts_us)
                elif other is not None and target_ok:
                    hit = self._trigger(other, o, h, low, slip)
                    if hit is not None:
                        self.cancel(leg)
                        self._fill(other, hit[0], ts_us)
            elif leg.oco is None and target_ok:  # a target without a stop-loss
                hit = self._trigger(leg, o, h, low, slip)
                if hit is not None:
                    self._fill(leg, hit[0], ts_us)

    def _segment(self, contract: Contract, strategy: str) -> str:
        if contract.segment == "equity":
            return "intraday" if strategy in self.intraday else "delivery"
        return contract.segment

    def _margin(self, symbol: str, strategy: str, qty: int, price: float, day: date) -> float:
        c = self.contract(symbol)
        return self.margins.margin(self._segment(c, strategy), qty, price, day, c.strike)

    def _price_of(self, symbol: str) -> float:
        mark = self.mark(symbol) if self.mark is not None else None
        if mark:
            return mark
        held = [p for (_, s), p in self.positions.items() if s == symbol and p.qty]
        return held[0].avg_price if held else 0.0

    def buying_power_check(self, order: Order, price: float, ts_us: int) -> str | None:
        """None if the fill of `order` at `price` may go, else why not (margins.py, FILL_MODEL)."""
        sym, sid = order.symbol, order.strategy
        pos = self.positions.get((sid, sym))
        held = pos.qty if pos is not None else 0
        after = held + order.side * order.qty
        if abs(after) <= abs(held) and (after == 0 or (after > 0) == (held > 0)):
            return None  # closes or reduces: always allowed
        day = ist_date(ts_us)
        opening = abs(after) if held == 0 or (after > 0) != (held > 0) else abs(after) - abs(held)
        contract = self.contract(sym)
        seg = self._segment(contract, sid)
        model = self._costs(sym)
        charges = 0.0
        if model.table is not None and model.segment is not None:
            cost_seg = seg if model.segment == "equity" else model.segment
            charges = model.table.leg(cost_seg, "buy" if order.side > 0 else "sell", price, opening, day).total
        equity, blocked = self.cash, 0.0
        marks: dict[str, float] = {sym: price}
        for s, q in self.net.items():
            if s not in marks:
                marks[s] = self._price_of(s)
            equity += q * marks[s]
        for (other_sid, s), p in self.positions.items():
            if p.qty and (other_sid, s) != (sid, sym):
                blocked += self._margin(s, other_sid, p.qty, marks.get(s) or self._price_of(s), day)
        held_margin = self._margin(sym, sid, held, price, day) if held else 0.0
        free = equity - blocked - held_margin
        need = self._margin(sym, sid, after, price, day) - held_margin + charges
        if need <= free + 1e-6:
            return None
        verb = "BUY" if order.side > 0 else "SELL"
        return (
            f"{verb} {order.qty:,} {sym} @ {price:,.2f} needs Rs {need:,.2f} ({seg} margin + charges), "
            f"Rs {max(free, 0.0):,.2f} is free"
        )

    def _fill(self, order: Order, price: float, ts_us: int, check: bool = True) -> None:
        why = self.buying_power_check(order, price, ts_us) if check else None
        if why is not None:
            self.reject(order, why, "buying power", ts_us)
            return
        order.status = "filled"
        self._drop(order)
        fill = Fill(order.id, order.strategy, order.symbol, order.side, order.qty, price, ts_us, order.reason)
        self.apply(fill)
        if order.stop_loss is not None or order.target is not None:
            self._arm_bracket(order, ts_us)

    def _arm_bracket(self, entry: Order, ts_us: int) -> None:
        legs = []
        exit_side = -entry.side
        if entry.stop_loss is not None:
            legs.append(
                Order(
                    self._next_id,
                    entry.strategy,
                    entry.symbol,
                    exit_side,
                    entry.qty,
                    STOP,
                    entry.stop_loss,
                    ts_us,
                    "stop",
                    bracket_of=entry.id,
                    tag=entry.tag,
                )
            )
            self._next_id += 1
        if entry.target is not None:
            legs.append(
                Order(
                    self._next_id,
                    entry.strategy,
                    entry.symbol,
                    exit_side,
                    entry.qty,
                    LIMIT,
                    entry.target,
                    ts_us,
                    "target",
                    bracket_of=entry.id,
                    tag=entry.tag,
                )
            )
            self._next_id += 1
        if len(legs) == 2:
            legs[0].oco, legs[1].oco = legs[1].id, legs[0].id
        self.pending.setdefault(entry.symbol, []).extend(legs)

    def apply(self, fill: Fill) -> None:
        """Book a fill: cash, FIFO lots, closed trades with their charges."""
        self.fills.append(fill)
        key = (fill.strategy, fill.symbol)
        pos = self.positions.get(key)
        if pos is None:
            pos = self.positions[key] = Position()
        signed = fill.side * fill.qty
        self.cash -= signed * fill.price
        net = self.net.get(fill.symbol, 0) + signed
        if net:
            self.net[fill.symbol] = net
        else:
            self.net.pop(fill.symbol, None)  # only open positions: the runner marks them each candle
        remaining = signed
        while remaining and pos.lots and (pos.lots[0][0] > 0) != (remaining > 0):
            lot = pos.lots[0]
            matched = min(abs(lot[0]), abs(remaining))
            side = 1 if lot[0] > 0 else -1
            model = self._costs(fill.symbol)
            charges = (
                model.round_trip(
                    "long" if side > 0 else "short", matched, lot[1], ist_date(lot[2]), fill.price, ist_date(fill.ts_us)
                )
                if model.table is not None
                else NO_CHARGES
            )
            total = charges.total
            self.cash -= total
            self.charges_paid += total
            self.trades.append(
                ClosedTrade(
                    fill.strategy,
                    fill.symbol,
                    side,
                    matched,
                    lot[2],
                    lot[1],
                    fill.ts_us,
                    fill.price,
                    fill.reason,
                    total,
                )
            )
            lot[0] -= side * matched
            remaining += side * matched
            if lot[0] == 0:
                pos.lots.popleft()
        if remaining:
            if not pos.lots:
                pos.opened_day = ist_day(fill.ts_us)
            pos.lots.append([remaining, fill.price, fill.ts_us])
        pos.qty += signed
        if pos.qty == 0:
            self._cancel_orphan_legs(fill.symbol, fill.strategy)
        if self._on_fill is not None:
            self._on_fill(fill)

    def _cancel_orphan_legs(self, symbol: str, strategy: str) -> None:
        """A flat position needs no stop-loss or target any more."""
        for order in list(self.pending.get(symbol, ())):
            if order.strategy == strategy and (order.bracket_of is not None or order.reason in ("stop", "target")):
                self.cancel(order)

    def flatten(self, strategy: str, symbol: str, price: float, ts_us: int, reason: str) -> None:
        """Close a position now at `price` (square-off, end of replay, kill switch)."""
        self.cancel_where(symbol, strategy)
        pos = self.positions.get((strategy, symbol))
        if pos is None or pos.qty == 0:
            return
        side = -1 if pos.qty > 0 else 1
        order = Order(self._next_id, strategy, symbol, side, abs(pos.qty), MARKET, None, ts_us, reason, status="filled")
        self._next_id += 1
        self.apply(Fill(order.id, strategy, symbol, side, abs(pos.qty), price, ts_us, reason))

    # -- views --------------------------------------------------------------------------
    def position(self, strategy: str, symbol: str) -> Position | None:
        return self.positions.get((strategy, symbol))

    def trades_frame(self) -> pl.DataFrame:
        """Closed trades, oldest exit first, in the documented column order."""
        t = self.trades
        df = pl.DataFrame(
            {
                "symbol": [x.symbol for x in t],
                "side": ["long" if x.side > 0 else "short" for x in t],
                "qty": [x.qty for x in t],
                "entry_ts": [x.entry_us for x in t],
                "entry_price": [x.entry_price for x in t],
                "exit_ts": [x.exit_us for x in t],
                "exit_price": [x.exit_price for x in t],
                "gross_pnl": [round(x.gross, 2) for x in t],
                "charges": [x.charges for x in t],
                "net_pnl": [round(x.gross - x.charges, 2) for x in t],
                "exit_reason": [x.reason for x in t],
                "strategy": [x.strategy for x in t],
            },
            schema={
                "symbol": pl.String,
                "side": pl.String,
                "qty": pl.Int64,
                "entry_ts": pl.Int64,
                "entry_price": pl.Float64,
                "exit_ts": pl.Int64,
                "exit_price": pl.Float64,
                "gross_pnl": pl.Float64,
                "charges": pl.Float64,
                "net_pnl": pl.Float64,
                "exit_reason": pl.String,
                "strategy": pl.String,
            },
        )

        def as_ts(c: str) -> pl.Expr:
            return pl.col(c).cast(pl.Datetime("us")).dt.replace_time_zone("UTC").dt.convert_time_zone("Asia/Kolkata")

        return df.with_columns(as_ts("entry_ts"), as_ts("exit_ts"))
