"""TradeState: the journal of one paper session, in a SQLite file that a crash cannot lose.

Everything a session does is an append-only event (decision, order, fill, risk rejection,
halt, ...) committed before it is shown or acted on, together with the last processed candle
of each series in the same transaction, so a restart knows exactly where it stopped: no
candle is processed twice or skipped. WAL mode lets `mde paper --status` and the HTTP API
read while the session writes. One process at a time owns a session (a lock file beside it).

Every journal is checked at open (`PRAGMA quick_check`): a corrupt page or a 0-byte file is a
CacheError naming it, never a fresh session over it. `TradeState(path, readonly=True)` opens
for reading only (`mode=ro`, falling back to `immutable=1` where the folder cannot be written,
e.g. a read-only file system), so `mde paper --status` works on a read-only cache and
leaves no file behind.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import (
    CacheError,
    InputError,
    SessionBusy as SessionBusy,  # re-exported: its old home
)
from ..symbols import check_not_reserved, safe_name, unsafe_name

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_us INTEGER NOT NULL,          -- the session clock when it happened (epoch microseconds)
    kind TEXT NOT NULL,              -- decision | order | fill | reject | risk | halt | note ...
    symbol TEXT,
    payload TEXT NOT NULL            -- JSON
);
CREATE INDEX IF NOT EXISTS events_kind ON events (kind, seq);
CREATE TABLE IF NOT EXISTS progress (series TEXT PRIMARY KEY, last_close_us INTEGER NOT NULL);
"""
FORMAT = "1"


@dataclass(frozen=True)
class Event:
    seq: int
    ts_us: int
    kind: str
    symbol: str | None
    payload: dict[str, Any]


def session_path(folder: Path, name: str) -> Path:
    """`<folder>/<name>.sqlite`; the name is validated like a symbol so it cannot escape the folder."""
    text = name.strip()
    if not text or len(text) > 64 or not all(c.isalnum() or c in "-_" for c in text):
        raise InputError(f"invalid session name {name!r}: use letters, digits, '-' and '_' (up to 64)")
    check_not_reserved(text, "session name")
    return folder / f"{safe_name(text)}.sqlite"


OWN_WAIT_S = 1.0


def _flock_held(lock_path: Path) -> bool:
    """Whether a process holds the lock file, asked without write access (a read-only cache)."""
    try:
        import fcntl
    except ImportError:  # Windows: a lock file we cannot open is not held by a running session
        return False
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we took
    return False


def owner_alive(path: Path) -> bool:
    """Whether a process runs the session of this journal now (it holds the session's lock).

    A journal that says "running" but has no owner was stopped (kill -9, a crash, a closed
    terminal): it resumes with the same --session. Probing takes the lock for a moment only
    when it is free, and never creates a lock file.
    """
    from filelock import FileLock, Timeout

    lock_path = path.with_suffix(".lock")
    if not lock_path.exists():
        return False
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    except OSError:  # the lock file cannot be opened for writing (a read-only cache)
        return _flock_held(lock_path)
    lock.release()
    return False


def _corrupt(path: Path, why: object) -> CacheError:
    return CacheError(
        f"paper journal {path} is corrupt ({why}); move it aside (the other sessions are unaffected) "
        "and start a new --session"
    )


def _db_error(path: Path, exc: sqlite3.Error) -> CacheError:
    """The one-line CacheError for an SQLite error on a journal: the cache cannot be written
    (read-only, full), or the journal is corrupt."""
    from ..store import write_error

    code = getattr(exc, "sqlite_errorcode", None)
    cache = path.parents[1]  # <cache>/_paper/<name>.sqlite
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN) and not os.access(path.parent, os.W_OK):
        mapped = write_error(cache, OSError(errno.EROFS if _read_only_fs(path.parent) else errno.EACCES, ""))
        if mapped is not None:
            return mapped
    if code == sqlite3.SQLITE_FULL:
        return write_error(cache, OSError(errno.ENOSPC, "")) or _corrupt(path, exc)
    return _corrupt(path, exc)


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):
        return False


class TradeState:
    """Open (or create) a session journal. Use as a context manager; `own()` takes the session.

    `readonly=True` opens an existing journal for reading only (status, the HTTP API).
    """

    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self._lock: Any = None
        self.readonly = readonly
        if self.path.is_file() and self.path.stat().st_size == 0:
            raise _corrupt(self.path, "an empty file, 0 bytes")
        if readonly:
            self.db = self._open_readonly()
        else:
            self.db = self._open_writable()

    def _open_writable(self) -> sqlite3.Connection:
        from ..store import write_error

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            mapped = write_error(self.path.parents[1], exc)
            if mapped is not None:
                raise mapped from exc
            raise CacheError(
                f"cannot create the paper journal folder {self.path.parent}: {exc.strerror or exc}"
            ) from exc
        db = None
        try:
            if not self.path.exists():
                self._create()
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self._check(db)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a committed fill survives a power cut
            db.executescript(SCHEMA)
            found = db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
            if found is None:
                db.execute("INSERT INTO meta VALUES ('format', ?)", (FORMAT,))
            elif found[0] != FORMAT:
                raise CacheError(f"{self.path} is a session journal of format {found[0]}; this mde reads {FORMAT}")
        except sqlite3.Error as exc:
            if db is not None:
                db.close()
            raise _db_error(self.path, exc) from exc
        except BaseException:
            if db is not None:
                db.close()
            raise
        return db

    def _create(self) -> None:
        """A new journal appears whole: its schema is made in a temporary file that is then
        linked into place, so a kill while it is made leaves no 0-byte or half-made journal
        (which would read as corrupt) but nothing at all, and the same --session starts afresh."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.new")
        try:
            db = sqlite3.connect(tmp, isolation_level=None, timeout=30)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(SCHEMA)
                db.execute("INSERT INTO meta VALUES ('format', ?)", (FORMAT,))
            finally:
                db.close()
            try:
                os.link(tmp, self.path)  # fails if another process made it meanwhile: theirs is kept
            except FileExistsError:
                pass
            except OSError:  # no hard links on this file system
                if not self.path.exists():
                    os.replace(tmp, self.path)
        finally:
            for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
                try:
                    leftover.unlink(missing_ok=True)
                except OSError:
                    pass  # a read-only folder: nothing was made there either

    def _open_readonly(self) -> sqlite3.Connection:
        uri = self.path.resolve().as_uri()  # file:///... (percent-encoded; C:/ on Windows)
        last: sqlite3.Error | None = None
        # No -wal file: no process has the journal open (a session keeps it while it runs),
        # so the file is read as it is (immutable: no -wal/-shm files are made beside it,
        # and it works on a read-only file system). With one, mode=ro reads beside the
        # running session through the WAL; where SQLite cannot make its WAL index there
        # (a read-only file system) nobody can be writing, and it is read as immutable.
        wal = self.path.with_name(self.path.name + "-wal")
        tries = ("?mode=ro", "?mode=ro&immutable=1") if wal.exists() else ("?mode=ro&immutable=1",)
        for suffix in tries:
            db = None
            try:
                db = sqlite3.connect(uri + suffix, uri=True, isolation_level=None, timeout=30)
                self._check(db)
                found = db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
            except sqlite3.OperationalError as exc:
                if db is not None:
                    db.close()
                last = exc
                if "no such table" in str(exc):
                    raise _corrupt(self.path, "not a session journal: it has no meta table") from exc
                continue
            except sqlite3.Error as exc:
                if db is not None:
                    db.close()
                raise _db_error(self.path, exc) from exc
            if found is not None and found[0] != FORMAT:
                db.close()
                raise CacheError(f"{self.path} is a session journal of format {found[0]}; this mde reads {FORMAT}")
            return db
        assert last is not None
        raise _db_error(self.path, last) from last

    def _check(self, db: sqlite3.Connection) -> None:
        """SQLite's quick_check: a damaged page is found at open, not in the middle of a session."""
        rows = db.execute("PRAGMA quick_check").fetchall()
        if rows != [("ok",)]:
            lines = [
                ln.strip() for r in rows for ln in str(r[0]).splitlines() if ln.strip() and not ln.startswith("***")
            ]
            first = lines[0] if lines else "quick_check failed"
            more = f", and {len(lines) - 1} more problem(s)" if len(lines) > 1 else ""
            raise _corrupt(self.path, f"{first[:120]}{more}")

    def __enter__(self) -> TradeState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self.db.close()

    # -- ownership ----------------------------------------------------------------------
    def own(self) -> None:
        """Take the session for this process, or fail at once if another process has it."""
        from filelock import FileLock, Timeout

        # a short wait, not none: `mde paper --status` probes the lock for a moment (owner_alive)
        lock = FileLock(str(self.path.with_suffix(".lock")), timeout=OWN_WAIT_S)
        try:
            lock.acquire()
        except Timeout:
            raise SessionBusy(
                f"session {unsafe_name(self.path.stem)} is running in another process; use `mde paper --status` "
                "to watch it or `mde paper --halt` to stop it"
            ) from None
        self._lock = lock
        self.set_meta({"pid": str(os.getpid())})

    # -- writing: each call is one committed transaction ------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Several records that must land together (a candle's fills and its progress mark)."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _db_error(self.path, exc) from exc
        try:
            yield self.db
        except BaseException as exc:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite rolled back already (a full disk, an I/O error)
            if isinstance(exc, sqlite3.Error):
                raise _db_error(self.path, exc) from exc
            raise
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _db_error(self.path, exc) from exc

    def set_meta(self, values: Mapping[str, str]) -> None:
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, str(v)) for k, v in values.items()])

    def record(self, kind: str, ts_us: int, payload: Mapping[str, Any], symbol: str | None = None) -> int:
        """Append one event and commit it; returns its sequence number."""
        with self.transaction() as db:
            return self._append(db, kind, ts_us, payload, symbol)

    @staticmethod
    def _append(db: sqlite3.Connection, kind: str, ts_us: int, payload: Mapping[str, Any], symbol: str | None) -> int:
        cur = db.execute(
            "INSERT INTO events (ts_us, kind, symbol, payload) VALUES (?, ?, ?, ?)",
            (ts_us, kind, symbol, json.dumps(payload, sort_keys=True, default=str)),
        )
        return int(cur.lastrowid or 0)

    def journal(self, events: Sequence[tuple[str, int, Mapping[str, Any], str | None]]) -> None:
        """Append several events in one commit (a tick's fills at the last traded price)."""
        if events:
            with self.transaction() as db:
                for kind, ts_us, payload, symbol in events:
                    self._append(db, kind, ts_us, payload, symbol)

    def processed(
        self, series: str, close_us: int, events: Sequence[tuple[str, int, Mapping[str, Any], str | None]] = ()
    ) -> None:
        """Mark a candle of `series` processed, with the events it produced, in one commit."""
        with self.transaction() as db:
            for kind, ts_us, payload, symbol in events:
                self._append(db, kind, ts_us, payload, symbol)
            db.execute(
                "INSERT INTO progress VALUES (?, ?) ON CONFLICT(series) DO UPDATE SET last_close_us = excluded.last_close_us",
                (series, close_us),
            )

    # -- reading ------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM meta").fetchall())

    def events(self, kind: str | None = None, after: int = 0) -> list[Event]:
        sql = "SELECT seq, ts_us, kind, symbol, payload FROM events WHERE seq > ?"
        args: tuple[Any, ...] = (after,)
        if kind is not None:
            sql += " AND kind = ?"
            args += (kind,)
        rows = self.db.execute(sql + " ORDER BY seq", args).fetchall()
        return [Event(seq, ts, k, sym, json.loads(p)) for seq, ts, k, sym, p in rows]

    def progress(self) -> dict[str, int]:
        """series -> close time (epoch us) of the last candle processed."""
        return dict(self.db.execute("SELECT series, last_close_us FROM progress").fetchall())
