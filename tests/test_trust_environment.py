"""Faults of the environment: a read-only or full disk, a cache dir that is a file, corrupt
manifests, journals and instrument memory, an absurd --count, a config file that is not
UTF-8 or is a folder. Each is one `error:` line with the documented exit code, no
traceback, and the cache's files as they were; read-only commands keep working.

CLI cases run the real `mde` in a subprocess. A read-only cache is a read-only bind mount
and a full disk a 256 KiB tmpfs where mounting is permitted (root in a container); a
read-only cache falls back to `chmod a-w` when not root (root ignores permission bits);
the tests that need neither skip and say why. ENOSPC is also injected in-process into the
atomic writer, which runs everywhere.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from conftest import engine_at, run_mde
from mde.clock import IST
from mde.config import load
from mde.engine import MarketDataEngine
from mde.errors import CacheError, ConfigError, InputError
from mde.paper.session import run_sample_session, session_status
from mde.replay import missing_sessions
from mde.store import MANIFEST, CandleStore, Manifest
from mde.timeframes import parse

SAMPLE = {"MDE_SOURCE": "sample"}


# -- helpers ------------------------------------------------------------------------------
def mde(cache: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_mde("--cache-dir", str(cache), *args, env={**SAMPLE, **(env or {})})


def assert_error_lines(res: subprocess.CompletedProcess[str], code: int, *needles: str, lines: int = 1) -> list[str]:
    """`lines` lines on stderr, each `error: ...`, no traceback, exit `code`; returns them."""
    err = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == code, (res.returncode, res.stderr, res.stdout[-500:])
    assert len(err) == lines and all(ln.startswith("error: ") for ln in err), res.stderr
    for needle in needles:
        assert needle in res.stderr, (needle, res.stderr)
    return err


def snapshot(root: Path) -> dict[str, bytes]:
    """Every regular file under `root` (lock files aside: empty, made by any writer) and its bytes."""
    if root.is_file():
        return {"": root.read_bytes()}
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


def build_cache(cache: Path) -> MarketDataEngine:
    """NIFTY and BANKNIFTY 5m for June 2024 and NIFTY 1m for June, from the bundled sample."""
    eng = MarketDataEngine(load(cache_dir=cache, source="sample", environ={}))
    eng.download("NIFTY", "5m", "2024-06-01", "2024-06-30")
    eng.download("BANKNIFTY", "5m", "2024-06-01", "2024-06-30")
    eng.download("NIFTY", "1m", "2024-06-03", "2024-06-28")
    return eng


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    root = tmp_path / "cache"
    build_cache(root)
    return root


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@contextmanager
def read_only(folder: Path) -> Iterator[str]:
    """`folder` read-only; yields the reason a write will get ("read-only file system" from a
    read-only bind mount, or "permission denied" from chmod when not root)."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for p in modes:
            p.chmod(stat.S_IMODE(modes[p]) & ~0o222)
        try:
            yield "permission denied"
        finally:
            for p, mode in modes.items():
                p.chmod(stat.S_IMODE(mode))
        return
    if shutil.which("mount") is None:
        pytest.skip("root ignores permission bits and there is no `mount` to make a read-only bind mount")
    res = _mount("--bind", "-o", "ro", str(folder), str(folder))
    if res.returncode != 0:
        pytest.skip(
            f"root ignores permission bits and a read-only bind mount is not permitted here: {res.stderr.strip()}"
        )
    try:
        if os.access(folder, os.W_OK):  # old mount(8): --bind ignores ro; remount it
            _mount("-o", "remount,bind,ro", str(folder))
        assert not os.access(folder, os.W_OK)
        yield "read-only file system"
    finally:
        subprocess.run(["umount", str(folder)], check=True)


# -- 1. a count out of range ------------------------------------------------------------------
def test_refresh_count_out_of_range_is_one_line_naming_the_range(cache: Path) -> None:
    before = snapshot(cache)
    for count in ("100000000", "0", "-5"):
        res = mde(cache, "refresh", "NIFTY", "BANKNIFTY", "--count", count)
        assert_error_lines(res, 2, "between 1 and 1,000,000")
    assert snapshot(cache) == before


def test_instruments_limit_below_one_is_one_line(tmp_path: Path) -> None:
    for limit in ("0", "-5"):
        res = run_mde("--cache-dir", str(tmp_path / "cache"), "instruments", "-n", limit)
        assert_error_lines(res, 2, "--limit must be at least 1")


def test_count_in_config_is_bounded(tmp_path: Path) -> None:
    toml = tmp_path / "big.toml"
    toml.write_text("[refresh]\ncount = 100000000\n")
    with pytest.raises(ConfigError, match="between 1 and 1,000,000"):
        load(toml, environ={})
    res = run_mde("--config", str(toml), "ls")
    assert_error_lines(res, 2, "refresh.count", "between 1 and 1,000,000")


def test_the_largest_count_reaches_back_no_further_than_the_calendar(settings) -> None:
    """MAX_COUNT daily candles is 4,000 years of sessions: the search stops at 1990 instead
    of an OverflowError, and the library's count check is the CLI's."""
    eng = MarketDataEngine(settings)
    report = eng.refresh("NIFTY", "1d", count=1_000_000)
    assert report.rows > 0
    with pytest.raises(InputError, match="between 1 and 1,000,000"):
        eng.fetch_latest("NIFTY", "5m", count=1_000_001)


# -- 2. the config file -------------------------------------------------------------------------
def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    work = tmp_path / "cwd"
    (work / "mde.toml").write_bytes(b'[source]\nkind = "sample\xff"\n')
    res = run_mde("ls", cwd=work)
    assert_error_lines(res, 2, "mde.toml is not UTF-8", "0xff")


def test_a_config_path_that_is_a_folder_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "conf.d"
    folder.mkdir()
    res = run_mde("--config", str(folder), "ls")
    assert_error_lines(res, 2, f"config file {folder} is a folder, not a file")
    res = run_mde("ls", env={"MDE_CONFIG": str(folder)})
    assert_error_lines(res, 2, f"MDE_CONFIG points to {folder}, which is a folder")


# -- 3. a cache dir that is a file --------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ("ls",),
        ("window", "NIFTY"),
        ("fetch", "NIFTY", "--from", "2024-06-03", "--to", "2024-06-04"),
        ("refresh", "NIFTY"),
        ("prune", "--before", "2024-06-01"),
        ("prune", "--before", "2024-06-01", "--dry-run"),
        (
            "replay",
            "--strategy",
            "sma_cross",
            "-s",
            "NIFTY",
            "--from",
            "2024-06-03",
            "--to",
            "2024-06-28",
            "--segment",
            "futures",
        ),
        ("paper", "--status"),
        ("paper", "--strategy", "sma_cross", "-s", "NIFTY", "--date", "2024-06-14", "--segment", "futures"),
    ],
)
def test_a_cache_dir_that_is_a_file_is_one_line_everywhere(tmp_path: Path, args: tuple[str, ...]) -> None:
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("not a folder")
    res = mde(not_a_folder, *args)
    assert_error_lines(res, 6, f"the cache dir {not_a_folder} is not a folder")
    assert not_a_folder.read_text() == "not a folder"


# -- 4. a read-only cache -----------------------------------------------------------------------
def test_a_read_only_cache_refuses_writers_in_one_line_and_serves_readers(cache: Path, tmp_path: Path) -> None:
    settings = load(cache_dir=cache, source="sample", environ={})
    run_sample_session(settings, "sma_cross", ["NIFTY"], "5m", "2024-06-14", name="s1", segment="futures")
    before = snapshot(cache)
    with read_only(cache) as reason:
        line = f"error: cannot write the cache at {cache}: {reason}"
        later = {"MDE_NOW": "2024-07-05T15:30:00+05:30"}  # the series need new candles: refresh must write
        for args, env in (
            (("fetch", "NIFTY", "--from", "2024-07-01", "--to", "2024-07-03"), None),
            (("refresh", "NIFTY"), later),
            (("prune", "--before", "2024-06-10"), None),
        ):
            res = mde(cache, *args, env=env)
            err = assert_error_lines(res, 6)
            assert err[0].endswith(line.removeprefix("error: ")), err
        res = mde(
            cache,
            "paper",
            "--strategy",
            "sma_cross",
            "-s",
            "NIFTY",
            "--date",
            "2024-06-18",
            "--segment",
            "futures",
            "--session",
            "s2",
        )
        assert_error_lines(res, 6, f"cannot write the cache at {cache}: {reason}")

        # readers work
        res = mde(cache, "window", "NIFTY", "-n", "3", "-f", "json")
        assert res.returncode == 0 and json.loads(res.stdout)["count"] == 3, res.stderr
        res = mde(cache, "ls", "-f", "json")
        assert res.returncode == 0 and len(json.loads(res.stdout)) == 3, res.stderr
        res = mde(cache, "prune", "--before", "2024-06-10", "--dry-run")
        assert res.returncode == 0 and "would drop" in res.stdout, res.stderr
        res = mde(
            cache,
            "replay",
            "--strategy",
            "sma_cross",
            "-s",
            "NIFTY",
            "--from",
            "2024-06-03",
            "--to",
            "2024-06-28",
            "--segment",
            "futures",
            "--json",
        )
        assert res.returncode == 0 and json.loads(res.stdout)["candles_processed"] > 0, res.stderr
        res = mde(cache, "paper", "--status", "--json")
        assert res.returncode == 0, res.stderr
        assert [(s["session"], s["status"]) for s in json.loads(res.stdout)] == [("s1", "finished")]
        assert "error" not in res.stderr
    assert snapshot(cache) == before


def test_a_journal_opened_for_status_is_opened_read_only(cache: Path) -> None:
    """Status never writes a journal: no WAL files appear, and the bytes stay as they are."""
    settings = load(cache_dir=cache, source="sample", environ={})
    run_sample_session(settings, "sma_cross", ["NIFTY"], "5m", "2024-06-14", name="s1", segment="futures")
    before = snapshot(cache / "_paper")
    assert [s["status"] for s in session_status(settings)] == ["finished"]
    assert snapshot(cache / "_paper") == before


# -- 5. a full disk -------------------------------------------------------------------------------
@pytest.mark.parametrize("failing", [1, 2, 3, 4])
def test_enospc_in_the_atomic_writer_changes_nothing(
    cache: Path, monkeypatch: pytest.MonkeyPatch, failing: int
) -> None:
    """The disk fills up while the `failing`-th file of a write is put down (three new monthly
    partitions, then the manifest): one CacheError, every file as it was, no temp file left,
    and the same write succeeds once there is room."""
    import mde.atomic

    eng = MarketDataEngine(load(cache_dir=cache, source="sample", environ={}))
    before = snapshot(cache)
    real_fsync = os.fsync
    calls = {"n": 0}

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(mde.atomic.os, "fsync", fsync)
    with pytest.raises(CacheError, match=f"cannot write the cache at {cache}: no space left on device") as info:
        eng.download("NIFTY", "1m", "2024-03-01", "2024-05-31")
    assert isinstance(info.value.__cause__, OSError)  # kept for -v
    assert snapshot(cache) == before
    assert not list(cache.rglob("*.tmp"))
    monkeypatch.setattr(mde.atomic.os, "fsync", real_fsync)
    eng.download("NIFTY", "1m", "2024-03-01", "2024-05-31")
    folder = cache / "NSE" / "NIFTY_50" / "1m"
    manifest = Manifest.from_json((folder / MANIFEST).read_text())
    assert sorted(manifest.partitions) == sorted(p.stem for p in folder.glob("*.parquet"))


@contextmanager
def tiny_tmpfs(folder: Path, size: str) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8); ENOSPC is covered in-process above")
    res = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))
    if res.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {res.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_full_disk_during_fetch_is_one_line_and_leaves_ledger_and_files_consistent(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    with tiny_tmpfs(disk, "256k"):
        cache = disk / "cache"
        MarketDataEngine(load(cache_dir=cache, source="sample", environ={})).download(
            "BANKNIFTY", "5m", "2024-12-20", "2024-12-31"
        )
        before = snapshot(cache)
        # three monthly 1m files of ~100 KB each: the third does not fit
        res = mde(cache, "fetch", "NIFTY", "-t", "1m", "--from", "2024-04-01", "--to", "2024-06-30")
        assert_error_lines(res, 6, f"cannot write the cache at {cache}: no space left on device")
        assert snapshot(cache) == before  # no partition outside the ledger, no temp file
        assert not list(cache.rglob("*.tmp"))


# -- 6. prune: all or nothing ---------------------------------------------------------------------
def test_prune_with_one_corrupt_file_changes_nothing(cache: Path) -> None:
    bad = cache / "NSE" / "NIFTY_BANK" / "5m" / "2024.parquet"  # the last series prune visits
    bad.write_bytes(bad.read_bytes()[:200])
    before = snapshot(cache)
    res = mde(cache, "prune", "--before", "2024-06-15")
    assert_error_lines(res, 6, str(bad))
    assert snapshot(cache) == before
    res = mde(cache, "prune", "--before", "2024-06-15", "--dry-run")
    assert_error_lines(res, 6, str(bad))


def test_prune_with_a_corrupt_file_it_would_only_summarise_changes_nothing(cache: Path) -> None:
    """A 2025 file after the cutoff, damaged since the manifest was written: prune would read it
    to bring the manifest up to date, so it is checked before any series changes."""
    from factories import make_candles, trading_days
    from mde.symbols import Instrument

    store = CandleStore(cache)
    later = make_candles(trading_days(date(2025, 1, 6), 2), step=5)
    store.write(
        Instrument("NSE", "NIFTY BANK"), parse("5m"), later, source="sample", now=datetime(2025, 1, 8, tzinfo=IST)
    )
    bad = cache / "NSE" / "NIFTY_BANK" / "5m" / "2025.parquet"
    bad.write_bytes(bad.read_bytes()[:100])
    before = snapshot(cache)
    res = mde(cache, "prune", "--before", "2024-06-15")
    assert_error_lines(res, 6, str(bad))
    assert snapshot(cache) == before


def test_prune_with_a_corrupt_manifest_changes_nothing(cache: Path) -> None:
    (cache / "NSE" / "NIFTY_BANK" / "5m" / MANIFEST).write_text("{garbage")
    before = snapshot(cache)
    res = mde(cache, "prune", "--before", "2024-06-15")
    assert_error_lines(res, 6, "NIFTY_BANK/5m/manifest.json is not a valid manifest")
    assert snapshot(cache) == before


# -- 7. manifests ------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["garbage", "folder"])
def test_one_bad_manifest_is_named_and_the_rest_listed(cache: Path, damage: str) -> None:
    path = cache / "NSE" / "NIFTY_BANK" / "5m" / MANIFEST
    if damage == "garbage":
        path.write_bytes(b"\x00\xffnot json")
    else:
        path.unlink()
        path.mkdir()
    before = snapshot(cache)
    res = mde(cache, "ls")
    assert_error_lines(res, 6, f"{path} is not a valid manifest", "move it aside")
    assert "NSE:NIFTY 50 5m" in res.stdout and "NSE:NIFTY 50 1m" in res.stdout and "NSE:NIFTY BANK 5m" in res.stdout
    res = mde(cache, "ls", "-f", "json")
    assert_error_lines(res, 6, f"{path} is not a valid manifest")
    rows = {(r["instrument"], r["timeframe"]): r for r in json.loads(res.stdout)}
    assert rows[("NSE:NIFTY 50", "5m")]["rows"] > 0 and "error" not in rows[("NSE:NIFTY 50", "5m")]
    assert "not a valid manifest" in rows[("NSE:NIFTY BANK", "5m")]["error"]
    res = mde(cache, "refresh", "BANKNIFTY", env={"MDE_NOW": "2024-07-05T15:30:00+05:30"})
    assert_error_lines(res, 6, f"{path} is not a valid manifest")
    assert snapshot(cache) == before


def test_a_manifest_moved_aside_is_rebuilt_with_its_ledger(cache: Path) -> None:
    folder = cache / "NSE" / "NIFTY_50" / "5m"
    original = Manifest.from_json((folder / MANIFEST).read_text())
    (folder / MANIFEST).rename(folder / "manifest.json.bad")
    # nothing new to fetch (the clock is at the last candle's close): refresh still rebuilds it
    res = mde(cache, "refresh", "NIFTY", env={"MDE_NOW": "2024-06-28T15:30:00+05:30"})
    assert res.returncode == 0, res.stderr
    assert (
        "rebuilt" in res.stderr and "19 session(s)" in res.stderr
    )  # June 2024 from the 3rd: 19 sessions (the 17th is a holiday)
    rebuilt = Manifest.from_json((folder / MANIFEST).read_text())
    assert rebuilt.rows == original.rows and rebuilt.source == "sample"
    assert rebuilt.partitions.keys() == original.partitions.keys()
    assert [(a.date(), b) for a, b in rebuilt.coverage] == [
        (date(2024, 6, 3), datetime(2024, 6, 28, 15, 30, tzinfo=IST))
    ]
    res = mde(
        cache,
        "replay",
        "--strategy",
        "sma_cross",
        "-s",
        "NIFTY",
        "--from",
        "2024-06-03",
        "--to",
        "2024-06-28",
        "--segment",
        "futures",
        "--json",
    )
    assert res.returncode == 0, res.stderr


def test_a_rebuilt_ledger_leaves_out_sessions_with_candles_missing(
    cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = cache / "NSE" / "NIFTY_50" / "5m"
    part = folder / "2024.parquet"
    df = pl.read_parquet(part)
    holey = df.filter(pl.col("ts") != datetime(2024, 6, 12, 11, 0, tzinfo=IST))
    assert holey.height == df.height - 1
    holey.write_parquet(part)
    (folder / MANIFEST).unlink()
    eng = engine_at(load(cache_dir=cache, source="sample", environ={}), "2024-06-28T15:30:00+05:30")
    with caplog.at_level(logging.WARNING, logger="mde.store"):
        eng.refresh("NIFTY", "5m")
    assert "1 session(s) with candles missing are not covered (2024-06-12)" in caplog.text
    inst = eng.resolve("NIFTY")
    missing = missing_sessions(eng, inst, parse("5m"), date(2024, 6, 3), date(2024, 6, 28), eng.now())
    assert missing == [date(2024, 6, 12)]


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(holes=st.dictionaries(st.integers(0, 9), st.integers(0, 74), max_size=6), tf_name=st.sampled_from(["5m", "15m"]))
def test_a_rebuilt_ledger_covers_exactly_the_complete_sessions(holes: dict[int, int], tf_name: str) -> None:
    """Ten sessions of candles with one candle missing on some of them: the ledger rebuilt from
    the files covers every other session (and the weekends between), and no holed one."""
    from factories import make_candles, trading_days
    from mde.calendar import nse
    from mde.store import ledger_from_candles

    tf = parse(tf_name)
    days = trading_days(date(2024, 6, 3), 10)
    df = make_candles(days, step=tf.minutes)
    per_day = 375 // tf.minutes
    drop = [df["ts"][i * per_day + k % per_day] for i, k in holes.items()]
    holey = df.filter(~pl.col("ts").is_in(drop))
    ledger, full, short = ledger_from_candles(holey["ts"], tf, nse())
    bad = {days[i] for i in holes}
    assert short == [d.isoformat() for d in days if d in bad]
    assert full == len(days) - len(bad)

    def covered(d: date) -> bool:
        lo = datetime(d.year, d.month, d.day, 9, 15, tzinfo=IST)
        hi = datetime(d.year, d.month, d.day, 15, 30, tzinfo=IST)
        return any(a <= lo and b >= hi for a, b in ledger)

    assert [covered(d) for d in days] == [d not in bad for d in days]


# -- 7b. paper journals -------------------------------------------------------------------------------
@pytest.fixture
def journals(cache: Path) -> Path:
    settings = load(cache_dir=cache, source="sample", environ={})
    for name, day in (("good", "2024-06-14"), ("paged", "2024-06-13")):
        run_sample_session(settings, "sma_cross", ["NIFTY"], "5m", day, name=name, segment="futures")
    paged = cache / "_paper" / "paged.sqlite"
    with paged.open("r+b") as fh:  # a damaged b-tree page: the header is fine, quick_check is not
        fh.seek(4096 + 8)
        fh.write(b"\xff" * 2000)
    (cache / "_paper" / "empty.sqlite").write_bytes(b"")
    return cache


def test_paper_status_names_each_bad_journal_and_lists_the_others(journals: Path) -> None:
    cache = journals
    before = snapshot(cache)
    res = mde(cache, "paper", "--status")
    err = assert_error_lines(res, 6, lines=2)
    assert "empty.sqlite is corrupt (an empty file, 0 bytes)" in err[0]
    assert "paged.sqlite is corrupt (" in err[1]
    assert "good" in res.stdout and "finished" in res.stdout
    res = mde(cache, "paper", "--status", "--json")
    assert_error_lines(res, 6, lines=2)
    items = {s["session"]: s for s in json.loads(res.stdout)}
    assert items["good"]["status"] == "finished" and items["good"]["fills"] > 0
    assert items["paged"]["status"] == items["empty"]["status"] == "unreadable"
    res = mde(cache, "paper", "--status", "--session", "paged")
    assert_error_lines(res, 6, "paged.sqlite is corrupt")
    assert snapshot(cache) == before


@pytest.mark.parametrize("name", ["paged", "empty"])
def test_resuming_a_corrupt_journal_is_one_line(journals: Path, name: str) -> None:
    before = snapshot(journals)
    res = mde(
        journals,
        "paper",
        "--strategy",
        "sma_cross",
        "-s",
        "NIFTY",
        "--date",
        "2024-06-13",
        "--segment",
        "futures",
        "--session",
        name,
    )
    assert_error_lines(res, 6, f"{name}.sqlite is corrupt", "move it aside")
    assert snapshot(journals) == before  # a 0-byte journal is not taken for a fresh session


def test_the_api_serves_the_readable_sessions_beside_a_corrupt_one(journals: Path) -> None:
    from fastapi.testclient import TestClient

    from mde.api import create_app

    client = TestClient(create_app(load(cache_dir=journals, source="sample", environ={})), base_url="http://127.0.0.1")
    res = client.get("/api/paper/sessions")
    assert res.status_code == 200
    items = {s["session"]: s for s in res.json()}
    assert items["good"]["status"] == "finished" and isinstance(items["good"]["net_pnl"], float)
    assert items["paged"]["status"] == "unreadable" and "is corrupt" in items["paged"]["error"]
    assert items["paged"]["gross_pnl"] is None and items["paged"]["net_pnl"] is None
    res = client.get("/api/paper/sessions/paged")
    assert res.status_code == 500 and "paged.sqlite is corrupt" in res.json()["error"]


def test_a_journal_that_is_not_a_database_is_corrupt(cache: Path) -> None:
    from mde.paper.state import TradeState

    path = cache / "_paper" / "junk.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not sqlite" * 100)
    for readonly in (True, False):
        with pytest.raises(CacheError, match="junk.sqlite is corrupt"):
            TradeState(path, readonly=readonly)
    with sqlite3.connect(cache / "_paper" / "other.sqlite") as db:
        db.execute("CREATE TABLE x (a)")
    with pytest.raises(CacheError, match="not a session journal"):
        TradeState(cache / "_paper" / "other.sqlite", readonly=True)


# -- 8. the memory of instruments ------------------------------------------------------------------
def test_a_corrupt_known_instruments_file_is_named_not_taken_for_an_empty_cache(tmp_path: Path) -> None:
    from factories import make_candles
    from kite_server import KiteServer
    from mde.sources.kite.instruments import InstrumentCatalog
    from mde.symbols import Instrument

    now = datetime(2025, 12, 20, 10, 0, tzinfo=IST)
    cache = tmp_path / "cache"
    meta = cache / "_meta"
    with KiteServer(instruments_csv=Path(__file__).resolve().parents[1] / "data" / "instruments.csv") as server:
        catalog = InstrumentCatalog(meta, server.make_client().instruments, lambda: now)
        fut = catalog.resolve("NIFTY-FUT")
    store = CandleStore(cache)
    days = [date(2025, 12, 15), date(2025, 12, 16)]
    store.write(
        Instrument(fut.exchange, fut.tradingsymbol), parse("5m"), make_candles(days, step=5), source="kite", now=now
    )
    known = meta / "known_instruments.json"
    known.write_text("{truncated")
    before = snapshot(cache)
    env = {
        "MDE_SOURCE": "kite",
        "KITE_API_KEY": "k",
        "KITE_ACCESS_TOKEN": "t",
        "MDE_KITE_ROOT": "http://127.0.0.1:9",
        "MDE_NOW": now.isoformat(),
    }
    for args in (
        ("window", "NIFTY-FUT"),
        ("replay", "--strategy", "sma_cross", "-s", "NIFTY-FUT", "--from", "2025-12-15", "--to", "2025-12-16"),
    ):
        res = run_mde("--cache-dir", str(cache), *args, env=env)
        assert_error_lines(res, 6, f"{known} is unreadable", "move it aside")
    assert snapshot(cache) == before
