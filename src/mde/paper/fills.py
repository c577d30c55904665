"""How a paper session's orders fill: the other half of the environment a `PaperEngine` runs in.

- `CandleFills`: replay's model. An order fills at the next candle's open (stops and limits
  inside the next candles, `broker.FILL_MODEL`), inside `StrategyRunner.process_span`; the
  day's loss limit is checked on the equity at each candle's close. A sample day.
- `PriceFills`: fills between candles at the next price after the decision (plus
  `--slippage` ticks), asked once per loop for the whole universe; stops and limits fill
  when a price reaches them; the intraday square-off is sent at the first loop after its
  time; the day's loss limit is checked on those prices. Live on Kite, the prices come from
  one batched `/quote/ltp` request (`via="ltp"`).
- Issue 17 (paper on the live stream) plugs in `PriceFills(quote=<the stream's last traded
  price per instrument>, keys, via="tick", ...)`, or its own class implementing the
  `FillPolicy` protocol: nothing in the engine changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from ..clock import us_to_datetime
from ..errors import MdeError
from .journal import JournalEvent, Log, event_line, fill_payload, reject_event
from .state import TradeState

if TYPE_CHECKING:
    from .book import Book

Quote = Callable[[Sequence[str]], Mapping[str, float]]  # instrument keys -> last traded price


class FillPolicy(Protocol):
    """Where a paper session's fills come from. What a new environment implements.

    - `fills_on_candles`: the runner fills orders at candle prices (next open) as replay does;
      False when this policy fills them in `on_loop` instead.
    - `via`: the tag of the fills (and refusals at fill time) this policy journals itself
      (`"ltp"`; None for candle fills, which a re-run makes again). A session that resumes by
      walking its journal books the fills tagged `via` again by order id, since prices
      cannot be asked again.
    - `finish_via`: the tag of the fills that close what is still open at the session's end
      (at `marks`); None: at each symbol's last close.
    - `warning`: a line for the summary's warnings (how this policy differs from replay), or None.
    - `marks`: the latest price per symbol (the dashboard; the end's closing fills).
    """

    fills_on_candles: bool
    via: str | None
    finish_via: str | None
    warning: str | None
    marks: dict[str, float]

    def after_candle(self, book: Book, close_us: int) -> list[JournalEvent]:
        """Called after each candle went through the strategies: the events it adds to that
        candle's journal commit (the day's loss limit on candle-close equity)."""
        ...

    def on_loop(self, book: Book, state: TradeState, now_us: int, say: Log) -> bool:
        """Called once per loop after the candles: fill what the prices now trigger, journal
        it (committed before it is shown) and show it. True if it looked at the market (the
        dashboard and the progress line then refresh)."""
        ...


class CandleFills:
    """Replay's fills: at the next candle's open, inside the runner (a sample day)."""

    fills_on_candles = True
    via: str | None = None
    finish_via: str | None = None
    warning: str | None = None

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}

    def after_candle(self, book: Book, close_us: int) -> list[JournalEvent]:
        return book.risk_after(book.runner.equity(), close_us)

    def on_loop(self, book: Book, state: TradeState, now_us: int, say: Log) -> bool:
        return False


class PriceFills:
    """Fills at the next price after a decision, asked once per loop for the whole universe.

    `quote(keys)` returns the last traded price of each instrument key it knows (`keys`:
    symbol -> instrument key, e.g. `NSE:NIFTY 50`); an MdeError from it is journaled once as
    `stale` (until it changes) and the loop goes on without fills."""

    fills_on_candles = False
    finish_via: str | None = "close"

    def __init__(
        self,
        quote: Quote,
        keys: Mapping[str, str],
        *,
        via: str = "ltp",
        what: str = "LTP request",
        warning: str | None = None,
    ) -> None:
        self.quote, self.keys, self.what = quote, dict(keys), what
        self.via: str | None = via
        self.warning: str | None = warning
        self.marks: dict[str, float] = {}
        self._last_error: str | None = None

    def after_candle(self, book: Book, close_us: int) -> list[JournalEvent]:
        return []  # the loss limit is checked at the next prices, in on_loop

    def on_loop(self, book: Book, state: TradeState, now_us: int, say: Log) -> bool:
        runner, broker = book.runner, book.broker
        if runner.square_off_due(now_us):  # the intraday square-off: market orders, filled at the prices below
            state.record("squareoff", now_us, {})
            say(f"{us_to_datetime(now_us):%H:%M:%S} intraday square-off")
        try:
            prices = self.quote(list(self.keys.values()))
        except MdeError as exc:
            if self._last_error != str(exc):
                self._last_error = str(exc)
                state.record("stale", now_us, {"error": str(exc)}, None)
                say(f"{us_to_datetime(now_us):%H:%M:%S} {self.what} failed ({exc}); no fills this tick")
            return True
        self._last_error = None
        book.buffer.clear()
        rejected_before = len(broker.rejections)
        runner.now_us = max(runner.now_us, now_us)
        for sym, key in self.keys.items():
            price = prices.get(key)
            if price is None or price <= 0:
                continue
            self.marks[sym] = price
            if broker.pending.get(sym):
                broker.on_price(sym, now_us, price)
        events: list[JournalEvent] = [("fill", f.ts_us, fill_payload(f, self.via), f.symbol) for f in book.buffer]
        events += [
            reject_event(r, self.via) for r in broker.rejections[rejected_before:]
        ]  # refused at fill (buying power)
        equity = broker.cash + sum(q * (self.marks.get(s) or runner.mark(s)) for s, q in broker.net.items())
        events += book.risk_after(equity, now_us)
        state.journal(events)  # committed before anything is shown or acted on
        for event in events:
            line = event_line(event, now_us)
            if line is not None:
                say(line)
        return True
