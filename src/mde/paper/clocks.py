"""The clocks a paper session runs on: when `PaperEngine.loop_once` looks at the market.

The engine knows nothing of where its time comes from. A `Clock` hands it one instant after
another; the engine updates the cache of every series whose candle closed by then, runs the
new candles, lets the fill policy (`fills.py`) fill what prices trigger, and journals.

- `SampleClock`: a bundled day, simulated. Its instants are the day's candle closes (or a
  fixed step), played at `speed` x real time or as fast as possible. The same instants come
  back on every run (`replayable`), so a resume re-runs the day from its start and checks
  the result against the journal.
- `WallClock`: the real clock (or `MDE_NOW` running on), one instant every `tick` seconds on
  a fixed grid until the session's end. Real time does not come back (`replayable` False),
  so a resume walks the journal instead.
- A tick-driven clock (issue 17, `mde paper` on the live stream) implements the same
  protocol: `next()` blocks until the stream has news (a tick that may fill an order, a
  candle that closed, plus its grace) and returns that instant; nothing in the engine changes.
"""

from __future__ import annotations

import time as time_mod
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from typing import Protocol

from ..clock import IST, us_to_datetime

Wait = Callable[[float], None]


class Clock(Protocol):
    """When a paper session looks at the market. What a new environment implements.

    Attributes, read by the engine before the first `next()`:

    - `replayable`: True if every run sees the same instants and the same candles (a sample
      day): a resume re-runs the session from `start` without journaling what the journal
      already holds, and the summary of an ended session can be re-made. False for real time
      (wall clock, the live stream): a resume walks the journal instead (the engine then
      journals a `candle` event per candle, which the walk needs).
    - `day`: the trading day the session belongs to (its default name, `--status`).
    - `start`: the session's first instant: the cache is brought up to it and the strategies'
      `on_start` runs at it.
    - `opens`: where "time played" of the progress line counts from (a sample day: its first
      candle's open; live: `start`).
    - `end`: the session's last instant (`--until`, else the day's close).
    """

    replayable: bool
    day: date
    start: datetime
    opens: datetime
    end: datetime

    def next(self, wait: Wait) -> datetime | None:
        """The next instant to look at the market, once it has come; None when the session is over.

        A clock that paces itself in wall time waits with `wait(seconds)` (the engine's: it
        prints the progress line while it waits) or with its own sleep (a test's virtual
        clock). Instants must not go backwards."""
        ...

    def resume(self, journaled_until_us: int) -> None:
        """The journal already holds everything up to this instant: a replayable clock plays
        the instants up to it without waiting (a resume re-runs them at once). Others ignore it."""
        ...

    def describe(self, what: str) -> str:
        """The session's first line after `session NAME: `, for `what` (e.g. `5m NIFTY, BANKNIFTY`)."""
        ...


class SampleClock:
    """A sample day's simulated time: `schedule` (epoch microseconds, ascending) at `speed` x
    real time, 0 for as fast as possible. Instants before `resume()`'s mark never wait."""

    replayable = True

    def __init__(
        self, day: date, schedule: Sequence[int], *, start: datetime, opens: datetime, end: datetime, speed: float = 0.0
    ) -> None:
        self.day, self.start, self.opens, self.end, self.speed = day, start, opens, end, speed
        self.schedule = list(schedule)
        self._i = 0
        self._last: int | None = None
        self._fast_until = 0

    def next(self, wait: Wait) -> datetime | None:
        if self._i >= len(self.schedule):
            return None
        tick_us = self.schedule[self._i]
        self._i += 1
        if self.speed > 0 and self._last is not None and tick_us > self._fast_until:  # a resume re-runs at once
            wait((tick_us - self._last) / 1e6 / self.speed)
        self._last = tick_us
        return us_to_datetime(tick_us)

    def resume(self, journaled_until_us: int) -> None:
        self._fast_until = journaled_until_us

    def describe(self, what: str) -> str:
        pace = f"at {self.speed:g}x real time" if self.speed > 0 else "as fast as possible"
        return f"playing {self.day} {what} {pace}"


def wall_clock(now: datetime | None) -> Callable[[], datetime]:
    """Now in IST; with a pinned `now` (MDE_NOW), a clock that starts there and runs."""
    if now is None:
        return lambda: datetime.now(IST)
    start, t0 = now.astimezone(IST), time_mod.monotonic()
    return lambda: start + timedelta(seconds=time_mod.monotonic() - t0)


class WallClock:
    """Real time: an instant every `tick` seconds on a fixed grid from the first, until `end`.

    `now` and `sleep` are injectable: the tests run a day in seconds on a virtual clock that
    the session and the local Kite server share."""

    replayable = False

    def __init__(
        self,
        now: Callable[[], datetime],
        end: datetime,
        tick: float,
        sleep: Callable[[float], None] = time_mod.sleep,
        *,
        start: datetime | None = None,
    ) -> None:
        self.now, self.end, self.tick, self.sleep = now, end, tick, sleep
        self.start = self.opens = start if start is not None else now()
        self.day = self.start.date()
        self._t0: datetime | None = None
        self._k = 0

    def next(self, wait: Wait) -> datetime | None:
        if self._t0 is None:
            self._t0 = self.now()
        else:  # on the tick grid: a slow tick does not push the next ones later
            self.sleep(max(0.0, (self._t0 + timedelta(seconds=self._k * self.tick) - self.now()).total_seconds()))
        now = self.now()
        if now >= self.end:
            return None
        self._k += 1
        return now

    def resume(self, journaled_until_us: int) -> None:
        pass  # real time: what happened while the session was down is caught up at the first instant

    def describe(self, what: str) -> str:
        return f"live on {self.day} {what}, a tick every {self.tick:g} s until {self.end:%H:%M}"
