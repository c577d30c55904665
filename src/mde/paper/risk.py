"""RiskEngine: checked before every order of a paper session.

States: ACTIVE (anything within the limits), REDUCING (only orders that shrink a position),
HALTED (nothing new; the session flattens what is open). Limits come from `[risk]` in
mde.toml and `mde paper` flags; each rejection carries its reason for the journal.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from ..clock import US_PER_MIN
from ..errors import InputError

ACTIVE, REDUCING, HALTED = "ACTIVE", "REDUCING", "HALTED"


@dataclass(frozen=True)
class RiskLimits:
    max_loss_per_day: float | None = None  # rupees: the day's P&L (realised + open) at or below -this halts
    max_position_qty: int | None = None  # per symbol, absolute
    max_position_notional: float | None = None  # per symbol, absolute quantity x price, rupees
    max_orders_per_minute: int | None = None  # per session

    def __post_init__(self) -> None:
        # None means no limit; 0 or a negative number is not "no limit" but a mistake, so it is refused
        for name, (whole, flag) in _LIMITS.items():
            value = getattr(self, name)
            if value is None:
                continue
            ok = (
                not isinstance(value, bool)
                and isinstance(value, (int, float))
                and math.isfinite(value)
                and value > 0
                and (not whole or float(value).is_integer())
            )
            if not ok:
                what = "a whole number >= 1" if whole else "a positive number of rupees"
                raise InputError(
                    f"risk limit {name} must be {what} (mde paper {flag}, [risk] {name} in mde.toml); "
                    f"got {value!r}; leave it out for no limit"
                )
            if whole:
                object.__setattr__(self, name, int(value))

    def describe(self) -> str:
        parts = [f"{k}={v:g}" for k, v in vars(self).items() if v is not None]
        return ", ".join(parts) or "no limits"


# field: (a whole number?, the `mde paper` flag)
_LIMITS = {
    "max_loss_per_day": (False, "--max-loss"),
    "max_position_qty": (True, "--max-qty"),
    "max_position_notional": (False, "--max-notional"),
    "max_orders_per_minute": (True, "--max-orders-per-minute"),
}


class RiskEngine:
    def __init__(self, limits: RiskLimits) -> None:
        self.limits = limits
        self.state = ACTIVE
        self.reason = ""
        self._orders: deque[int] = deque()

    def set_state(self, state: str, reason: str) -> bool:
        """Move to `state` (never back from HALTED); True if it changed."""
        if self.state == HALTED or self.state == state:
            return False
        self.state, self.reason = state, reason
        return True

    def check(self, position: int, side: int, qty: int, price: float, now_us: int) -> str | None:
        """None if the order may go, else why not."""
        after = position + side * qty
        reduces = abs(after) < abs(position) and (after == 0 or (after > 0) == (position > 0))
        lim = self.limits
        if self.state == HALTED:
            return f"HALTED ({self.reason}): no new orders"
        if self.state == REDUCING and not reduces:
            return f"REDUCING ({self.reason}): only exits are allowed"
        if lim.max_orders_per_minute is not None:
            while self._orders and self._orders[0] <= now_us - US_PER_MIN:
                self._orders.popleft()
            if len(self._orders) >= lim.max_orders_per_minute:
                return f"more than {lim.max_orders_per_minute} orders in a minute"
        if not reduces:
            if lim.max_position_qty is not None and abs(after) > lim.max_position_qty:
                return f"position {after:+d} would exceed the limit of {lim.max_position_qty}"
            if lim.max_position_notional is not None and abs(after) * price > lim.max_position_notional:
                return f"notional {abs(after) * price:,.0f} would exceed the limit of {lim.max_position_notional:,.0f}"
        self._orders.append(now_us)
        return None

    def on_day_pnl(self, pnl: float) -> bool:
        """Halt when the day's loss reaches the limit; True when this call halted."""
        limit = self.limits.max_loss_per_day
        if limit is not None and pnl <= -limit:
            return self.set_state(HALTED, f"day loss {pnl:,.2f} reached the limit of {limit:,.2f}")
        return False
