"""TradeState: the paper session journal survives kill -9 and belongs to one process at a time."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mde.errors import CacheError, InputError
from mde.paper.state import SessionBusy, TradeState, owner_alive, session_path

WRITER = """
import sys
from mde.paper.state import TradeState
state = TradeState(sys.argv[1])
n = len(state.progress()) and state.progress()["NIFTY:5m"] // 1000 or 0
print("ready", flush=True)
while True:
    n += 1
    state.processed("NIFTY:5m", n * 1000, [("order", n, {"n": n}, "NIFTY"), ("fill", n, {"n": n, "price": 100.0 + n}, "NIFTY"),
                                          ("decision", n, {"n": n}, "NIFTY")])
    print(n, flush=True)  # committed: the test kills after a random number of these, while the next one is written
"""


def test_events_and_progress_persist_across_reopen_in_wal_mode(tmp_path: Path) -> None:
    path = session_path(tmp_path, "day-1")
    with TradeState(path) as state:
        assert state.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        state.set_meta({"strategy": "sma_cross"})
        seq = state.record("note", 5, {"text": "hello"})
        state.processed("NIFTY:5m", 1_000, [("fill", 7, {"qty": 1, "price": 101.5}, "NIFTY")])
    with TradeState(path) as again:
        assert again.meta()["strategy"] == "sma_cross"
        assert [(e.seq, e.kind, e.payload) for e in again.events()] == [
            (seq, "note", {"text": "hello"}),
            (seq + 1, "fill", {"price": 101.5, "qty": 1}),
        ]
        assert [e.symbol for e in again.events("fill")] == ["NIFTY"]
        assert again.progress() == {"NIFTY:5m": 1_000}


def test_a_failed_transaction_leaves_no_trace(tmp_path: Path) -> None:
    with TradeState(tmp_path / "s.sqlite") as state:
        with pytest.raises(RuntimeError):
            with state.transaction() as db:
                state._append(db, "fill", 1, {"qty": 1}, "NIFTY")
                raise RuntimeError("crash between the fill and its progress mark")
        assert state.events() == [] and state.progress() == {}


def test_sigkill_during_writes_never_leaves_a_partial_candle(tmp_path: Path) -> None:
    path = tmp_path / "kill.sqlite"
    rng = random.Random(7)
    for _ in range(5):
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        for _ in range(rng.randint(2, 40)):  # not a sleep: a slow machine commits as many before the kill
            assert child.stdout.readline().strip().isdigit()
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        with TradeState(path) as state:
            assert state.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            done = state.progress().get("NIFTY:5m", 0) // 1000
            events = state.events()
            # every processed candle has exactly its three events, and no event lacks its candle
            assert len(events) == 3 * done
            assert [e.payload["n"] for e in state.events("fill")] == list(range(1, done + 1))
    assert done > 5


def test_a_session_belongs_to_one_process_until_it_dies(tmp_path: Path) -> None:
    path = session_path(tmp_path, "owned_by_one")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time\nfrom mde.paper.state import TradeState\ns=TradeState(sys.argv[1]); s.own(); print('owned', flush=True); time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "owned"
        with TradeState(path) as second:
            with pytest.raises(SessionBusy, match="^session owned_by_one is running in another process"):
                second.own()
            assert second.meta()["pid"] == str(holder.pid)
        assert owner_alive(path)  # what `mde paper --status` asks: "running" really runs
    finally:
        holder.kill()
        holder.wait()
    assert not owner_alive(path)  # killed: shown as "stopped" (it resumes with the same name)
    with TradeState(path) as third:
        third.own()  # the lock died with its process
        assert third.meta()["pid"] == str(os.getpid())


def test_bad_names_and_corrupt_files_are_clear_errors(tmp_path: Path) -> None:
    for bad in ("../x", "", "a/b", "x" * 65):
        with pytest.raises(InputError, match="invalid session name"):
            session_path(tmp_path, bad)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(CacheError, match="move it aside"):
        TradeState(junk)
    assert junk.read_bytes() == b"not a database at all" * 100  # nothing rewritten


def test_a_kill_while_a_journal_is_made_leaves_no_journal_and_the_session_starts_afresh(tmp_path: Path) -> None:
    """The schema is made in a temporary file linked into place: a process killed in the middle
    (here: the child SIGKILLs itself inside executescript) leaves nothing that reads as corrupt."""
    import signal
    import subprocess
    import sys

    path = tmp_path / "_paper" / "fresh.sqlite"
    child = (
        "import os, signal, sqlite3, sys\n"
        "from mde.paper import state\n"
        "real = sqlite3.Connection.executescript\n"
        "class Dying(sqlite3.Connection):\n"
        "    def executescript(self, script):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "orig = sqlite3.connect\n"
        "sqlite3.connect = lambda *a, **k: orig(*a, factory=Dying, **k)\n"
        "state.TradeState(sys.argv[1])\n"
    )
    done = subprocess.run([sys.executable, "-c", child, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL
    assert not path.exists()  # no 0-byte journal (it would be "corrupt"): nothing at all
    with TradeState(path) as state:  # the same name starts afresh
        assert state.meta() == {"format": "1"}
