"""Crash safety of the cache: a writer SIGKILLed at random moments never leaves a mixed file,
and two writers of one series never lose each other's candles.

The writer runs a deterministic sequence of operations: op i writes rows n (candle n starts
at BASE + 15 min * n) whose values carry i (open = volume = i, close = n). So the exact
content of every partition after op k is known here, and a file found after a kill must
equal its content after op k (the last op the writer reported done) or after op k+1 (the
one it was in the middle of): old or new, never a mix. Every fourth op swaps in a whole new
series (`replace_series`), which must be old or new as a whole, not file by file.
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import mde.store
from mde.candles import COLUMNS
from mde.clock import IST
from mde.store import MANIFEST, CandleStore, Manifest, WriteResult
from mde.symbols import Instrument
from mde.timeframes import parse

# Shared by the writer process and this test: what op i writes, and how.
OPS = r"""
import polars as pl

BASE_US = 1704080700000000  # 2024-01-01 09:15 IST
STEP_US = 15 * 60 * 1_000_000  # a 1m series with a candle every 15 min: many months, small files
BIG = 12_000  # a full rewrite: Jan .. early May, five monthly files
APPEND = 50
REPLACE = 200
SWAP_FROM = 3_000  # a swapped-in series starts in February: January's file goes


def is_swap(i):
    return i % 4 == 3


def op_rows(i):
    kind = i % 4
    if kind == 0:  # a large batch: every old row again, new values
        return 0, BIG
    if kind == 1:  # append past the end
        lo = BIG + APPEND * (i // 4)
        return lo, lo + APPEND
    if kind == 2:  # replace an existing stretch
        lo = (i * 7919) % (BIG - REPLACE)
        return lo, lo + REPLACE
    return SWAP_FROM, BIG  # the whole series swapped for this


def batch(i):
    lo, hi = op_rows(i)
    n = pl.int_range(lo, hi, eager=True, dtype=pl.Int64)
    return pl.DataFrame({"n": n}).select(
        ts=pl.from_epoch(pl.col("n") * STEP_US + BASE_US, time_unit="us").dt.replace_time_zone("UTC"),
        open=pl.lit(float(i)),
        high=pl.lit(i + 0.5),
        low=pl.lit(i - 0.5),
        close=pl.col("n").cast(pl.Float64),
        volume=pl.lit(i, dtype=pl.Int64),
    )


def apply(store, inst, tf, i, now):
    if is_swap(i):
        return store.replace_series(inst, tf, batch(i), source="sample", coverage=[], now=now)
    return store.write(inst, tf, batch(i), source="sample", now=now)
"""
_OPS: dict[str, Any] = {}
exec(OPS, _OPS)  # the same definitions here, named below
BASE_US: int = _OPS["BASE_US"]
STEP_US: int = _OPS["STEP_US"]
is_swap: Callable[[int], bool] = _OPS["is_swap"]
op_rows: Callable[[int], tuple[int, int]] = _OPS["op_rows"]
apply: Callable[..., WriteResult] = _OPS["apply"]

WRITER = (
    r"""
import sys
from datetime import datetime
from mde.clock import IST
from mde.store import CandleStore
from mde.symbols import Instrument
from mde.timeframes import parse
"""
    + OPS
    + r"""
store = CandleStore(sys.argv[1])
inst, tf = Instrument("NSE", "CRASH TEST"), parse("1m")
now = datetime(2025, 1, 1, tzinfo=IST)
# Warm up (polars' thread pool, the Parquet writer and reader, filelock) on a scratch series
# of this process's own, so that the kills land in real writes rather than in start-up.
apply(CandleStore(sys.argv[2]), inst, tf, 1, now)
apply(CandleStore(sys.argv[2]), inst, tf, 3, now)
print("ready", flush=True)
i = int(sys.stdin.readline())
while True:
    apply(store, inst, tf, i, now)
    print(i, flush=True)
    i += 1
"""
)

APPENDER = r"""
import sys
import time
from datetime import datetime, timedelta
import polars as pl
from mde.clock import IST
from mde.store import CandleStore
from mde.symbols import Instrument
from mde.timeframes import parse

store = CandleStore(sys.argv[1])
parity = int(sys.argv[2])
inst, tf = Instrument("NSE", "RACE"), parse("5m")
base = datetime(2024, 6, 3, 9, 15, tzinfo=IST)
print("ready", flush=True)
sys.stdin.readline()
print("start", time.monotonic(), flush=True)
for j in range(50):
    n = 2 * j + parity
    ts = base + timedelta(minutes=5 * n)
    one = pl.DataFrame({"ts": [ts], "open": [1.0], "high": [2.0], "low": [0.5], "close": [float(n)], "volume": [parity]})
    store.write(inst, tf, one, source="sample", now=datetime(2025, 1, 1, tzinfo=IST))
print("done", time.monotonic(), flush=True)
"""

KILLS = 25
MAX_DELAY_S = 0.3
INST, TF = Instrument("NSE", "CRASH TEST"), parse("1m")

State = dict[str, dict[int, int]]  # partition -> {n: the op that last wrote candle n}


@functools.cache
def _month(n: int) -> str:
    ts = datetime.fromtimestamp((BASE_US + n * STEP_US) / 1e6, tz=IST)
    return f"{ts.year:04d}-{ts.month:02d}"


class Model:
    """What the cache holds after op k, computed here without mde."""

    def __init__(self) -> None:
        self.k = -1
        self.parts: State = {}
        self._next: tuple[int, State] | None = None

    def after(self, i: int) -> State:
        """The whole series after op i, applied to the current state (which is not changed)."""
        if self._next is not None and self._next[0] == i and i == self.k + 1:
            return self._next[1]
        lo, hi = op_rows(i)
        out: State = {} if is_swap(i) else dict(self.parts)
        copied: set[str] = set()
        for n in range(lo, hi):
            part = _month(n)
            if part not in copied:
                out[part] = {} if is_swap(i) else dict(self.parts.get(part, {}))
                copied.add(part)
            out[part][n] = i
        self._next = (i, out)
        return out

    def advance(self, k: int) -> None:
        while self.k < k:
            self.parts = self.after(self.k + 1)
            self.k += 1

    @staticmethod
    def rows(state: State) -> int:
        return sum(len(p) for p in state.values())


def _file_content(path: Path) -> dict[int, int]:
    """A partition file read with plain polars, checked, as {n: version}."""
    try:
        df = pl.read_parquet(path)
    except Exception as exc:
        raise AssertionError(f"{path.name} is unreadable after a kill: {exc}") from None
    assert dict(df.schema) == dict(COLUMNS), f"{path.name}: schema {df.schema}"
    assert df["ts"].is_sorted() and df["ts"].is_unique().all(), f"{path.name}: not sorted/unique"
    n = ((df["ts"].dt.epoch("us") - BASE_US) // STEP_US).to_list()
    # each row is whole: its values all come from the same op
    assert (df["open"] == df["volume"].cast(pl.Float64)).all(), path.name
    assert (df["high"] == df["open"] + 0.5).all() and (df["low"] == df["open"] - 0.5).all(), path.name
    assert (df["close"] == pl.Series(n, dtype=pl.Float64)).all(), path.name
    return dict(zip(n, df["volume"].to_list(), strict=True))


def _folder_state(folder: Path) -> State:
    return {p.stem: _file_content(p) for p in folder.glob("*.parquet")}


def _check(folder: Path, model: Model) -> dict[str, int]:
    """Every partition equals its content after op k or after op k+1 (a swap: the whole series
    does). Returns what the kill left behind, for the summary."""
    old, new = model.parts, model.after(model.k + 1)
    seen = {"temps": 0, "torn": 0, "between_renames": 0, "staging": 0}
    aside = folder.parent / f".{folder.name}.old"
    if not folder.exists() and not aside.exists():  # killed before the first write made the folder
        assert Model.rows(old) == 0, f"series folder missing after op {model.k}"
        return seen
    if not folder.exists():
        # Killed between the two renames of a swap: the old series waits beside it, whole.
        assert is_swap(model.k + 1) and aside.is_dir(), f"series folder missing after op {model.k}"
        assert _folder_state(aside) == {p: c for p, c in old.items() if c}
        seen["between_renames"] = 1
        return seen
    sides = set()
    found = {p.stem for p in folder.glob("*.parquet")}
    assert found <= set(old) | set(new), f"unexpected partitions {found - set(old) - set(new)}"
    on_disk: State = {}
    for part in set(old) | set(new):
        path = folder / f"{part}.parquet"
        content = on_disk[part] = _file_content(path) if path.exists() else {}
        before, after = old.get(part, {}), new.get(part, {})
        if before != after:
            sides.add(content == after)
        if content != before and content != after:
            versions = sorted(set(content.values()))
            raise AssertionError(
                f"{path.name} after op {model.k} is neither version {model.k} nor {model.k + 1}: "
                f"{len(content)} rows from ops {versions[:3]}..{versions[-3:]}, expected {len(before)} or {len(after)} rows"
            )
    if is_swap(model.k + 1):
        assert len(sides) <= 1, f"swap {model.k + 1} left some files old and some new"
    seen["torn"] = int(len(sides) == 2)
    manifest = folder / MANIFEST
    if manifest.exists():
        text = manifest.read_text(encoding="utf-8")
        json.loads(text)
        m = Manifest.from_json(text)
        assert (m.source, m.instrument) == ("sample", "NSE:CRASH TEST")
        assert m.rows in {Model.rows(old), Model.rows(new)}, (m.rows, Model.rows(old), Model.rows(new))
    seen["temps"] = len(list(folder.glob(".*.tmp")))
    seen["staging"] = int((folder.parent / f".{folder.name}.new").exists())
    # mde's own reader sees exactly what the files hold (stale temp files are not read)
    got = CandleStore(folder.parents[2]).read(INST, TF)
    n = ((got["ts"].dt.epoch("us") - BASE_US) // STEP_US).to_list()
    assert dict(zip(n, got["volume"].to_list(), strict=True)) == {k: v for c in on_disk.values() for k, v in c.items()}
    return seen


def _spawn(code: str, *args: str, log: Path) -> subprocess.Popen[str]:
    with open(log, "a") as err:
        return subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )


def _ready(proc: subprocess.Popen[str], log: Path) -> None:
    line = proc.stdout.readline()  # type: ignore[union-attr]
    assert line == "ready\n", f"child did not start: {line!r}\n{log.read_text()}"


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_sigkilled_writer_leaves_every_file_old_or_new_and_the_next_write_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cache"
    store = CandleStore(root)
    folder = store.series_dir(INST, TF)
    log = tmp_path / "writer.log"
    rng = random.Random(20240614)
    model = Model()
    pending: list[subprocess.Popen[str]] = []
    proc = None
    totals = {"temps": 0, "torn": 0, "between_renames": 0, "staging": 0}
    started = time.monotonic()
    try:
        spawned = 0
        for _ in range(KILLS):
            # Keep the next writer starting up (importing polars) while one runs: saves wall time.
            while len(pending) < 2 and spawned < KILLS:
                pending.append(_spawn(WRITER, str(root), str(tmp_path / f"warm{spawned}"), log=log))
                spawned += 1
            proc = pending.pop(0)
            _ready(proc, log)
            proc.stdin.write(f"{model.k + 1}\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            time.sleep(rng.uniform(0, MAX_DELAY_S))
            _kill(proc)
            assert proc.returncode == -signal.SIGKILL, f"the writer failed on its own:\n{log.read_text()}"
            done = [int(line) for line in proc.stdout.read().splitlines() if line.strip().isdigit()]  # type: ignore[union-attr]
            if done:
                assert done == list(range(model.k + 1, done[-1] + 1))
                model.advance(done[-1])
            if folder.parent.exists():
                for key, value in _check(folder, model).items():
                    totals[key] += value
    finally:
        for child in [*pending, *([proc] if proc is not None else [])]:
            _kill(child)

    assert model.k >= 10, f"the writers got through only {model.k + 1} ops in {KILLS} runs"

    # The dead writers' lock does not block; stale temp files and a half-built swap go with
    # the next write.
    if folder.is_dir():
        (folder / ".2024-02.parquet.planted.tmp").write_bytes(b"PAR1 half")
    staging = folder.parent / f".{folder.name}.new"
    staging.mkdir(exist_ok=True)
    (staging / "2024-02.parquet").write_bytes(b"half")
    monkeypatch.setattr(mde.store, "LOCK_TIMEOUT_S", 5.0)
    i = model.k + 1
    result = apply(CandleStore(root), INST, TF, i, datetime(2025, 1, 2, tzinfo=IST))
    model.advance(i)
    assert result.rows == Model.rows(model.parts)
    assert list(folder.glob("*.tmp")) == list(folder.glob(".*.tmp")) == []
    assert sorted(p.name for p in folder.parent.iterdir()) == [".1m.lock", "1m"]
    assert _folder_state(folder) == {p: c for p, c in model.parts.items() if c}
    manifest = store.manifest(INST, TF)
    assert manifest is not None and manifest.rows == Model.rows(model.parts)
    print(
        f"{KILLS} kills, {model.k + 1} ops; kills that cut an op half-way: {totals['torn']}, left temp files: "
        f"{totals['temps']}, left a staging folder: {totals['staging']}, fell between a swap's renames: "
        f"{totals['between_renames']}; {time.monotonic() - started:.1f}s"
    )


@pytest.mark.slow
def test_two_processes_appending_to_one_series_lose_no_candle(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    log = tmp_path / "appenders.log"
    procs = [_spawn(APPENDER, str(root), str(parity), log=log) for parity in (0, 1)]
    try:
        for proc in procs:
            _ready(proc, log)
        for proc in procs:  # start both at once
            proc.stdin.write("go\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
        spans = []
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0, log.read_text()
            times = dict(line.split() for line in out.splitlines())
            spans.append((float(times["start"]), float(times["done"])))
    finally:
        for proc in procs:
            _kill(proc)
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1, "the two writers did not run at the same time"

    store = CandleStore(root)
    inst, tf = Instrument("NSE", "RACE"), parse("5m")
    df = store.read(inst, tf)
    base = datetime(2024, 6, 3, 9, 15, tzinfo=IST)
    assert df["ts"].to_list() == [base + timedelta(minutes=5 * n) for n in range(100)]
    assert df["close"].to_list() == [float(n) for n in range(100)]
    assert df["volume"].to_list() == [n % 2 for n in range(100)]
    manifest = store.manifest(inst, tf)
    assert manifest is not None and manifest.rows == 100
    assert list(store.series_dir(inst, tf).glob(".*.tmp")) == []
