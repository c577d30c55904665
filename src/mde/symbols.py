"""Symbols users type, the instruments they stand for, and safe file names for both.

`NIFTY` and friends are aliases for index instruments (`NSE:NIFTY 50`); `INFY` means
`NSE:INFY`; `EXCHANGE:TRADINGSYMBOL` is explicit. A symbol is validated before it can
reach a path, so `../x`, `/`, NUL, empty and overlong names never touch the disk.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from .errors import InputError

V = TypeVar("V")

MAX_SYMBOL_LENGTH = 64

BUILTIN_ALIASES: dict[str, str] = {
    "NIFTY": "NSE:NIFTY 50",
    "NIFTY50": "NSE:NIFTY 50",
    "NIFTY 50": "NSE:NIFTY 50",
    "BANKNIFTY": "NSE:NIFTY BANK",
    "NIFTY BANK": "NSE:NIFTY BANK",
    "FINNIFTY": "NSE:NIFTY FIN SERVICE",
    "MIDCPNIFTY": "NSE:NIFTY MID SELECT",
    "SENSEX": "BSE:SENSEX",
    "INDIAVIX": "NSE:INDIA VIX",
}

# Letters, digits and the few punctuation marks real tradingsymbols use (M&M, BAJAJ-AUTO,
# NIFTY 50, NSE:INFY). Everything else, path separators and dots included, is refused.
_SYMBOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 &_\-:]*$")
_EXCHANGES = {"NSE", "BSE", "NFO", "BFO", "CDS", "BCD", "MCX", "NCO"}
# Device names Windows reserves in every folder (with any extension): a cache folder or journal
# named CON cannot be created there, and mde runs on Windows too.
_WINDOWS_RESERVED = re.compile(r"^(CON|PRN|AUX|NUL|COM[0-9]|LPT[0-9])(\..*)?$", re.IGNORECASE)


def check_not_reserved(name: str, what: str = "symbol") -> None:
    """An InputError for a name Windows reserves (CON, NUL, COM1 ...), on every platform alike."""
    if _WINDOWS_RESERVED.match(name.strip()):
        raise InputError(
            f"invalid {what} {name.strip()!r}: {name.strip().upper()} is a device name Windows reserves; pick another"
        )


@dataclass(frozen=True, slots=True)
class Instrument:
    """An exchange-listed instrument; the cache is keyed by it."""

    exchange: str
    tradingsymbol: str
    token: int | None = None

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.tradingsymbol}"

    def __str__(self) -> str:
        return self.key


def validate_symbol(symbol: str) -> str:
    """The symbol stripped and upper-cased, or an InputError saying what is wrong with it."""
    if not isinstance(symbol, str):
        raise InputError("symbol must be text")
    text = symbol.strip()
    if not text:
        raise InputError("empty symbol; give one like NIFTY, BANKNIFTY, INFY or NSE:INFY")
    if len(text) > MAX_SYMBOL_LENGTH:
        raise InputError(f"symbol is {len(text)} characters long; the limit is {MAX_SYMBOL_LENGTH}")
    if not _SYMBOL_RE.match(text) or text.count(":") > 1:
        raise InputError(
            f"invalid symbol {symbol!r}: use letters, digits, space, '&', '-' or 'EXCHANGE:SYMBOL' (like NSE:INFY)"
        )
    text = " ".join(text.upper().split())
    check_not_reserved(text.rpartition(":")[2])
    return text


def parse_instrument(key: str) -> Instrument:
    """`NSE:INFY` -> Instrument("NSE", "INFY"); a bare name is taken to be on NSE."""
    key = validate_symbol(key)
    if ":" in key:
        exchange, tradingsymbol = (part.strip() for part in key.split(":", 1))
        if exchange not in _EXCHANGES:
            raise InputError(f"unknown exchange {exchange!r} in {key!r}; use one of {', '.join(sorted(_EXCHANGES))}")
        if not tradingsymbol:
            raise InputError(f"no tradingsymbol after the exchange in {key!r}")
        return Instrument(exchange, tradingsymbol)
    return Instrument("NSE", key)


def resolve_offline(symbol: str, aliases: Mapping[str, str] | None = None) -> Instrument:
    """Resolve without an instruments dump: aliases (user's first), then EXCHANGE:SYMBOL or NSE."""
    name = validate_symbol(symbol)
    user = {validate_symbol(k): v for k, v in (aliases or {}).items()}
    target = user.get(name) or BUILTIN_ALIASES.get(name) or name
    return parse_instrument(target)


def per_instrument(table: Mapping[str, V], symbol: str, aliases: Mapping[str, str] | None = None) -> V | None:
    """`table[symbol]` with keys and symbol compared as instruments, so that a `[refresh.multi_tf]`
    entry written as `"NSE:NIFTY 50"` (or an alias) applies to `NIFTY` (the seed's logical_alias)."""
    wanted = resolve_offline(symbol, aliases)
    return next((v for k, v in table.items() if resolve_offline(k, aliases) == wanted), None)


def safe_name(text: str) -> str:
    """A reversible file-name form: space becomes '_', anything outside [A-Za-z0-9-] becomes %XX."""
    out = []
    for ch in text:
        if ch.isascii() and (ch.isalnum() or ch == "-"):
            out.append(ch)
        elif ch == " ":
            out.append("_")
        else:
            out.append("".join(f"%{b:02X}" for b in ch.encode()))
    return "".join(out)


def unsafe_name(name: str) -> str:
    """Inverse of safe_name."""
    from urllib.parse import unquote

    return unquote(name.replace("_", " "))
