"""TradeState: the journal of one paper session, in a SQLite file that a crash cannot lose.

Everything a session does is an append-only event (decision, order, fill, risk rejection,
halt, ...) committed before it is shown or acted on, together with the last processed candle
of each series in the same transaction, so a restart knows exactly where it stopped: no
candle is processed twice or skipped. WAL mode lets `mde paper --status` and the HTTP API
read while the session writes. One process at a time owns a session (a lock file beside it).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CacheError, InputError, MdeError
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


class SessionBusy(MdeError):
    """Another process runs this session."""

    exit_code = 2


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
    lock.release()
    return False


class TradeState:
    """Open (or create) a session journal. Use as a context manager; `own()` takes the session."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock: Any = None
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")  # a committed fill survives a power cut
            self.db.executescript(SCHEMA)
            found = self.db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
            if found is None:
                self.db.execute("INSERT INTO meta VALUES ('format', ?)", (FORMAT,))
            elif found[0] != FORMAT:
                raise CacheError(f"{self.path} is a session journal of format {found[0]}; this mde reads {FORMAT}")
        except sqlite3.DatabaseError as exc:
            raise CacheError(f"{self.path} is not a readable session journal ({exc}); move it aside") from None

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
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

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

    def processed(self, series: str, close_us: int, events: Sequence[tuple[str, int, Mapping[str, Any], str | None]] = ()) -> None:
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
