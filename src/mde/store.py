"""The Parquet candle cache: the only code that writes it.

Layout (documented in the README, readable with polars/duckdb/pandas directly):

    <cache_dir>/<EXCHANGE>/<TRADINGSYMBOL>/<timeframe>/
        2024-05.parquet   1m, 3m: one file per month
        2024.parquet      5m .. 60m: one file per year
        all.parquet       1d: one file
        manifest.json     source, rows, first/last, coverage ledger
        .lock             serialises writers across processes

Every file is replaced atomically (temp file in the same folder, fsync, os.replace, fsync
of the folder) under the series lock, so a crash leaves each file old or new, never mixed.
A write stages every file it changes (temp files, fsynced) and renames them into place only
when all are written, partitions first and the manifest last: a write that fails (a full
disk) changes nothing, and one killed during the renames leaves candles on disk that the
ledger does not vouch for yet, never the reverse. An OSError that says the cache cannot be
written (read-only, permissions, full) becomes one CacheError in one place (`_writing`).
Parquet files are the truth; the manifest is a summary that every write brings up to date.
A manifest that is missing (moved aside) is rebuilt from the files, its coverage ledger
too: every session whose candles are all there counts as covered.
Each manifest entry carries its file's size and mtime: a write recomputes the entries of the
files it wrote and of any file whose size or mtime no longer match (written by a writer that
crashed before its manifest, or by hand), and keeps the others as they are.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import shlex
import shutil
import stat as stat_mod
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeGuard

import polars as pl

from .atomic import Staged, fsync_dir
from .calendar import Calendar, nse
from .candles import COLUMNS, empty_candles, merge_candles, normalize, normalize_daily
from .clock import IST
from .errors import CacheError, InputError
from .symbols import Instrument, safe_name, unsafe_name
from .timeframes import Timeframe, parse

log = logging.getLogger("mde.store")
# Two row groups per month of 1m (7,875 rows), five per year of 5m: a reader of the last
# candles (duckdb, scan_parquet().tail()) decodes one row group, not the whole file, while
# fewer, larger groups keep a full read cheap (decoding cost grows with the number of groups).
ROW_GROUP_SIZE = 4096
LOCK_TIMEOUT_S = 120.0
MANIFEST = "manifest.json"
READ_CACHE_FILES = 64
# A folder listing is reused while the folder's mtime is unchanged, but only once that mtime
# is this far in the past: file-system timestamps are coarse (a few ms), so a file added in
# the same tick as the last change would otherwise go unseen. Generous for network clocks.
LISTING_SETTLE_NS = 2_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _concat(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Stack partitions: a plain vertical concat when all have one schema (the usual case,
    several times cheaper), else by column name, with nulls where a column (oi) is missing."""
    if len(frames) == 1:
        return frames[0]
    try:
        return pl.concat(frames, how="vertical")
    except pl.exceptions.PolarsError:
        return pl.concat(frames, how="diagonal_relaxed")


def partition_key(ts_local: datetime, tf: Timeframe) -> str:
    if tf.partition == "month":
        return f"{ts_local.year:04d}-{ts_local.month:02d}"
    if tf.partition == "year":
        return f"{ts_local.year:04d}"
    return "all"


def _partition_expr(tf: Timeframe) -> pl.Expr:
    if tf.partition == "month":
        return pl.col("ts").dt.strftime("%Y-%m")
    if tf.partition == "year":
        return pl.col("ts").dt.strftime("%Y")
    return pl.lit("all")


# -- ranges (the coverage ledger) -------------------------------------------------
Range = tuple[datetime, datetime]


def union_ranges(ranges: Iterable[Range]) -> list[Range]:
    """Merge overlapping or touching ranges."""
    out: list[Range] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def ledger_from_candles(ts: pl.Series, tf: Timeframe, calendar: Calendar) -> tuple[list[Range], int, list[str]]:
    """A coverage ledger rebuilt from the candles themselves: each NSE session whose candles
    are all there (as many as the calendar says it has) counts as covered, and the days
    between two such sessions (weekends, holidays) with it. Returns the ledger and the
    number of sessions it covers, and the sessions from the first candle's to the last's
    that are not complete (not covered)."""
    if ts.is_empty():
        return [], 0, []
    local = ts.dt.convert_time_zone("Asia/Kolkata")
    counts = dict(local.dt.date().value_counts().iter_rows())
    first, last = min(counts), max(counts)
    ranges: list[Range] = []
    short: list[str] = []
    full = 0
    current: list[datetime] | None = None
    day = first
    while day <= last:
        sessions = calendar.sessions(day)
        if sessions:
            if counts.get(day, 0) == calendar.candles_per_day(day, tf):
                full += 1
                midnight = datetime(day.year, day.month, day.day, tzinfo=IST)
                open_, close = (
                    midnight + timedelta(minutes=sessions[0][0]),
                    midnight + timedelta(minutes=sessions[-1][1]),
                )
                if current is None:
                    current = [open_, close]
                    ranges.append((open_, close))
                else:
                    current[1] = close
                    ranges[-1] = (current[0], close)
            else:
                short.append(day.isoformat())
                current = None
        day += timedelta(days=1)
    return ranges, full, short


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.astimezone(IST).isoformat()


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(IST)


def _from_iso(text: str | None) -> datetime | None:
    return None if text is None else _instant(text)


def _epoch_us(text: str) -> int:
    return (datetime.fromisoformat(text) - _EPOCH) // _US


Stamp = tuple[int, int, int]  # (inode, mtime_ns, size): a file replaced or rewritten gets a new one


def _stamp(st: os.stat_result) -> Stamp:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _implausible(df: pl.DataFrame, tf: Timeframe) -> dict[str, int]:
    from .calendar import nse
    from .validate import implausible  # validate imports this module

    return implausible(df, tf, nse())


def _entry(
    df: pl.DataFrame, st: os.stat_result, tf: Timeframe | None = None, bad: dict[str, int] | None = None
) -> dict[str, Any]:
    """The manifest's summary of one partition file; `implausible` counts its candles that fail
    validate.check by rule (kept: they are the source's truth; `{}` when there are none, absent
    in entries written before mde checked)."""
    ts = df.get_column("ts")
    entry: dict[str, Any] = {
        "rows": df.height,
        "first": _iso(ts[0]),
        "last": _iso(ts[-1]),
        "bytes": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }
    if tf is not None:
        entry["implausible"] = bad if bad is not None else _implausible(df, tf)
    return entry


def _spans(candles: pl.DataFrame, tf: Timeframe) -> list[Range]:
    """[start, start + timeframe) of each candle, merged where they touch."""
    if candles.is_empty():
        return []
    step = timedelta(days=1) if tf.is_daily else timedelta(minutes=tf.minutes)
    return union_ranges((ts, ts + step) for ts in candles["ts"].to_list())


def subtract_ranges(ranges: Iterable[Range], cut: Range) -> list[Range]:
    """`ranges` without the part inside `cut`."""
    out: list[Range] = []
    for a, b in ranges:
        if b <= cut[0] or a >= cut[1]:
            out.append((a, b))
            continue
        if a < cut[0]:
            out.append((a, cut[0]))
        if b > cut[1]:
            out.append((cut[1], b))
    return out


def _is_instant(text: object) -> bool:
    try:
        return isinstance(text, str) and datetime.fromisoformat(text).tzinfo is not None
    except ValueError:
        return False


def _entry_matches(entry: dict[str, Any] | None, st: os.stat_result) -> TypeGuard[dict[str, Any]]:
    """The entry is well-formed and was made for the file as it is now (same size and mtime)."""
    return (
        isinstance(entry, dict)
        and entry.get("bytes") == st.st_size
        and entry.get("mtime_ns") == st.st_mtime_ns
        and isinstance(entry.get("rows"), int)
        and _is_instant(entry.get("first"))
        and _is_instant(entry.get("last"))
    )


@dataclass
class Manifest:
    instrument: str
    timeframe: str
    source: str
    rows: int = 0
    first_ts: datetime | None = None
    last_ts: datetime | None = None
    updated_at: datetime | None = None
    coverage: list[Range] = field(default_factory=list)
    partitions: dict[str, dict[str, Any]] = field(default_factory=dict)
    # ranges with sessions that the source answered with no candle at all (a Kite instrument
    # before it was listed): not gaps to fetch again; a later answer with candles removes them
    empty: list[Range] = field(default_factory=list)
    # ranges [first candle start, last candle close) whose candles `mde stream` built from live
    # ticks (origin "ticks") and no answer of the source has replaced yet (reconciliation does)
    ticks: list[Range] = field(default_factory=list)

    @property
    def implausible(self) -> dict[str, int]:
        """Cached candles that fail validate.check, counted by rule over all partitions."""
        out: dict[str, int] = {}
        for entry in self.partitions.values():
            for key, n in (entry.get("implausible") or {}).items():
                out[key] = out.get(key, 0) + int(n)
        return out

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": 1,
                "instrument": self.instrument,
                "timeframe": self.timeframe,
                "source": self.source,
                "rows": self.rows,
                "first_ts": _iso(self.first_ts),
                "last_ts": _iso(self.last_ts),
                "updated_at": _iso(self.updated_at),
                "coverage": [[_iso(a), _iso(b)] for a, b in self.coverage],
                **({"empty": [[_iso(a), _iso(b)] for a, b in self.empty]} if self.empty else {}),
                **({"ticks": [[_iso(a), _iso(b)] for a, b in self.ticks]} if self.ticks else {}),
                "partitions": self.partitions,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        return cls(
            instrument=raw["instrument"],
            timeframe=raw["timeframe"],
            source=raw["source"],
            rows=int(raw.get("rows", 0)),
            first_ts=_from_iso(raw.get("first_ts")),
            last_ts=_from_iso(raw.get("last_ts")),
            updated_at=_from_iso(raw.get("updated_at")),
            coverage=[(_instant(a), _instant(b)) for a, b in raw.get("coverage", [])],
            partitions=dict(raw.get("partitions", {})),
            empty=[(_instant(a), _instant(b)) for a, b in raw.get("empty", [])],
            ticks=[(_instant(a), _instant(b)) for a, b in raw.get("ticks", [])],
        )


@dataclass(frozen=True)
class WriteResult:
    added: int  # candles whose ts was not cached before
    replaced: int  # cached candles overwritten (same ts)
    rows: int  # rows in the series afterwards
    implausible: dict[str, int] = field(default_factory=dict)  # written candles failing validate.check, by rule


def _refetch_advice(path: Path) -> str:
    """The `mde fetch` that brings a partition file's period back, for the unreadable-file error."""
    import calendar as month_days

    try:
        tf = parse(path.parent.name)
        key = f"{unsafe_name(path.parent.parent.parent.name)}:{unsafe_name(path.parent.parent.name)}"
        stem = path.stem
        if tf.partition == "month":
            year, month = int(stem[:4]), int(stem[5:7])
            span = f"--from {year:04d}-{month:02d}-01 --to {year:04d}-{month:02d}-{month_days.monthrange(year, month)[1]:02d}"
        elif tf.partition == "year":
            span = f"--from {int(stem):04d}-01-01 --to {int(stem):04d}-12-31"
        else:
            return "`mde fetch` for the series' range again"
    except (InputError, ValueError, IndexError):
        return "`mde fetch` for that period again"
    return f"`mde fetch {shlex.quote(key)} --timeframe {tf} {span}`"


def _lock_holder(path: Path) -> str:
    """Who holds a lock on `path`, where the system says (Linux: /proc/locks): " (pid N,
    running since HH:MM:SS)", else ""."""
    try:
        inode = path.stat().st_ino
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            pids = [int(f[4]) for f in map(str.split, fh) if len(f) > 5 and f[5].rsplit(":", 1)[-1] == str(inode)]
    except (OSError, ValueError):
        return ""
    if not pids:
        return ""
    try:  # the holder's start: /proc/<pid>/stat field 22 (clock ticks after boot) + boot time
        with open(f"/proc/{pids[0]}/stat", encoding="ascii") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat", encoding="ascii") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith("btime"))
        since = datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"), IST)
        return f" (pid {pids[0]}, running since {since:%H:%M:%S})"
    except (OSError, ValueError, IndexError, StopIteration):
        return f" (pid {pids[0]})"


def _partitions_in(folder: Path) -> list[Path]:
    """The partition files in `folder`, oldest first (names sort by period)."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [folder / name for name in sorted(n for n in names if n.endswith(".parquet") and not n.startswith("."))]


# OSError numbers that mean "this cache cannot be written", in a user's words.
WRITE_ERRNOS: dict[int, str] = {
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOSPC: "no space left on device",
    getattr(errno, "EDQUOT", errno.ENOSPC): "no space left on device",
}
FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def write_error(root: Path, exc: OSError) -> CacheError | None:
    """The one-line CacheError for an OSError that says the cache at `root` cannot be written
    (read-only, permissions, full), or None for any other OSError."""
    reason = WRITE_ERRNOS.get(exc.errno) if exc.errno is not None else None
    if reason is None:
        return None
    if exc.errno in FULL_ERRNOS:
        reason += " (nothing was changed; free some space and run it again)"
    return CacheError(f"cannot write the cache at {root}: {reason}")


def check_cache_root(root: Path) -> None:
    """A cache dir that exists must be a folder: a file in its place is one clear line."""
    try:
        st = os.stat(root)
    except FileNotFoundError:
        return  # created by the first write
    except NotADirectoryError:
        st = None
    except OSError as exc:
        raise CacheError(f"cannot open the cache at {root}: {exc.strerror or exc}") from exc
    if st is None or not stat_mod.S_ISDIR(st.st_mode):
        raise CacheError(
            f"the cache dir {root} is not a folder (a file is in the way); move the file, or point "
            "--cache-dir, MDE_CACHE_DIR or [cache] dir at a folder"
        )


class NotInMemory(Exception):
    """A read inside `CandleStore.memory_only()` would have decoded a file (or asked a source)."""


class CandleStore:
    """Read and write candle series under one cache folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        check_cache_root(self.root)
        self._read_cache: OrderedDict[Path, tuple[Stamp, pl.DataFrame]] = OrderedDict()
        self._memory_only = threading.local()
        self._dirs: dict[tuple[str, str, str], Path] = {}
        self._memo_lock = threading.Lock()  # a paper session updates several series from threads
        self._listings: dict[Path, tuple[tuple[int, int], list[Path]]] = {}
        self.lock_timeout = LOCK_TIMEOUT_S  # seconds a writer waits for another's lock (MDE_LOCK_TIMEOUT)

    # -- paths ------------------------------------------------------------------------
    def instrument_dir(self, instrument: Instrument) -> Path:
        return self.root / safe_name(instrument.exchange) / safe_name(instrument.tradingsymbol)

    def series_dir(self, instrument: Instrument, tf: Timeframe) -> Path:
        # memoized: building the path (escaping, pathlib) cost ~25 us of a ~70 us window read
        key = (instrument.exchange, instrument.tradingsymbol, tf.name)
        path = self._dirs.get(key)
        if path is None:
            if len(self._dirs) >= 4096:  # bounded: a server may be asked for any symbol
                self._dirs.clear()
            path = self._dirs[key] = self.instrument_dir(instrument) / tf.name
        return path

    def partitions(self, instrument: Instrument, tf: Timeframe) -> list[Path]:
        return list(self._listing(self.series_dir(instrument, tf)))

    def exists(self, instrument: Instrument, tf: Timeframe) -> bool:
        return bool(self._listing(self.series_dir(instrument, tf)))

    def _listing(self, folder: Path) -> list[Path]:
        """The folder's partition files, sorted; do not mutate the result.

        Listed again whenever the folder's inode or mtime changed (every file mde writes
        arrives by os.replace into the folder, and a whole-series swap brings a new folder),
        so files written by other processes or other CandleStore instances are seen.
        """
        checked_at = time.time_ns()
        try:
            st = os.stat(folder)
        except (FileNotFoundError, NotADirectoryError):
            self._listings.pop(folder, None)
            return []
        key = (st.st_ino, st.st_mtime_ns)
        hit = self._listings.get(folder)
        if hit is not None and hit[0] == key:
            return hit[1]
        parts = _partitions_in(folder)
        if checked_at - st.st_mtime_ns > LISTING_SETTLE_NS:
            self._listings[folder] = (key, parts)
        else:  # changed just now: a change in the same clock tick would keep this mtime
            self._listings.pop(folder, None)
        return parts

    # -- reading ----------------------------------------------------------------------
    @contextmanager
    def memory_only(self) -> Iterator[None]:
        """Reads in this block (in this thread) may stat files but never decode one: a file
        whose current version is not in the read memo raises NotInMemory instead.

        For a server's event loop: a window of warm series is answered inline, in
        microseconds, and only a read that needs the disk goes to a worker thread.
        """
        self._memory_only.on = True
        try:
            yield
        finally:
            self._memory_only.on = False

    def check_memory(self) -> None:
        """Raise NotInMemory inside `memory_only()`: the caller is about to do slow work."""
        if getattr(self._memory_only, "on", False):
            raise NotInMemory

    def _remember(self, path: Path, stamp: Stamp, df: pl.DataFrame) -> None:
        with self._memo_lock:
            self._read_cache[path] = (stamp, df)
            self._read_cache.move_to_end(path)
            while len(self._read_cache) > READ_CACHE_FILES:
                self._read_cache.popitem(last=False)

    def _cached(self, path: Path, stamp: Stamp) -> pl.DataFrame | None:
        with self._memo_lock:
            hit = self._read_cache.get(path)
            if hit is not None and hit[0] == stamp:
                self._read_cache.move_to_end(path)
                return hit[1]
        return None

    def _read_file(self, path: Path, remember: bool = True) -> pl.DataFrame:
        try:
            st = path.stat()
        except FileNotFoundError:
            return empty_candles()
        stamp = _stamp(st)
        hit = self._cached(path, stamp)
        if hit is not None:
            return hit
        self.check_memory()
        try:
            df = pl.read_parquet(path)
        except Exception as exc:  # polars raises several types for truncated/corrupt files
            raise CacheError(
                f"cache file {path} is unreadable ({type(exc).__name__}); it was left as it is: "
                f"move it aside, then run {_refetch_advice(path)}"
            ) from None
        self._validate(df, path)
        if remember:
            self._remember(path, stamp, df)
        return df

    def _read_files(self, paths: list[Path], remember: bool = True) -> list[pl.DataFrame]:
        """Like `_read_file` for each path, but files missing from the read cache are decoded
        by one polars call when the manifest vouches for them (see `_read_batch`)."""
        found: dict[Path, pl.DataFrame] = {}
        misses: list[tuple[Path, os.stat_result]] = []
        for path in paths:
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            hit = self._cached(path, _stamp(st))
            if hit is not None:
                found[path] = hit
            else:
                misses.append((path, st))
        if misses:
            self.check_memory()
        if not remember and len(misses) == len(paths) > 1:
            # a whole series, none of it cached: one contiguous frame, so its reader iterates the
            # columns without a copy (a replay's history)
            decoded = self._decode_batch(misses, contiguous=True)
            if decoded is not None and len(decoded[1]) == len(paths):
                return [decoded[0]]
        if len(misses) > 1:
            found.update(self._read_batch(misses, remember))
        return [found[p] if p in found else self._read_file(p, remember) for p in paths]

    def _read_batch(self, misses: list[tuple[Path, os.stat_result]], remember: bool = True) -> dict[Path, pl.DataFrame]:
        """Decode several partition files of one series with one `pl.read_parquet` (about twice
        as fast as one call per file) and cut the result back into files by the manifest's row
        counts. Only files whose manifest entry matches their size and mtime take part, and
        every cut is checked against the entry's first and last ts; on any doubt nothing is
        returned and the caller reads file by file (which also names a bad file precisely)."""
        decoded = self._decode_batch(misses)
        if decoded is None:
            return {}
        big, batch = decoded
        out: dict[Path, pl.DataFrame] = {}
        offset = 0
        for path, st, e in batch:
            out[path] = big.slice(offset, e["rows"])
            offset += e["rows"]
            if remember:
                self._remember(path, _stamp(st), out[path])
        return out

    def _decode_batch(
        self, misses: list[tuple[Path, os.stat_result]], *, contiguous: bool = False
    ) -> tuple[pl.DataFrame, list[tuple[Path, os.stat_result, dict[str, Any]]]] | None:
        """One frame for the files the manifest vouches for (see `_read_batch`), with them."""
        folder = misses[0][0].parent
        try:
            entries = Manifest.from_json((folder / MANIFEST).read_text(encoding="utf-8")).partitions
        except Exception:  # missing or unreadable manifest: file by file
            return None
        batch = [
            (path, st, entries[path.stem])
            for path, st in misses
            if path.parent == folder and _entry_matches(entries.get(path.stem), st)
        ]
        if len(batch) < 2 or any(e["rows"] <= 0 for _, _, e in batch):
            return None
        try:
            big = pl.read_parquet([path for path, _, _ in batch])
        except Exception:  # schemas differ (an `oi` column in some files) or a file is bad
            return None
        if big.height != sum(e["rows"] for _, _, e in batch) or any(big.schema.get(n) != t for n, t in COLUMNS.items()):
            return None
        bounds: list[int] = []
        expect: list[int] = []
        offset = 0
        for _, _, e in batch:
            bounds += [offset, offset + e["rows"] - 1]
            expect += [_epoch_us(e["first"]), _epoch_us(e["last"])]
            offset += e["rows"]
        if big.get_column("ts").to_physical().gather(bounds).to_list() != expect:
            return None
        return (big.rechunk() if contiguous else big), batch

    @staticmethod
    def _validate(df: pl.DataFrame, path: Path) -> None:
        schema = df.schema
        for name, dtype in COLUMNS.items():
            if name not in schema:
                raise CacheError(f"cache file {path} has no '{name}' column; it was not written by mde. Move it aside.")
            if schema[name] != dtype:
                raise CacheError(
                    f"cache file {path}: column '{name}' is {schema[name]}, expected {dtype}. Move it aside."
                )

    def read(
        self,
        instrument: Instrument,
        tf: Timeframe,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        remember: bool = True,
    ) -> pl.DataFrame:
        """All cached candles with start <= ts <= end (bounds optional).

        `remember=False` keeps the files it decodes out of the read cache: a whole-series read
        (a backtest's history) would otherwise pin every partition in memory after its use. When
        none of them is cached, they are decoded into one contiguous frame.
        """
        parts = self.partitions(instrument, tf)
        if start is not None:
            lo = partition_key(start.astimezone(IST), tf)
            parts = [p for p in parts if p.stem == "all" or p.stem >= lo]
        if end is not None:
            hi = partition_key(end.astimezone(IST), tf)
            parts = [p for p in parts if p.stem == "all" or p.stem <= hi]
        frames = [f for f in self._read_files(parts, remember) if not f.is_empty()]
        if not frames:
            return empty_candles()
        df = _concat(frames)
        # filter only when a bound cuts into the data: a filter copies every column
        if start is not None and df["ts"][0] < start:
            df = df.filter(pl.col("ts") >= start)
        if end is not None and df["ts"][-1] > end:
            df = df.filter(pl.col("ts") <= end)
        return df

    def read_tail(self, instrument: Instrument, tf: Timeframe, n: int, before: datetime | None = None) -> pl.DataFrame:
        """The last `n` candles with ts < before, reading only the newest partitions needed."""
        parts = self._listing(self.series_dir(instrument, tf))
        hi = None if before is None else partition_key(before.astimezone(IST), tf)
        frames: list[pl.DataFrame] = []
        have = 0
        for path in reversed(parts):
            if hi is not None and path.stem != "all" and path.stem > hi:
                continue  # a partition after `before`: nothing in it can qualify
            df = self._read_file(path)
            if before is not None and not df.is_empty() and df["ts"][-1] >= before:
                df = df.filter(pl.col("ts") < before)
            frames.append(df)
            have += df.height
            if have >= n:
                break
        if not frames:
            return empty_candles()
        frames.reverse()
        df = _concat(frames)
        return df.tail(n)

    def manifest(self, instrument: Instrument, tf: Timeframe) -> Manifest | None:
        """The series' manifest; None if there is none (a missing one is rebuilt by the next
        writer, see `restore_manifest`); a CacheError naming it if it cannot be read."""
        path = self.series_dir(instrument, tf) / MANIFEST
        try:
            return Manifest.from_json(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except IsADirectoryError:
            why = "it is a folder"
        except OSError as exc:
            why = exc.strerror or str(exc)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # UnicodeDecodeError is a ValueError
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CacheError(
            f"{path} is not a valid manifest ({why}); move it aside and mde rebuilds it from the files"
        ) from None

    def rebuilt_manifest(self, instrument: Instrument, tf: Timeframe, source: str) -> tuple[Manifest, str]:
        """A manifest made from the partition files alone (nothing is written), and a line
        saying what could not be recovered: the ledger covers each session whose candles are
        all there; a session with candles missing, and the source, cannot be told from files."""
        folder = self.series_dir(instrument, tf)
        manifest = Manifest(instrument.key, tf.name, source)
        frames = []
        for path in _partitions_in(folder):
            df = self._read_file(path)  # a CacheError names an unreadable file
            if not df.is_empty():
                manifest.partitions[path.stem] = _entry(df, path.stat())
                frames.append(df.select("ts"))
        ts = _concat(frames).get_column("ts") if frames else empty_candles().get_column("ts")
        manifest.coverage, full, short = ledger_from_candles(ts, tf, nse())
        manifest.rows = sum(e["rows"] for e in manifest.partitions.values())
        # polars types a Series' min/max as any Python value; a Datetime column's is a datetime
        manifest.first_ts = ts.min() if not ts.is_empty() else None  # type: ignore[assignment]
        manifest.last_ts = ts.max() if not ts.is_empty() else None  # type: ignore[assignment]
        note = (
            f"{instrument} {tf}: rebuilt {folder / MANIFEST} from {len(manifest.partitions)} file(s) "
            f"({manifest.rows} candles); the coverage ledger covers the {full} session(s) whose candles are all there"
        )
        if short:
            more = f" (first {short[0]})" if len(short) > 1 else f" ({short[0]})"
            note += (
                f"; {len(short)} session(s) with candles missing are not covered{more}: fetch them again to cover them"
            )
        note += (
            f"; ranges answered with no candles cannot be told from the files, and the source is recorded as '{source}'"
        )
        return manifest, note

    def restore_manifest(self, instrument: Instrument, tf: Timeframe, *, source: str, now: datetime) -> Manifest | None:
        """The manifest, rebuilt from the files and written if it is missing (None if the
        series has no files either). Says what could not be recovered (a warning)."""
        found = self.manifest(instrument, tf)
        if found is not None or not self.exists(instrument, tf):
            return found
        with self.lock(instrument, tf) as folder:
            manifest = self._manifest_or_rebuilt(instrument, tf, folder, source)
            if manifest is None:
                return None
            manifest.updated_at = now
            staged = Staged(folder)
            try:
                staged.put(folder / MANIFEST, manifest.to_json().encode())
                staged.commit()
            except BaseException:
                staged.abort()
                raise
            return manifest

    def _manifest_or_rebuilt(self, instrument: Instrument, tf: Timeframe, folder: Path, source: str) -> Manifest | None:
        """Under the lock: the manifest, or one rebuilt from the files if it is missing."""
        manifest = self.manifest(instrument, tf)
        if manifest is None and _partitions_in(folder):
            manifest, note = self.rebuilt_manifest(instrument, tf, source)
            log.warning("%s", note)
        return manifest

    def list_series(self) -> list[tuple[Instrument, Timeframe]]:
        out: list[tuple[Instrument, Timeframe]] = []
        if not self.root.is_dir():
            return out
        for exch in sorted(self.root.iterdir()):
            if not exch.is_dir() or exch.name.startswith((".", "_")):
                continue
            for sym in sorted(exch.iterdir()):
                if not sym.is_dir():
                    continue
                for tfdir in sorted(sym.iterdir()):
                    try:
                        tf = parse(tfdir.name)
                    except InputError:
                        continue
                    inst = Instrument(unsafe_name(exch.name), unsafe_name(sym.name))
                    if self.exists(inst, tf):
                        out.append((inst, tf))
        return out

    def size_on_disk(self, instrument: Instrument, tf: Timeframe) -> int:
        return sum(p.stat().st_size for p in self.partitions(instrument, tf))

    # -- writing ----------------------------------------------------------------------
    @contextmanager
    def _writing(self) -> Iterator[None]:
        """The one place where an OSError of a cache write (read-only file system, no
        permission, a full disk) becomes a one-line CacheError, its cause kept for `-v`."""
        try:
            yield
        except OSError as exc:
            mapped = write_error(self.root, exc)
            if mapped is None:
                raise
            raise mapped from exc

    @contextmanager
    def lock(self, instrument: Instrument, tf: Timeframe) -> Iterator[Path]:
        """Serialise writers of one series across processes (cron refresh vs a paper session).

        The lock file sits beside the series folder (`.<tf>.lock`), so a whole-series
        replacement can swap the folder while holding it. Only writers take it: reads need
        no lock (every file changes by a rename), so they work on a read-only cache.
        """
        from filelock import FileLock, Timeout

        folder = self.series_dir(instrument, tf)
        with self._writing():
            try:
                folder.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                if write_error(self.root, exc) is not None:
                    raise
                raise CacheError(f"cannot create cache folder {folder.parent}: {exc.strerror}") from exc
            path = folder.parent / f".{tf.name}.lock"
            lock = FileLock(str(path), timeout=self.lock_timeout)
            try:
                try:
                    lock.acquire(timeout=0)
                except Timeout:  # say what we wait for, then wait (quiet with -q: a warning)
                    holder = _lock_holder(path)
                    log.warning(
                        "waiting for the cache lock on %s %s, held by another mde process%s; giving up after %.0fs",
                        instrument,
                        tf,
                        holder,
                        self.lock_timeout,
                    )
                    lock.acquire()
            except Timeout:
                raise CacheError(
                    f"another mde process has held the lock on {instrument} {tf} for {self.lock_timeout:.0f}s; try again"
                ) from None
            try:
                self._recover_swap(folder)
                folder.mkdir(exist_ok=True)
                for stale in folder.glob(".*.tmp"):  # left by a writer that was killed
                    stale.unlink(missing_ok=True)
                yield folder
            finally:
                lock.release()

    @staticmethod
    def _recover_swap(folder: Path) -> None:
        """Finish or undo a whole-series replacement that a crash interrupted."""
        old = folder.parent / f".{folder.name}.old"
        new = folder.parent / f".{folder.name}.new"
        if old.exists():
            if folder.exists():
                shutil.rmtree(old)  # the swap happened; only the clean-up was missed
            else:
                os.replace(old, folder)  # crashed between the two renames: the old series stands
        if new.exists():
            shutil.rmtree(new)

    @staticmethod
    def _parquet_bytes(df: pl.DataFrame) -> bytes:
        """The partition file's bytes, encoded in memory: the disk is then written by Python,
        whose OSError (a full disk) says what happened, not a polars ComputeError."""
        buf = io.BytesIO()
        df.write_parquet(buf, compression="zstd", statistics=True, row_group_size=ROW_GROUP_SIZE)
        return buf.getvalue()

    def _stage_parquet(self, staged: Staged, df: pl.DataFrame, path: Path) -> os.stat_result:
        """Stage `df` as the new `path`; returns the stat it will have (its stamp and entry)."""
        return staged.put(path, self._parquet_bytes(df))

    @staticmethod
    def _stage_manifest(staged: Staged, folder: Path, manifest: Manifest) -> None:
        staged.put(folder / MANIFEST, manifest.to_json().encode())

    @staticmethod
    @contextmanager
    def _staging(folder: Path) -> Iterator[Staged]:
        """Files of `folder` that change together; nothing changes unless the block succeeds."""
        staged = Staged(folder)
        try:
            yield staged
        except BaseException:
            staged.abort()
            raise

    def write(
        self,
        instrument: Instrument,
        tf: Timeframe,
        candles: pl.DataFrame,
        *,
        source: str,
        covered: Range | None = None,
        now: datetime,
        empty: Range | None = None,
        origin: str | None = None,
        replace: Range | None = None,
    ) -> WriteResult:
        """Merge `candles` into the series (new wins on equal ts) and record `covered` as answered
        (and `empty` as answered with no candle).

        `origin="ticks"`: the candles were built from live ticks (`mde stream`), recorded in the
        manifest's `ticks` ranges; a write of the source's own answer (origin None) removes
        the ranges it covers or rewrites. `replace=(lo, hi)`: cached candles with lo <= ts <= hi
        are dropped in the same atomic write (reconciliation: the source's answer replaces a
        streamed day whole, a candle Kite does not have included)."""
        candles = normalize(candles)
        if tf.is_daily:
            candles = normalize_daily(candles)
        with self.lock(instrument, tf) as folder:
            manifest = self._manifest_or_rebuilt(instrument, tf, folder, source) or Manifest(
                instrument.key, tf.name, source
            )
            if manifest.source != source:
                last = (manifest.last_ts or now).astimezone(IST).date() + timedelta(days=1)
                raise InputError(
                    f"{instrument} {tf} in the cache came from '{manifest.source}'; refusing to mix in '{source}' "
                    f"candles. Use another cache dir (MDE_CACHE_DIR), or drop the series first: run "
                    f"`mde prune --before {last} --symbol {shlex.quote(instrument.key)} --timeframe {tf}`"
                )
            added = replaced = 0
            written: dict[str, tuple[pl.DataFrame, os.stat_result]] = {}
            counted: dict[str, dict[str, int]] = {}
            bad_written: dict[str, int] = {}
            with self._staging(folder) as staged:
                parts: list[tuple[str, pl.DataFrame]] = []
                if not candles.is_empty():
                    keyed = candles.with_columns(_partition_expr(tf).alias("_part"))
                    parts = [
                        (str(key), part.drop("_part")) for (key,), part in keyed.group_by("_part", maintain_order=True)
                    ]
                if replace is not None:
                    lo_r, hi_r = replace
                    touched = {
                        p.stem
                        for p in _partitions_in(folder)
                        if not self._read_file(p).filter(pl.col("ts").is_between(lo_r, hi_r)).is_empty()
                    }
                    parts += [(key, empty_candles()) for key in sorted(touched - {k for k, _ in parts})]
                for key, part in parts:
                    path = folder / f"{key}.parquet"
                    old = self._read_file(path)
                    if replace is not None:
                        kept = old.filter(~pl.col("ts").is_between(replace[0], replace[1]))
                        old = kept
                    merged = merge_candles(old, part)
                    new_rows = merged.height - old.height
                    added += new_rows
                    replaced += part.height - new_rows
                    # every rule is about one row, so a partition checked clean stays clean when only
                    # clean candles come in: then only the new ones are checked (a live tick's few)
                    bad = _implausible(part, tf)
                    for name, n in bad.items():
                        bad_written[name] = bad_written.get(name, 0) + n
                    prior = manifest.partitions.get(str(key))
                    clean_before = old.is_empty() or (
                        prior is not None and prior.get("implausible") == {} and _entry_matches(prior, path.stat())
                    )
                    counted[str(key)] = (
                        {} if clean_before and not bad else (bad if old.is_empty() else _implausible(merged, tf))
                    )
                    written[str(key)] = (merged, self._stage_parquet(staged, merged, path))
                manifest.coverage = union_ranges([*manifest.coverage, *([covered] if covered else [])])
                if covered:
                    manifest.empty = subtract_ranges(manifest.empty, covered)
                if empty:
                    manifest.empty = union_ranges([*manifest.empty, empty])
                spans = _spans(candles, tf)
                if origin == "ticks":
                    manifest.ticks = union_ranges([*manifest.ticks, *spans])
                elif manifest.ticks:
                    for cut in [*spans, *([covered] if covered else []), *([replace] if replace else [])]:
                        manifest.ticks = subtract_ranges(manifest.ticks, cut)
                self._refresh_manifest(folder, manifest, now, written, counted)
                self._stage_manifest(staged, folder, manifest)
                staged.commit()
            self._remember_written(folder, written)
            return WriteResult(added=added, replaced=replaced, rows=manifest.rows, implausible=bad_written)

    def _remember_written(self, folder: Path, written: dict[str, tuple[pl.DataFrame, os.stat_result]]) -> None:
        for key, (df, st) in written.items():  # a rename keeps inode, mtime and size
            self._remember(folder / f"{key}.parquet", _stamp(st), df)

    def _refresh_manifest(
        self,
        folder: Path,
        manifest: Manifest,
        now: datetime,
        written: dict[str, tuple[pl.DataFrame, os.stat_result]],
        counted: dict[str, dict[str, int]] | None = None,
        removed: frozenset[str] = frozenset(),
    ) -> None:
        """Bring the manifest in line with the partition files as they will be (nothing is written).

        `written` holds the frames this write is putting in the folder (by partition key), so
        their entries need no read, with `counted` their implausible candles by rule when this
        write counted them; `removed` the partitions it is deleting. Every other file
        keeps its entry if the entry still matches its size and mtime, and is read (normally
        from the read cache) only if it does not.
        """
        parts: dict[str, dict[str, Any]] = {}
        try:
            tf: Timeframe | None = parse(manifest.timeframe)
        except InputError:
            tf = None
        names = sorted({p.stem for p in _partitions_in(folder)} - removed | set(written))
        for stem in names:
            path = folder / f"{stem}.parquet"
            if stem in written:
                df, st = written[stem]
            else:
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                entry = manifest.partitions.get(stem)
                if _entry_matches(entry, st):
                    parts[stem] = entry
                    continue
                df = self._read_file(path)
            if not df.is_empty():
                parts[stem] = _entry(df, st, tf, (counted or {}).get(stem))
        firsts = [_instant(e["first"]) for e in parts.values()]
        lasts = [_instant(e["last"]) for e in parts.values()]
        manifest.partitions = parts
        manifest.rows = sum(e["rows"] for e in parts.values())
        manifest.first_ts = min(firsts) if firsts else None
        manifest.last_ts = max(lasts) if lasts else None
        manifest.updated_at = now

    def replace_series(
        self,
        instrument: Instrument,
        tf: Timeframe,
        candles: pl.DataFrame,
        *,
        source: str,
        coverage: list[Range],
        now: datetime,
    ) -> WriteResult:
        """Swap in a whole new series in one step (Kite re-adjusted the past: never mix old and new).

        The new files are written to `.<tf>.new/`, then the folders are swapped by two renames
        under the lock; a crash in between is repaired by the next writer (`_recover_swap`),
        and a failed write (a full disk) removes the staging folder and changes nothing.
        """
        candles = normalize(candles)
        if tf.is_daily:
            candles = normalize_daily(candles)
        with self.lock(instrument, tf) as folder:
            before = sum(
                int(m.get("rows", 0))
                for m in ((self.manifest(instrument, tf) or Manifest("", "", "")).partitions.values())
            )
            staging = folder.parent / f".{tf.name}.new"
            staging.mkdir()
            written: dict[str, tuple[pl.DataFrame, os.stat_result]] = {}
            try:
                with self._staging(staging) as staged:
                    keyed = candles.with_columns(_partition_expr(tf).alias("_part"))
                    for (key,), part in keyed.group_by("_part", maintain_order=True):
                        part = part.drop("_part")
                        written[str(key)] = (part, self._stage_parquet(staged, part, staging / f"{key}.parquet"))
                    manifest = Manifest(instrument.key, tf.name, source, coverage=union_ranges(coverage))
                    self._refresh_manifest(staging, manifest, now, written)
                    self._stage_manifest(staged, staging, manifest)
                    staged.commit()
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            old = folder.parent / f".{tf.name}.old"
            os.replace(folder, old)
            os.replace(staging, folder)
            fsync_dir(folder.parent)
            shutil.rmtree(old)
            self._remember_written(folder, written)
            return WriteResult(
                added=max(0, candles.height - before),
                replaced=min(before, candles.height),
                rows=candles.height,
                implausible=manifest.implausible,
            )

    def prune_plan(
        self, instrument: Instrument, tf: Timeframe, before: datetime
    ) -> tuple[list[str], int, dict[str, pl.DataFrame]]:
        """What `prune` would do, with no lock and no write: (partitions affected, candles
        dropped, the kept part of each affected partition). Reads every file it would touch
        and the manifest, so an unreadable one is a CacheError before anything changes."""
        folder = self.series_dir(instrument, tf)
        manifest = self.manifest(instrument, tf)
        hi = partition_key(before.astimezone(IST), tf)
        affected: list[str] = []
        dropped = 0
        keep: dict[str, pl.DataFrame] = {}
        for path in _partitions_in(folder):
            if path.stem != "all" and path.stem > hi:
                continue  # starts after `before`: nothing in it goes
            df = self._read_file(path)
            kept = df.filter(pl.col("ts") >= before)
            if kept.height == df.height:
                continue
            affected.append(path.stem)
            dropped += df.height - kept.height
            keep[path.stem] = kept
        if affected and manifest is not None:  # the files the manifest's update would read
            for path in _partitions_in(folder):
                if path.stem not in keep and not _entry_matches(manifest.partitions.get(path.stem), path.stat()):
                    self._read_file(path)
        return affected, dropped, keep

    def prune(
        self, instrument: Instrument, tf: Timeframe, before: datetime, *, now: datetime, dry_run: bool = False
    ) -> tuple[list[str], int]:
        """Drop candles with ts < before: whole partitions go, a straddling one is rewritten.

        Returns (partition names affected, candles dropped). A dry run takes no lock and
        writes nothing (it works on a read-only cache). The series changes in one step: the
        rewritten partition and the manifest are staged first, then renamed, then the old
        partitions removed.
        """
        if dry_run:
            affected, dropped, _ = self.prune_plan(instrument, tf, before)
            return affected, dropped
        with self.lock(instrument, tf) as folder:
            affected, dropped, keep = self.prune_plan(instrument, tf, before)
            if not affected:
                return affected, dropped
            manifest = self.manifest(instrument, tf)
            gone = frozenset(stem for stem in affected if keep[stem].is_empty())
            remaining = {p.stem for p in _partitions_in(folder)} - gone
            written: dict[str, tuple[pl.DataFrame, os.stat_result]] = {}
            with self._staging(folder) as staged:
                for stem in affected:
                    if stem not in gone:
                        written[stem] = (
                            keep[stem],
                            self._stage_parquet(staged, keep[stem], folder / f"{stem}.parquet"),
                        )
                remove = [folder / f"{stem}.parquet" for stem in sorted(gone)]
                if not remaining:
                    remove.append(folder / MANIFEST)  # nothing left: the series is gone
                elif manifest is not None:
                    manifest.coverage = [(max(a, before), b) for a, b in manifest.coverage if b > before]
                    manifest.empty = [(max(a, before), b) for a, b in manifest.empty if b > before]
                    self._refresh_manifest(folder, manifest, now, written, removed=gone)
                    self._stage_manifest(staged, folder, manifest)
                staged.commit(remove)
            self._remember_written(folder, written)
            return affected, dropped
