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
Parquet files are the truth; the manifest is a summary that every write brings up to date.
Each manifest entry carries its file's size and mtime: a write recomputes the entries of the
files it wrote and of any file whose size or mtime no longer match (written by a writer that
crashed before its manifest, or by hand), and keeps the others as they are.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl

from .atomic import atomic_write, fsync_dir
from .calendar import IST
from .errors import CacheError, InputError
from .symbols import Instrument, safe_name, unsafe_name
from .timeframes import Timeframe, parse

log = logging.getLogger("mde.store")
TS_DTYPE = pl.Datetime("us", "Asia/Kolkata")
COLUMNS: dict[str, pl.DataType] = {
    "ts": TS_DTYPE,
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Int64(),
}
OPTIONAL_COLUMNS: dict[str, pl.DataType] = {"oi": pl.Int64()}
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
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


def empty_candles() -> pl.DataFrame:
    return pl.DataFrame(schema=COLUMNS)


def _is_normalized(df: pl.DataFrame) -> bool:
    """Already in the cache schema, in column order, with ts sorted, unique and never null."""
    schema = df.schema
    names = list(schema)
    if names != [*COLUMNS] and names != [*COLUMNS, *OPTIONAL_COLUMNS]:
        return False
    if any(schema[name] != dtype for name, dtype in (*COLUMNS.items(), *OPTIONAL_COLUMNS.items()) if name in schema):
        return False
    ts = df.get_column("ts")
    return ts.null_count() == 0 and ts.is_sorted() and ts.n_unique() == ts.len()


def normalize(df: pl.DataFrame) -> pl.DataFrame:
    """Cast to the cache schema (tz-aware IST ts, float prices, int volume), sorted, unique ts.

    A frame that is already normalized is returned as it is (the engine normalizes before
    dropping incomplete candles, and the store again before writing)."""
    if _is_normalized(df):
        return df
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"candles lack column(s) {', '.join(missing)}; expected ts, open, high, low, close, volume")
    ts = df.get_column("ts")
    if ts.dtype == pl.String:
        ts = ts.str.to_datetime(time_zone="Asia/Kolkata", time_unit="us")
    elif isinstance(ts.dtype, pl.Datetime):
        ts = ts.dt.replace_time_zone("Asia/Kolkata") if ts.dtype.time_zone is None else ts.dt.convert_time_zone("Asia/Kolkata")  # type: ignore[union-attr]
    cols = [ts.cast(TS_DTYPE).alias("ts")]
    cols += [pl.col(c).cast(pl.Float64) for c in ("open", "high", "low", "close")]
    cols.append(pl.col("volume").cast(pl.Float64).round(0).cast(pl.Int64))
    if "oi" in df.columns:
        cols.append(pl.col("oi").cast(pl.Float64).round(0).cast(pl.Int64))
    out = df.select(cols)
    if out.get_column("ts").null_count():
        raise InputError("candles contain an empty timestamp")
    return out.unique(subset="ts", keep="last", maintain_order=True).sort("ts")


def normalize_daily(df: pl.DataFrame) -> pl.DataFrame:
    """Daily candles stamped 00:00 IST, one per day. Kite's old BANKNIFTY days carry odd
    times (09:15, 11:54:10) and four 2015 dates have two rows: those are folded into one."""
    if df.is_empty():
        return df
    day = pl.col("ts").dt.truncate("1d")
    if df.select((pl.col("ts") == day).all() & day.is_unique().all()).item():
        return df
    return df.with_columns(day.alias("ts")).group_by("ts", maintain_order=True).agg(ohlcv_aggs(df.columns)).sort("ts")


def ohlcv_aggs(columns: list[str]) -> list[pl.Expr]:
    """How candles combine: open first, high max, low min, close last, volume sum
    (null if no part has a volume), oi last."""
    aggs = [
        pl.col("open").first(),
        pl.col("high").max(),
        pl.col("low").min(),
        pl.col("close").last(),
        pl.when(pl.col("volume").is_not_null().any()).then(pl.col("volume").sum()).alias("volume"),
    ]
    if "oi" in columns:
        aggs.append(pl.col("oi").last())
    return aggs


def merge_candles(old: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """Union by ts; for a ts in both, the new candle wins. Sorted and unique."""
    if old.is_empty():
        return new
    if new.is_empty():
        return old
    return pl.concat([old, new], how="diagonal_relaxed").unique(subset="ts", keep="last", maintain_order=True).sort("ts")


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


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.astimezone(IST).isoformat()


def _from_iso(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).astimezone(IST)


def _epoch_us(text: str) -> int:
    return (datetime.fromisoformat(text) - _EPOCH) // _US


Stamp = tuple[int, int, int]  # (inode, mtime_ns, size): a file replaced or rewritten gets a new one


def _stamp(st: os.stat_result) -> Stamp:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _entry(df: pl.DataFrame, st: os.stat_result) -> dict:
    """The manifest's summary of one partition file."""
    ts = df.get_column("ts")
    return {"rows": df.height, "first": _iso(ts[0]), "last": _iso(ts[-1]), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _is_instant(text: object) -> bool:
    try:
        return isinstance(text, str) and datetime.fromisoformat(text).tzinfo is not None
    except ValueError:
        return False


def _entry_matches(entry: dict | None, st: os.stat_result) -> bool:
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
    partitions: dict[str, dict] = field(default_factory=dict)

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
                "partitions": self.partitions,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw = json.loads(text)
        return cls(
            instrument=raw["instrument"],
            timeframe=raw["timeframe"],
            source=raw["source"],
            rows=int(raw.get("rows", 0)),
            first_ts=_from_iso(raw.get("first_ts")),
            last_ts=_from_iso(raw.get("last_ts")),
            updated_at=_from_iso(raw.get("updated_at")),
            coverage=[(_from_iso(a), _from_iso(b)) for a, b in raw.get("coverage", [])],  # type: ignore[misc]
            partitions=dict(raw.get("partitions", {})),
        )


@dataclass(frozen=True)
class WriteResult:
    added: int  # candles whose ts was not cached before
    replaced: int  # cached candles overwritten (same ts)
    rows: int  # rows in the series afterwards


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


class NotInMemory(Exception):
    """A read inside `CandleStore.memory_only()` would have decoded a file (or asked a source)."""


class CandleStore:
    """Read and write candle series under one cache folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
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
                "move it aside and run `mde fetch` for that period again"
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

    def _decode_batch(self, misses: list[tuple[Path, os.stat_result]], *, contiguous: bool = False
                      ) -> tuple[pl.DataFrame, list[tuple[Path, os.stat_result, dict]]] | None:
        """One frame for the files the manifest vouches for (see `_read_batch`), with them."""
        folder = misses[0][0].parent
        try:
            entries = Manifest.from_json((folder / MANIFEST).read_text(encoding="utf-8")).partitions
        except Exception:  # missing or unreadable manifest: file by file
            return None
        batch = [(path, st, entries[path.stem]) for path, st in misses if path.parent == folder and _entry_matches(entries.get(path.stem), st)]
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
        self, instrument: Instrument, tf: Timeframe, start: datetime | None = None, end: datetime | None = None,
        *, remember: bool = True,
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
        path = self.series_dir(instrument, tf) / MANIFEST
        try:
            return Manifest.from_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise CacheError(f"{path} is not a valid manifest ({exc}); move it aside and mde rebuilds it") from None

    def list_series(self) -> list[tuple[Instrument, Timeframe]]:
        out = []
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
    def lock(self, instrument: Instrument, tf: Timeframe) -> Iterator[Path]:
        """Serialise writers of one series across processes (cron refresh vs a paper session).

        The lock file sits beside the series folder (`.<tf>.lock`), so a whole-series
        replacement can swap the folder while holding it.
        """
        from filelock import FileLock, Timeout

        folder = self.series_dir(instrument, tf)
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"cannot create cache folder {folder.parent}: {exc.strerror}") from None
        path = folder.parent / f".{tf.name}.lock"
        lock = FileLock(str(path), timeout=self.lock_timeout)
        try:
            try:
                lock.acquire(timeout=0)
            except Timeout:  # say what we wait for, then wait (quiet with -q: a warning)
                holder = _lock_holder(path)
                log.warning(
                    "waiting for the cache lock on %s %s, held by another mde process%s; giving up after %.0fs",
                    instrument, tf, holder, self.lock_timeout,
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

    def _write_parquet(self, df: pl.DataFrame, path: Path) -> os.stat_result:
        """Replace `path` with `df`; returns the new file's stat (its stamp and manifest entry)."""
        with atomic_write(path) as fh:
            df.write_parquet(fh, compression="zstd", statistics=True, row_group_size=ROW_GROUP_SIZE)
        return path.stat()

    def _write_manifest(self, folder: Path, manifest: Manifest) -> None:
        with atomic_write(folder / MANIFEST, "w") as fh:
            fh.write(manifest.to_json())

    def write(
        self,
        instrument: Instrument,
        tf: Timeframe,
        candles: pl.DataFrame,
        *,
        source: str,
        covered: Range | None = None,
        now: datetime,
    ) -> WriteResult:
        """Merge `candles` into the series (new wins on equal ts) and record `covered` as answered."""
        candles = normalize(candles)
        if tf.is_daily:
            candles = normalize_daily(candles)
        with self.lock(instrument, tf) as folder:
            manifest = self.manifest(instrument, tf) or Manifest(instrument.key, tf.name, source)
            if manifest.source != source:
                raise InputError(
                    f"{instrument} {tf} in the cache came from '{manifest.source}'; refusing to mix in '{source}' "
                    f"candles. Use another cache dir (MDE_CACHE_DIR) or `mde prune` this series first"
                )
            added = replaced = 0
            written: dict[str, tuple[pl.DataFrame, os.stat_result]] = {}
            if not candles.is_empty():
                keyed = candles.with_columns(_partition_expr(tf).alias("_part"))
                for (key,), part in keyed.group_by("_part", maintain_order=True):
                    path = folder / f"{key}.parquet"
                    old = self._read_file(path)
                    part = part.drop("_part")
                    merged = merge_candles(old, part)
                    new_rows = merged.height - old.height
                    added += new_rows
                    replaced += part.height - new_rows
                    st = self._write_parquet(merged, path)
                    self._remember(path, _stamp(st), merged)
                    written[str(key)] = (merged, st)
            manifest.coverage = union_ranges([*manifest.coverage, *([covered] if covered else [])])
            self._refresh_manifest(folder, manifest, now, written)
            return WriteResult(added=added, replaced=replaced, rows=manifest.rows)

    def _refresh_manifest(
        self, folder: Path, manifest: Manifest, now: datetime, written: dict[str, tuple[pl.DataFrame, os.stat_result]]
    ) -> None:
        """Bring the manifest in line with the partition files and write it.

        `written` holds the frames this write just put in the folder (by partition key), so
        their entries need no read. Every other file keeps its entry if the entry still matches
        its size and mtime, and is read (normally from the read cache) only if it does not.
        """
        parts: dict[str, dict] = {}
        for path in _partitions_in(folder):
            if path.stem in written:
                df, st = written[path.stem]
            else:
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                entry = manifest.partitions.get(path.stem)
                if _entry_matches(entry, st):
                    parts[path.stem] = entry  # type: ignore[assignment]
                    continue
                df = self._read_file(path)
            if not df.is_empty():
                parts[path.stem] = _entry(df, st)
        firsts = [_from_iso(e["first"]) for e in parts.values()]
        lasts = [_from_iso(e["last"]) for e in parts.values()]
        manifest.partitions = parts
        manifest.rows = sum(e["rows"] for e in parts.values())
        manifest.first_ts = min(firsts) if firsts else None  # type: ignore[type-var]
        manifest.last_ts = max(lasts) if lasts else None  # type: ignore[type-var]
        manifest.updated_at = now
        self._write_manifest(folder, manifest)

    def replace_series(
        self, instrument: Instrument, tf: Timeframe, candles: pl.DataFrame, *, source: str, coverage: list[Range], now: datetime
    ) -> WriteResult:
        """Swap in a whole new series in one step (Kite re-adjusted the past: never mix old and new).

        The new files are written to `.<tf>.new/`, then the folders are swapped by two renames
        under the lock; a crash in between is repaired by the next writer (`_recover_swap`).
        """
        candles = normalize(candles)
        if tf.is_daily:
            candles = normalize_daily(candles)
        with self.lock(instrument, tf) as folder:
            before = sum(int(m.get("rows", 0)) for m in ((self.manifest(instrument, tf) or Manifest("", "", "")).partitions.values()))
            staging = folder.parent / f".{tf.name}.new"
            staging.mkdir()
            written: dict[str, tuple[pl.DataFrame, os.stat_result]] = {}
            keyed = candles.with_columns(_partition_expr(tf).alias("_part"))
            for (key,), part in keyed.group_by("_part", maintain_order=True):
                part = part.drop("_part")
                written[str(key)] = (part, self._write_parquet(part, staging / f"{key}.parquet"))
            manifest = Manifest(instrument.key, tf.name, source, coverage=union_ranges(coverage))
            self._refresh_manifest(staging, manifest, now, written)
            old = folder.parent / f".{tf.name}.old"
            os.replace(folder, old)
            os.replace(staging, folder)
            fsync_dir(folder.parent)
            shutil.rmtree(old)
            for key, (part, st) in written.items():  # a rename keeps inode, mtime and size
                self._remember(folder / f"{key}.parquet", _stamp(st), part)
            return WriteResult(added=max(0, candles.height - before), replaced=min(before, candles.height), rows=candles.height)

    def prune(
        self, instrument: Instrument, tf: Timeframe, before: datetime, *, now: datetime, dry_run: bool = False
    ) -> tuple[list[str], int]:
        """Drop candles with ts < before: whole partitions go, a straddling one is rewritten.

        Returns (partition names affected, candles dropped).
        """
        with self.lock(instrument, tf) as folder:
            affected: list[str] = []
            dropped = 0
            written: dict[str, tuple[pl.DataFrame, os.stat_result]] = {}
            for path in _partitions_in(folder):
                df = self._read_file(path)
                keep = df.filter(pl.col("ts") >= before)
                if keep.height == df.height:
                    continue
                affected.append(path.stem)
                dropped += df.height - keep.height
                if dry_run:
                    continue
                if keep.is_empty():
                    path.unlink()
                else:
                    st = self._write_parquet(keep, path)
                    self._remember(path, _stamp(st), keep)
                    written[path.stem] = (keep, st)
            if not dry_run and affected and not _partitions_in(folder):
                (folder / MANIFEST).unlink(missing_ok=True)  # nothing left: the series is gone
            elif not dry_run and affected:
                manifest = self.manifest(instrument, tf)
                if manifest is not None:
                    manifest.coverage = [(max(a, before), b) for a, b in manifest.coverage if b > before]
                    self._refresh_manifest(folder, manifest, now, written)
            return affected, dropped
