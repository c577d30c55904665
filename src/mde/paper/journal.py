"""What a paper session writes to its journal (`state.TradeState`) and shows as it goes.

Journal events are `(kind, ts_us, payload, symbol)` tuples: `order`, `fill`, `reject`, `note`,
`risk`, `squareoff`, `stale`, `error`, and, in a session that resumes by walking its journal
(live), `candle`. The payload shapes here are the journal format: `mde paper --status`, the
HTTP API and a resume read them back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..broker import Fill, Rejection
from ..clock import us_to_datetime
from ..errors import InputError, StrategyError
from .state import TradeState

if TYPE_CHECKING:
    from ..strategy import Note, StrategyRunner

Log = Callable[[str], None]
JournalEvent = tuple[str, int, dict[str, Any], str | None]  # (kind, ts_us, payload, symbol)
KILL_SWITCH = "kill switch"


def open_journal(state: TradeState, name: str, meta: Mapping[str, str], *, replayable: bool = False) -> str | None:
    """Take the session (one process at a time) and check that a resume runs what was started.

    Returns the status of a session that has already ended ("finished", "halted"), else None.
    A `replayable` session (a sample day: the same candles come back) may be run again to re-make
    its summary, trades and report from the journal; any other ended session is an error."""
    state.own()
    known = state.meta()
    if "strategy" in known:
        changed = [k for k, v in meta.items() if known.get(k) != v]
        if changed:
            raise InputError(f"session {name} was started with other {', '.join(changed)}; use another --session name")
        if known.get("status") in ("finished", "halted"):
            if replayable:
                return known["status"]
            raise InputError(
                f"session {name} has {known['status']}; use another --session name "
                f"(its fills and P&L: mde paper --status --session {name} --json)"
            )
    else:
        state.set_meta({**meta, "status": "running"})
    return None


def journal_error(state: TradeState, runner: StrategyRunner, exc: StrategyError) -> None:
    """A strategy raised: journal it (with the candle) and leave the session resumable. Its
    status stays `running`, which `--status` shows as `stopped` once the process is gone; the
    failed candle was not marked processed, so a rerun with the same --session tries it again."""
    candle = runner.candle
    payload: dict[str, Any] = {"error": exc.message}
    if candle is not None:
        payload["candle_ts_us"] = candle[2]
    state.record("error", runner.now_us, payload, candle[0] if candle is not None else None)


def reject_event(r: Rejection, via: str | None = None) -> JournalEvent:
    """A refused order as a journal event: its reason (buying power, lot size, ...) and the detail."""
    o = r.order
    payload: dict[str, Any] = {"order": o.id, "side": o.side, "qty": o.qty, "reason": r.why, "code": r.code}
    return ("reject", r.ts_us, payload | {"via": via} if via else payload, o.symbol)


def note_payload(note: Note) -> dict[str, Any]:
    """A ctx.log line as journaled: `line` is what is shown (`2024-06-14 10:15 NAME NIFTY: message`)."""
    return {"strategy": note.strategy, "message": note.message, "line": note.line()}


def fill_payload(f: Fill, via: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "order": f.order_id,
        "side": f.side,
        "qty": f.qty,
        "price": f.price,
        "ts_us": f.ts_us,
        "reason": f.reason,
    }
    return out | {"via": via} if via else out


def fill_line(symbol: str | None, f: Mapping[str, Any]) -> str:
    when = us_to_datetime(f["ts_us"]).strftime("%Y-%m-%d %H:%M:%S")
    return f"{when} fill {'BUY' if f['side'] > 0 else 'SELL'} {f['qty']} {symbol} @ {f['price']:.2f} ({f['reason']})"


def event_line(event: JournalEvent, now_us: int, *, orders: bool = True) -> str | None:
    """The line shown for a journal event as it happens (None: not shown). `orders`: show each
    order as it is placed (where fills come later, at a price between candles)."""
    kind, _, payload, sym = event
    at = f"{us_to_datetime(now_us):%H:%M:%S}"
    if kind == "fill":
        return fill_line(sym, payload)
    if kind == "note":
        return str(payload["line"])
    if kind == "reject":
        return f"{at} reject {sym} order {payload['order']}: {payload['reason']}"
    if kind == "risk":
        return f"{at} risk {payload['state']}: {payload['reason']}"
    if kind == "order" and orders:
        return (
            f"{at} order {payload['order']} {'BUY' if payload['side'] > 0 else 'SELL'} {payload['qty']} {sym} "
            f"({payload['reason']})"
        )
    return None
