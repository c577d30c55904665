"""The instruments list mde resolves symbols against, offline: Kite's dump format, symbol
resolution, remembered tokens, contract details (lot and tick sizes), and `mde instruments`.

This is not the Kite client: nothing here talks to a network. The Kite source's catalog
(`mde.sources.kite.instruments.InstrumentCatalog`) adds the daily download to `Catalog`;
`OfflineCatalog` reads what is on disk (the cached Kite dump, else the one shipped with mde)
for every command that reads the cache, the sample source, margins' lot sizes and replay's
tick sizes. Files under the catalog folder (`<cache_dir>/_meta`):

    instruments.parquet       the last instruments dump (zstd), as `kite.instruments()` returned it
    instruments.json          {"fetched_at": ISO instant (IST), "rows": N}
    known_instruments.json    "EXCH:TRADINGSYMBOL" -> {token, name, expiry, ..., first_seen}

Resolution (`resolve`), in order:

1. the symbol is validated (so `../x` never reaches a path);
2. aliases: the user's `[aliases]` first, then the built-in ones (`NIFTY` -> `NSE:NIFTY 50`);
   a target may be any other form below. Index instruments have built-in tokens, so
   `NIFTY`, `BANKNIFTY`, `FINNIFTY`, `MIDCPNIFTY`, `SENSEX`, `INDIAVIX` need no dump at all;
3. `NAME-FUT`, `NAME-FUT2`, `NAME-FUT3`...: the 1st/2nd/3rd unexpired future of underlying
   NAME (expiry >= today, expiries read from the dump, never computed);
4. `EXCH:SYMBOL`: explicit; a bare `SYMBOL` is NSE, else NFO (`NIFTY25DECFUT`).

Every instrument resolved with a token is remembered, so a contract keeps its token after
it leaves the dump (expired futures and options). When the cached dump is stale, a
remembered instrument resolves without downloading; when it is fresh, the dump wins.

Files that cannot be read or written become mde's errors in one place, `_file_error`.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from .atomic import atomic_write
from .calendar import now_ist
from .clock import to_ist
from .errors import CacheError, InputError
from .symbols import BUILTIN_ALIASES, Instrument, parse_instrument, validate_symbol

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger("mde.instruments")

DUMP_FILE = "instruments.parquet"
META_FILE = "instruments.json"
KNOWN_FILE = "known_instruments.json"
LOCK_FILE = ".known_instruments.lock"
LOCK_TIMEOUT_S = 30.0

# Index tokens are fixed by Kite (exchange_token*256 + 9 for NSE indices); checked against
# the real dump in data/instruments.csv. SENSEX is on BSE (not in the NSE/NFO dump).
INDEX_TOKENS: dict[str, int] = {
    "NSE:NIFTY 50": 256265,
    "NSE:NIFTY BANK": 260105,
    "NSE:NIFTY FIN SERVICE": 257801,
    "NSE:NIFTY MID SELECT": 288009,
    "NSE:INDIA VIX": 264969,
    "BSE:SENSEX": 265,
}

# The dump's columns and their types (kite.instruments() already converts them).
SCHEMA: dict[str, pl.DataType] = {
    "instrument_token": pl.Int64(),
    "exchange_token": pl.String(),
    "tradingsymbol": pl.String(),
    "name": pl.String(),
    "last_price": pl.Float64(),
    "expiry": pl.Date(),
    "strike": pl.Float64(),
    "tick_size": pl.Float64(),
    "lot_size": pl.Int64(),
    "instrument_type": pl.String(),
    "segment": pl.String(),
    "exchange": pl.String(),
}

# NIFTY-FUT, BANKNIFTY-FUT2, NFO:BAJAJ-AUTO-FUT3 (FUT1 is FUT).
_FUT_RE = re.compile(r"^(?:(?P<exch>[A-Z]+):)?(?P<name>[A-Z0-9&][A-Z0-9&\- ]*?)-FUT(?P<n>[1-9][0-9]?)?$")
_FUT_EXCHANGES = ("NFO", "BFO", "MCX")
_MAX_ALIAS_HOPS = 8
_SUGGEST_SHORTLIST = 64

# A real Kite dump shipped inside the package (built from data/instruments.csv by
# data/build_instruments.py): what `mde instruments` shows on the sample source, and what
# tells an unknown symbol from one that is only not cached, offline.
BUNDLED_DUMP = Path(__file__).resolve().parent / "data" / "instruments.parquet"
BUNDLED_META = "instruments.json"
BUNDLED_DATE = "2025-12-19"  # when the dump was taken (about; see data/README.md)


def _today(now: datetime) -> date:
    return to_ist(now).date()


def _to_date(value: Any) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def read_meta(folder: Path) -> datetime | None:
    """When the dump in `folder` was downloaded, or None (no or an unreadable instruments.json)."""
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        fetched = datetime.fromisoformat(meta["fetched_at"])
    except (OSError, ValueError, KeyError, TypeError):  # a derived file: as if there were none
        return None
    return to_ist(fetched)


def read_dump(folder: Path) -> pl.DataFrame | None:
    """The dump in `folder`, or None when there is none or it is unreadable (a derived file:
    the Kite catalog downloads it again, the offline one falls back to the shipped dump)."""
    path = folder / DUMP_FILE
    if not path.exists():
        return None
    try:
        table = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        log.warning("cannot read %s (%s); not using it", path, exc)
        return None
    if any(col not in table.columns for col in SCHEMA):
        log.warning("%s has unexpected columns; not using it", path)
        return None
    return table


def _file_error(exc: BaseException, before: str, after: str = "") -> CacheError:
    """The one map of this module's unreadable files (OSError, JSON, Parquet) onto CacheError: `before`, the reason in a few words, `after`. Raise it `from exc`."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
    return CacheError(f"{before}{reason}{after}")


class Catalog:
    """The instruments list of one folder and every instrument ever resolved: search,
    resolution, suggestions and contract details. Where the dump comes from is up to the
    subclass (`table`, `_cheap_table`, `refresh`)."""

    def __init__(self, folder: Path | str, now: Callable[[], datetime]) -> None:
        self.folder = Path(folder)
        self._now = now
        self._table: pl.DataFrame | None = None
        self._fetched_at: datetime | None = None
        self._known: dict[str, dict[str, Any]] | None = None
        self._suggest_pool: pl.DataFrame | None = None

    # -- paths ---------------------------------------------------------------------------
    @property
    def dump_path(self) -> Path:
        return self.folder / DUMP_FILE

    @property
    def meta_path(self) -> Path:
        return self.folder / META_FILE

    @property
    def known_path(self) -> Path:
        return self.folder / KNOWN_FILE

    # -- the dump ------------------------------------------------------------------------
    @property
    def fetched_at(self) -> datetime | None:
        """When the dump in use (or else the one on disk) was downloaded; None if there is none."""
        return self._fetched_at if self._table is not None else self._read_meta()

    def _read_meta(self) -> datetime | None:
        return read_meta(self.folder)

    def _load_cached(self) -> pl.DataFrame | None:
        return read_dump(self.folder)

    def table(self) -> pl.DataFrame:
        """The whole dump."""
        raise NotImplementedError

    def _cheap_table(self) -> pl.DataFrame | None:
        """The dump if it is on hand without a download, else None."""
        raise NotImplementedError

    def refresh(self) -> pl.DataFrame:
        """The dump, downloaded again where the subclass can."""
        raise NotImplementedError

    def _set_table(self, table: pl.DataFrame, fetched: datetime | None) -> None:
        if table is not self._table:
            self._suggest_pool = None
        self._table = table
        self._fetched_at = fetched

    # -- search --------------------------------------------------------------------------
    def search(self, text: str, limit: int = 50) -> pl.DataFrame:
        """Instruments whose tradingsymbol or name contains `text` (any case).

        Order: exact tradingsymbol matches, then indices, equities, futures, options and
        the rest; within each, symbols that start with the text, then shorter symbols.
        """
        if not isinstance(text, str) or not text.strip():
            raise InputError("give some text to search for, like 'reliance' or 'nifty'")
        if limit < 1:
            raise InputError(f"limit must be at least 1, not {limit}")
        needle = " ".join(text.upper().split())
        table = self.table()
        sym = pl.col("tradingsymbol").fill_null("").str.to_uppercase()
        name = pl.col("name").fill_null("").str.to_uppercase()
        hits = table.filter(sym.str.contains(needle, literal=True) | name.str.contains(needle, literal=True))
        seg = pl.col("segment").fill_null("")
        kind = (
            pl.when(seg == "INDICES")
            .then(0)
            .when(seg.is_in(["NSE", "BSE"]) & (pl.col("instrument_type") == "EQ"))
            .then(1)
            .when(pl.col("instrument_type") == "FUT")
            .then(2)
            .when(pl.col("instrument_type").is_in(["CE", "PE"]))
            .then(3)
            .otherwise(4)
        )
        exch = pl.when(pl.col("exchange") == "NSE").then(0).otherwise(1)
        ranked = hits.with_columns(
            (sym != needle).alias("_exact"),
            kind.alias("_kind"),
            (~sym.str.starts_with(needle)).alias("_prefix"),
            exch.alias("_exch"),
            sym.str.len_chars().alias("_len"),
        )
        return (
            ranked.sort(["_exact", "_kind", "_prefix", "_exch", "_len", "tradingsymbol", "expiry"], nulls_last=True)
            .head(limit)
            .drop(["_exact", "_kind", "_prefix", "_exch", "_len"])
        )

    # -- resolution ----------------------------------------------------------------------
    def resolve(self, symbol: str, aliases: Mapping[str, str] | None = None) -> Instrument:
        """The instrument (with its token) a symbol stands for; InputError with suggestions if none."""
        name, user = self._dealias(symbol, aliases)
        fut = _FUT_RE.match(name)
        if fut:
            inst = self._continuous_future(fut.group("name"), int(fut.group("n") or 1), fut.group("exch"), symbol)
        else:
            inst = self._resolve_plain(name, symbol, user)
        return inst

    @staticmethod
    def _dealias(symbol: str, aliases: Mapping[str, str] | None) -> tuple[str, dict[str, str]]:
        """The symbol validated and followed through the aliases (the user's first), and those aliases."""
        name = validate_symbol(symbol)  # before any file access
        user = {" ".join(str(k).upper().split()): v for k, v in (aliases or {}).items()}
        seen = [name]
        while True:
            target = user.get(name) if name in user else BUILTIN_ALIASES.get(name)
            if target is None:
                break
            target = validate_symbol(target)
            if target == name:
                break
            if target in seen or len(seen) > _MAX_ALIAS_HOPS:
                raise InputError(f"aliases loop: {' -> '.join([*seen, target])}; fix [aliases] in mde.toml")
            seen.append(target)
            name = target
        return name, user

    def _resolve_plain(self, name: str, typed: str, user: Mapping[str, str]) -> Instrument:
        explicit = ":" in name
        parsed = parse_instrument(name)
        # Indices: fixed tokens, no dump needed.
        if parsed.key in INDEX_TOKENS:
            token = INDEX_TOKENS[parsed.key]
            self._remember(
                parsed.key,
                {
                    "token": token,
                    "name": parsed.tradingsymbol,
                    "expiry": None,
                    "instrument_type": "EQ",
                    "segment": "INDICES",
                    "lot_size": 0,
                    "tick_size": 0.0,
                },
            )
            return Instrument(parsed.exchange, parsed.tradingsymbol, token)

        keys = [parsed.key] if explicit else [f"NSE:{parsed.tradingsymbol}", f"NFO:{parsed.tradingsymbol}"]
        table = self._cheap_table()
        if table is None:
            # A stale (or missing) dump: answer from memory if we can, else download it.
            for key in keys:
                inst = self._from_known(key)
                if inst is not None:
                    return inst
            table = self.table()
        for key in keys:
            exch, _, tsym = key.partition(":")
            row = self._row(table, exch, tsym)
            if row is not None:
                self._remember_row(row)
                return Instrument(exch, tsym, int(row["instrument_token"]))
        for key in keys:
            inst = self._from_known(key)
            if inst is not None:
                return inst
        raise InputError(self._unknown_message(typed, name, user))

    def _continuous_future(self, underlying: str, n: int, exchange: str | None, typed: str) -> Instrument:
        if exchange is not None and exchange not in _FUT_EXCHANGES:
            raise InputError(f"{typed.strip()!r}: NAME-FUT works on {', '.join(_FUT_EXCHANGES)}, not {exchange}")
        table = self.table()
        today = _today(self._now())
        futs = table.filter(
            (pl.col("instrument_type") == "FUT") & (pl.col("name") == underlying) & pl.col("expiry").is_not_null()
        )
        if exchange is not None:
            futs = futs.filter((pl.col("exchange") == exchange) & (pl.col("segment") == f"{exchange}-FUT"))
        else:
            for exch in _FUT_EXCHANGES:
                these = futs.filter((pl.col("exchange") == exch) & (pl.col("segment") == f"{exch}-FUT"))
                if not these.is_empty():
                    futs = these
                    break
            else:
                futs = futs.clear()
        if futs.is_empty():
            names = table.filter(pl.col("instrument_type") == "FUT").get_column("name").drop_nulls().unique().to_list()
            close = difflib.get_close_matches(underlying, names, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(c + '-FUT' for c in close)}?" if close else ""
            raise InputError(f"no futures on {underlying!r} in the instruments list for {typed!r}{hint}")
        live = futs.filter(pl.col("expiry") >= today).sort("expiry")
        if live.height < n:
            listed = ", ".join(f"{r['tradingsymbol']} ({r['expiry']})" for r in live.iter_rows(named=True)) or "none"
            raise InputError(
                f"{typed!r} asks for the future #{n} of {underlying}, but only {live.height} are unexpired "
                f"on {today}: {listed}"
            )
        row = live.row(n - 1, named=True)
        self._remember_row(row)
        return Instrument(row["exchange"], row["tradingsymbol"], int(row["instrument_token"]))

    @staticmethod
    def _row(table: pl.DataFrame, exchange: str, tradingsymbol: str) -> dict[str, Any] | None:
        hit = table.filter((pl.col("tradingsymbol") == tradingsymbol) & (pl.col("exchange") == exchange))
        return hit.row(0, named=True) if hit.height else None

    # -- suggestions ---------------------------------------------------------------------
    def _suggestion_pool(self) -> list[str]:
        """Tradingsymbols of NSE equities/indices and of futures, plus aliases and NAME-FUT forms."""
        pool: set[str] = set(BUILTIN_ALIASES)
        table = self._table
        if table is not None:
            eq = table.filter((pl.col("exchange") == "NSE") & (pl.col("instrument_type") == "EQ"))
            futs = table.filter((pl.col("exchange") == "NFO") & (pl.col("instrument_type") == "FUT"))
            pool.update(eq.get_column("tradingsymbol").drop_nulls().to_list())
            pool.update(futs.get_column("tradingsymbol").drop_nulls().to_list())
            pool.update(f"{u}-FUT" for u in futs.get_column("name").drop_nulls().unique().to_list())
        return sorted(pool)

    def suggest(self, text: str, n: int = 3, extra: list[str] | None = None) -> list[str]:
        """Up to n close matches (difflib) of `text` among symbols a user would type.

        difflib over ~10k symbols is too slow for an error message, so polars first ranks
        the candidates by how many of the text's letter pairs they contain, and only the
        best few go through difflib.
        """
        word = " ".join(str(text).upper().split())
        if not word:
            return []
        if self._suggest_pool is None:
            self._suggest_pool = pl.DataFrame({"s": self._suggestion_pool()}).with_columns(
                pl.col("s").str.len_chars().alias("n")
            )
        pairs = sorted({word[i : i + 2] for i in range(len(word) - 1)})
        score = [
            pl.col("s").str.starts_with(word[0]).cast(pl.Int32),
            pl.col("s").str.ends_with(word[-1]).cast(pl.Int32),
        ]
        score += [pl.col("s").str.contains(p, literal=True).cast(pl.Int32) for p in pairs]
        lo, hi = len(word) * 0.4, len(word) * 2.5 + 1
        shortlist = (
            self._suggest_pool.lazy()
            .filter(pl.col("n").is_between(lo, hi))
            .with_columns(pl.sum_horizontal(score).alias("score"))
            .filter(pl.col("score") > 0)
            .top_k(_SUGGEST_SHORTLIST, by="score")
            .collect()
            .get_column("s")
            .to_list()
        )
        shortlist += [c for c in extra or () if lo <= len(c) <= hi]
        return difflib.get_close_matches(word, list(dict.fromkeys(shortlist)), n=n, cutoff=0.6)

    def _unknown_message(self, typed: str, name: str, user: Mapping[str, str]) -> str:
        word = name.partition(":")[2] if ":" in name else name
        extra = [*user, *(k.partition(":")[2] for k in self._known_map())]
        close = self.suggest(word, extra=extra)
        close = [c for c in dict.fromkeys(close) if c != word]
        where = name.partition(":")[0] if ":" in name else "NSE or NFO"
        shown = repr(typed.strip())
        if " ".join(typed.upper().split()) != name:
            shown += f" (alias of {name})"
        if close:  # `unknown symbol 'NIFTI'; did you mean NIFTY?` (an explicit exchange is named)
            on = f": not on {where} in the instruments list" if ":" in name else ""
            return f"unknown symbol {shown}{on}; did you mean {', '.join(close)}?"
        return (
            f"unknown symbol {shown}: not on {where} in the instruments list; "
            "find its exact name with `mde instruments --search TEXT`"
        )

    # -- remembered instruments ----------------------------------------------------------
    def _known_map(self) -> dict[str, dict[str, Any]]:
        if self._known is None:
            self._known = self._read_known()
        return self._known

    def _read_known(self) -> dict[str, dict[str, Any]]:
        try:
            text = self.known_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise _file_error(exc, f"cannot read {self.known_path}: ") from exc
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or not all(isinstance(v, dict) and "token" in v for v in data.values()):
                raise ValueError("not a map of instruments")
        except ValueError as exc:  # json.JSONDecodeError is a ValueError too
            raise _file_error(
                exc,
                f"{self.known_path} is unreadable (",
                "); it holds tokens of expired contracts, so mde leaves it alone: fix it or move it aside",
            ) from exc
        return data

    def known(self) -> dict[str, dict[str, Any]]:
        """Every instrument resolved so far: "EXCH:TRADINGSYMBOL" -> its record."""
        self._known = self._read_known()
        return {k: dict(v) for k, v in self._known.items()}

    def _from_known(self, key: str) -> Instrument | None:
        rec = self._known_map().get(key)
        if rec is None or rec.get("token") is None:
            return None
        exch, _, tsym = key.partition(":")
        return Instrument(exch, tsym, int(rec["token"]))

    def _remember_row(self, row: Mapping[str, Any]) -> None:
        expiry = _to_date(row.get("expiry"))
        self._remember(
            f"{row['exchange']}:{row['tradingsymbol']}",
            {
                "token": int(row["instrument_token"]),
                "name": row.get("name"),
                "expiry": expiry.isoformat() if expiry else None,
                "instrument_type": row.get("instrument_type"),
                "segment": row.get("segment"),
                "lot_size": None if row.get("lot_size") is None else int(row["lot_size"]),
                "tick_size": None if row.get("tick_size") is None else float(row["tick_size"]),
            },
        )

    def _remember(self, key: str, record: dict[str, Any]) -> None:
        """Record an instrument (a no-op when it is already known as is); merged under a lock."""
        old = self._known_map().get(key)
        if old is not None and all(old.get(k) == v for k, v in record.items()):
            return
        from filelock import FileLock, Timeout

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(self.folder / LOCK_FILE), timeout=LOCK_TIMEOUT_S)
            try:
                lock.acquire(timeout=0)
            except Timeout:  # say what we wait for, then wait (the store's cache lock does the same)
                log.warning(
                    "waiting for %s, held by another mde process; giving up after %.0fs",
                    self.folder / LOCK_FILE,
                    LOCK_TIMEOUT_S,
                )
                lock.acquire()
            try:
                current = self._read_known()  # another process may have added some
                prev = current.get(key) or {}
                first_seen = prev.get("first_seen") or to_ist(self._now()).isoformat()
                current[key] = {**record, "first_seen": first_seen}
                with atomic_write(self.known_path, "w") as fh:
                    json.dump(dict(sorted(current.items())), fh, indent=1, ensure_ascii=False)
                    fh.write("\n")
                self._known = current
            finally:
                lock.release()
        except Timeout as exc:
            raise CacheError(
                f"another mde process has held {self.folder / LOCK_FILE} for {LOCK_TIMEOUT_S:.0f}s; try again"
            ) from exc
        except OSError as exc:
            log.warning("cannot record %s in %s (%s)", key, self.known_path, exc)
            self._known_map()[key] = {**record, "first_seen": to_ist(self._now()).isoformat()}

    # -- contract details ----------------------------------------------------------------
    def instrument_info(self, inst: Instrument | str) -> dict[str, Any] | None:
        """tick_size, lot_size, segment, expiry (date or None), instrument_type, name and token
        of an instrument, from today's dump if it lists it, else from memory; None if unknown."""
        key = inst.key if isinstance(inst, Instrument) else parse_instrument(inst).key
        exch, _, tsym = key.partition(":")
        if key in INDEX_TOKENS:
            return {
                "token": INDEX_TOKENS[key],
                "tick_size": 0.0,
                "lot_size": 0,
                "segment": "INDICES",
                "expiry": None,
                "instrument_type": "EQ",
                "name": tsym,
            }
        table = self._cheap_table()
        row = self._row(table, exch, tsym) if table is not None else None
        if row is None:
            rec = self._known_map().get(key)
            if rec is None:
                if table is not None:
                    return None
                row = self._row(self.table(), exch, tsym)
                if row is None:
                    return None
            else:
                row = {**rec, "instrument_token": rec.get("token")}
        return {
            "token": None if row.get("instrument_token") is None else int(row["instrument_token"]),
            "tick_size": row.get("tick_size"),
            "lot_size": row.get("lot_size"),
            "segment": row.get("segment"),
            "expiry": _to_date(row.get("expiry")),
            "instrument_type": row.get("instrument_type"),
            "name": row.get("name"),
        }


def cached_dump(folder: Path | str) -> tuple[pl.DataFrame, datetime | None] | None:
    """The Kite dump cached in `folder` (`<cache>/_meta`) of any age and when it was taken, or
    None when there is none or it is unreadable; read once per version of the file."""
    path = Path(folder) / DUMP_FILE
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return None
    return _cached_dump(str(path), mtime)


@lru_cache(maxsize=2)
def _cached_dump(path: str, mtime_ns: int) -> tuple[pl.DataFrame, datetime | None] | None:
    folder = Path(path).parent
    table = read_dump(folder)
    return (table, read_meta(folder)) if table is not None else None


@lru_cache(maxsize=1)
def bundled_dump() -> tuple[pl.DataFrame, datetime]:
    """The instruments dump shipped inside the package, and when it was taken (read once)."""
    try:
        table = pl.read_parquet(BUNDLED_DUMP)
        meta = json.loads(BUNDLED_DUMP.with_name(BUNDLED_META).read_text(encoding="utf-8"))
        return table, to_ist(datetime.fromisoformat(meta["fetched_at"]))
    except (OSError, ValueError, KeyError, pl.exceptions.PolarsError) as exc:
        raise _file_error(
            exc, f"the instruments list shipped with mde ({BUNDLED_DUMP}) is unreadable (", "); reinstall mde"
        ) from exc


class OfflineCatalog(Catalog):
    """The catalog without a network and without writing: the cached Kite dump of any age
    (`<cache>/_meta`), else the one shipped with mde; the remembered instruments are read,
    never written. It tells an unknown symbol (with close matches) from one that is known
    but not cached, for every command that reads the cache."""

    def __init__(self, folder: Path | str, now: Callable[[], datetime]) -> None:
        super().__init__(folder, now)
        self.bundled = False  # True when the dump in use is the one shipped with mde

    def table(self) -> pl.DataFrame:
        if self._table is None:
            cached = self._load_cached()
            if cached is not None:
                self._set_table(cached, self._read_meta())
            else:
                table, fetched = bundled_dump()
                self.bundled = True
                self._set_table(table, fetched)
        assert self._table is not None
        return self._table

    def _cheap_table(self) -> pl.DataFrame | None:
        return self.table()

    def refresh(self) -> pl.DataFrame:
        return self.table()

    def _remember(self, key: str, record: dict[str, Any]) -> None:
        """Reading never writes the cache: nothing is recorded offline."""

    def check(self, symbol: str, aliases: Mapping[str, str] | None = None) -> None:
        """None if the symbol names an instrument of the dump, an index, a remembered one or a
        NAME-FUT with futures listed; else InputError `unknown symbol 'NIFTI'; did you mean NIFTY?`."""
        name, user = self._dealias(symbol, aliases)
        fut = _FUT_RE.match(name)
        table = self.table()
        if fut:
            underlying = fut.group("name")
            futs = table.filter((pl.col("instrument_type") == "FUT") & (pl.col("name") == underlying))
            if futs.height or any(
                rec.get("name") == underlying and rec.get("instrument_type") == "FUT"
                for rec in self._known_map().values()
            ):
                return
            names = table.filter(pl.col("instrument_type") == "FUT").get_column("name").drop_nulls().unique().to_list()
            close = difflib.get_close_matches(underlying, names, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(c + '-FUT' for c in close)}?" if close else ""
            raise InputError(
                f"unknown symbol {symbol.strip()!r}: no futures on {underlying} in the instruments list{hint}"
            )
        parsed = parse_instrument(name)
        if parsed.key in INDEX_TOKENS:
            return
        keys = [parsed.key] if ":" in name else [f"NSE:{parsed.tradingsymbol}", f"NFO:{parsed.tradingsymbol}"]
        for key in keys:
            exch, _, tsym = key.partition(":")
            if key in self._known_map() or self._row(table, exch, tsym) is not None:
                return
        raise InputError(self._unknown_message(symbol, name, user))


@dataclass(frozen=True)
class InstrumentListing:
    """What `mde instruments` shows: the rows, the size of the whole list, when the list was
    downloaded, and where it came from when that is not the Kite source's own download."""

    rows: pl.DataFrame
    total: int
    fetched_at: datetime | None
    note: str | None = None


def list_instruments(
    settings: Settings, search: str | None = None, *, limit: int = 50, refresh: bool = False
) -> InstrumentListing:
    """The instruments list of the configured source: the first `limit` rows, or the best
    `limit` matches of `search` (`Catalog.search`). On Kite it is downloaded at most once a
    day (`refresh` forces it); on the sample source it is the cached Kite dump, else the one
    shipped with mde, offline and read-only (`refresh` is an InputError there)."""
    if limit < 1:  # polars' head(-5) would silently drop the last five instead
        raise InputError(f"--limit must be at least 1, got {limit}")
    catalog: Catalog
    if settings.source == "sample":
        if refresh:
            raise InputError(
                "--refresh downloads Kite's instruments list: add --source kite (the sample source "
                "serves the list shipped with mde, offline)"
            )
        catalog = OfflineCatalog(settings.cache_dir / "_meta", lambda: settings.now or now_ist())
    else:
        from .sources.kite import KiteSource

        catalog = KiteSource(settings).catalog
    table = catalog.refresh() if refresh else catalog.table()
    rows = catalog.search(search, limit=limit) if search else table.head(limit)
    when = catalog.fetched_at
    note = None
    if isinstance(catalog, OfflineCatalog) and catalog.bundled and when is not None:
        note = f"the Kite dump of {when:%Y-%m-%d} shipped with mde (offline, sample source; --source kite downloads today's)"
    elif settings.source == "sample" and when is not None:
        note = f"the cached Kite dump fetched {when:%Y-%m-%d %H:%M} IST (offline, sample source)"
    return InstrumentListing(rows, table.height, when, note)
