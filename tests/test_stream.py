"""`mde stream` end to end: the real `mde` in a subprocess (it owns its Twisted reactor), the real
KiteTicker against the local ticker server (tests/kite_ticker_server.py), the real KiteConnect
against the local REST server (tests/kite_server.py) for instruments and historical candles.

The stream runs on market time (MDE_NOW pins its start; exchange timestamps move it on), so a
test replays half an hour of NIFTY's real 1m candles, as ticks, in well under a second.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from conftest import NSE_DATA, REPO, run_mde
from kite_server import KiteServer
from kite_ticker_server import KiteTickerServer, ScriptTick
from mde.calendar import nse
from mde.clock import IST
from mde.config import load
from mde.resample import resample
from mde.store import CandleStore
from mde.symbols import Instrument
from mde.timeframes import parse
from ticks import ticks_from_candles

NIFTY, BANKNIFTY = 256265, 260105
DAY = "2024-06-14"
INST = {NIFTY: Instrument("NSE", "NIFTY 50"), BANKNIFTY: Instrument("NSE", "NIFTY BANK")}
FILES = {NIFTY: "NIFTY50_1m_2024Q2.csv", BANKNIFTY: "BANKNIFTY_1m_2024Q2.csv"}


def _epoch(text: str) -> int:
    return int(datetime.fromisoformat(f"{DAY}T{text}+05:30").timestamp())


@pytest.fixture(scope="module")
def source_1m() -> dict[int, pl.DataFrame]:
    """Kite-shaped 1m candles of the day's first hour (index volume 0, as Kite's historical API)."""
    from mde.importer import read_candles

    out = {}
    for token, name in FILES.items():
        frame = read_candles(NSE_DATA / name, parse("1m")).candles
        day = frame.filter(pl.col("ts").dt.date() == datetime.fromisoformat(DAY).date())
        out[token] = day.head(60).with_columns(pl.lit(0, dtype=pl.Int64).alias("volume"))
    return out


@pytest.fixture(scope="module")
def rest(source_1m: dict[int, pl.DataFrame]) -> Iterator[KiteServer]:
    with KiteServer(instruments_csv=REPO / "data" / "instruments.csv") as srv:
        for token, frame in source_1m.items():
            srv.add_candles(token, "minute", frame.select("ts", "open", "high", "low", "close", "volume").rows())
        yield srv


@pytest.fixture
def kite(rest: KiteServer) -> Iterator[KiteServer]:
    rest.reset()
    rest.enforce_rate_limits = False
    yield rest
    rest.reset()


@pytest.fixture
def ws(kite: KiteServer) -> Iterator[KiteTickerServer]:
    with KiteTickerServer(kite.api_key, kite.access_token) as server:
        yield server


def env_for(
    kite: KiteServer, ws: KiteTickerServer, cache: Path, now: str = "09:14:50", token: str | None = None
) -> dict[str, str]:
    return {
        "KITE_API_KEY": kite.api_key,
        "KITE_ACCESS_TOKEN": token or kite.access_token,
        "MDE_KITE_ROOT": kite.url,
        "MDE_KITE_WS_ROOT": ws.url,
        "MDE_NOW": f"{DAY}T{now}+05:30",
        "MDE_CACHE_DIR": str(cache),
        "MDE_SOURCE": "kite",
        "MDE_TOKEN_FILE": str(cache.parent / "token.json"),
        "TZ": "America/New_York",
    }


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MDE_", "KITE_"))}
    full.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "mde", "stream", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full,
    )


def finish(child: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = child.communicate(timeout=timeout)
    finally:
        child.kill()
    return child.returncode, out, err


def script(source_1m: dict[int, pl.DataFrame], tokens: list[int], minutes: int = 30, seed: int = 1) -> list[ScriptTick]:
    ticks: list[ScriptTick] = []
    for token in tokens:
        ticks += ticks_from_candles(source_1m[token].head(minutes), token, seed=seed + token % 7)
    return ticks


def cached(cache: Path, token: int, tf: str) -> pl.DataFrame:
    return CandleStore(cache).read(INST[token], parse(tf))


def sentinel(at: str, token: int = NIFTY, price: int = 2_300_000) -> ScriptTick:
    """A tick that moves the stream's market clock past --until (+ grace)."""
    return ScriptTick(token, _epoch(at), price)


def test_streamed_candles_equal_the_source_1m_and_its_resampled_timeframes(kite, ws, source_1m, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ws.load([*script(source_1m, [NIFTY, BANKNIFTY]), sentinel("09:45:03")])
    child = start(
        env_for(kite, ws, cache),
        "--symbols",
        "NIFTY",
        "BANKNIFTY",
        "-t",
        "1m",
        "-t",
        "5m",
        "-t",
        "15m",
        "--until",
        "09:45",
        "--no-reconcile",
        "--json",
    )
    ws.wait_subscribed([NIFTY, BANKNIFTY], "full", timeout=30)
    ws.advance(_epoch("09:45:03"))
    code, out, err = finish(child)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["reason"] == "until" and summary["late"] == 0
    assert summary["fetched"] == 0 and summary["gaps"] == 0
    for token in (NIFTY, BANKNIFTY):
        want = source_1m[token].head(30)
        assert cached(cache, token, "1m").equals(want)
        for tf in ("5m", "15m"):
            assert cached(cache, token, tf).equals(resample(want, parse(tf), nse()))
    # nothing from the historical API: every candle came from ticks, and the manifest says so
    assert kite.requests_to("/instruments/historical") == []
    manifest = CandleStore(cache).manifest(INST[NIFTY], parse("1m"))
    assert manifest is not None and manifest.source == "kite" and manifest.coverage == []
    assert [(a.isoformat(), b.isoformat()) for a, b in manifest.ticks] == [
        (f"{DAY}T09:15:00+05:30", f"{DAY}T09:45:00+05:30")
    ]


def test_a_disconnect_inside_a_candle_takes_that_candle_from_the_historical_api(
    kite, ws, source_1m, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    ticks = script(source_1m, [NIFTY], minutes=10)
    ws.load([*ticks, sentinel("09:25:03")])
    # Kite's own 09:19 candle differs from the ticks' (as reconciliation could find): the cache must hold Kite's
    row = source_1m[NIFTY].row(4, named=True)
    kite.add_candles(NIFTY, "minute", [(row["ts"], row["open"], row["high"] + 1.0, row["low"], row["close"], 0)])
    try:
        child = start(
            env_for(kite, ws, cache),
            "-s",
            "NIFTY",
            "-t",
            "1m",
            "-t",
            "5m",
            "--until",
            "09:25",
            "--no-reconcile",
            "--json",
        )
        ws.wait_subscribed([NIFTY], "full", timeout=30)
        ws.advance(_epoch("09:19:30"))
        ws.drop()  # a network cut in the middle of 09:19
        ws.wait_subscribed([NIFTY], "full", timeout=30)  # KiteTicker reconnected and resubscribed by itself
        ws.advance(_epoch("09:25:03"))
        code, out, err = finish(child)
    finally:
        kite.add_candles(NIFTY, "minute", [(row["ts"], row["open"], row["high"], row["low"], row["close"], 0)])
    assert code == 0, err
    summary = json.loads(out)
    assert summary["disconnects"] == 1 and summary["gaps"] >= 2  # the 1m and the 5m holding 09:19
    got = cached(cache, NIFTY, "1m")
    want = source_1m[NIFTY].head(10)
    minute = got.filter(pl.col("ts") == row["ts"])
    assert minute["high"].to_list() == [row["high"] + 1.0]  # Kite's, not the ticks'
    assert got.filter(pl.col("ts") != row["ts"]).equals(want.filter(pl.col("ts") != row["ts"]))
    five = cached(cache, NIFTY, "5m").filter(
        pl.col("ts") == datetime.fromisoformat(f"{DAY}T09:15:00+05:30").astimezone(IST)
    )
    assert five["high"].to_list() == [max(want.head(5)["high"].max(), row["high"] + 1.0)]  # type: ignore[type-var]
    asked = kite.requests_to("/instruments/historical")
    assert len(asked) == 2  # one request per series per gap


def test_late_and_duplicate_ticks_are_counted_and_ignored(kite, ws, source_1m, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ticks = script(source_1m, [NIFTY], minutes=5)
    ws.load([*ticks, sentinel("09:20:03")])
    child = start(env_for(kite, ws, cache), "-s", "NIFTY", "--until", "09:20", "--no-reconcile", "--json")
    ws.wait_subscribed([NIFTY], "full", timeout=30)
    ws.advance(_epoch("09:17:05"))
    store = CandleStore(cache)
    _wait(lambda: store.read(INST[NIFTY], parse("1m")).height >= 1)  # 09:15 is written
    first = [t for t in ticks if t.ts < _epoch("09:16:00")]
    ws.send(first[:2])  # 09:15 is written (the clock is past 09:16:02): late
    ws.send(
        [replace(t, price=t.price + 500) for t in ticks if _epoch("09:17:00") <= t.ts < _epoch("09:17:05")]
    )  # dup ts, wrong price
    ws.advance(_epoch("09:20:03"))
    code, out, err = finish(child)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["late"] == 2
    got = cached(cache, NIFTY, "1m")
    want = source_1m[NIFTY].head(5)
    assert got.filter(pl.col("ts") != want["ts"][2]).equals(want.filter(pl.col("ts") != want["ts"][2]))


def test_a_token_rejected_at_connect_is_exit_3_with_the_login_advice_and_no_secret(kite, ws, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ws.reject = True
    child = start(env_for(kite, ws, cache), "-s", "NIFTY", "--until", "10:00")
    code, out, err = finish(child)
    assert code == 3, err
    assert "mde login" in err and "Traceback" not in err + out
    assert kite.access_token not in err + out and kite.api_key not in err + out
    assert len(err.strip().splitlines()) == 1


def test_a_token_rejected_mid_session_keeps_what_was_built_and_is_exit_3(kite, ws, source_1m, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ws.load([*script(source_1m, [NIFTY], minutes=5), sentinel("09:20:05")])
    child = start(env_for(kite, ws, cache), "-s", "NIFTY", "--until", "10:00")
    ws.wait_subscribed([NIFTY], "full", timeout=30)
    ws.advance(_epoch("09:20:10"))
    store = CandleStore(cache)
    _wait(lambda: store.read(INST[NIFTY], parse("1m")).height == 5)
    ws.kick("Token expired")
    code, out, err = finish(child)
    assert code == 3, err
    assert "mde login" in err and "Traceback" not in err
    assert kite.access_token not in err + out
    assert cached(cache, NIFTY, "1m").equals(source_1m[NIFTY].head(5))


def test_sigterm_writes_every_complete_candle_and_exits_0(kite, ws, source_1m, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ws.load(script(source_1m, [NIFTY], minutes=10))
    child = start(env_for(kite, ws, cache), "-s", "NIFTY", "-t", "1m", "--json")
    ws.wait_subscribed([NIFTY], "full", timeout=30)
    ws.advance(_epoch("09:21:30"))
    # wait until the stream has seen 09:21:30 (its 09:20 candle was then final and written)
    store = CandleStore(cache)
    _wait(lambda: store.read(INST[NIFTY], parse("1m")).height == 6)
    child.send_signal(signal.SIGTERM)
    code, out, err = finish(child)
    assert code == 0, err
    assert json.loads(out)["reason"] == "signal"
    assert cached(cache, NIFTY, "1m").equals(source_1m[NIFTY].head(6))


def test_kill_9_then_a_rerun_goes_on_without_a_hole(kite, ws, source_1m, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ws.load([*script(source_1m, [NIFTY], minutes=20), sentinel("09:35:03")])
    child = start(env_for(kite, ws, cache), "-s", "NIFTY", "-t", "1m", "-t", "5m")
    ws.wait_subscribed([NIFTY], "full", timeout=30)
    ws.advance(_epoch("09:22:30"))
    store = CandleStore(cache)
    _wait(lambda: store.read(INST[NIFTY], parse("1m")).height == 7)
    child.kill()
    child.wait()
    ws.wait_for(lambda: not ws.live(), what="the killed stream's connection to close")
    ws.advance(_epoch("09:26:20"))  # nobody listens: these ticks are gone, as on the exchange
    again = start(
        env_for(kite, ws, cache, now="09:26:20"),
        "-s",
        "NIFTY",
        "-t",
        "1m",
        "-t",
        "5m",
        "--until",
        "09:35",
        "--no-reconcile",
        "--json",
    )
    ws.wait_subscribed([NIFTY], "full", timeout=30)
    ws.advance(_epoch("09:35:03"))
    code, out, err = finish(again)
    assert code == 0, err
    want = source_1m[NIFTY].head(20)
    assert cached(cache, NIFTY, "1m").equals(want)  # 09:22..09:26 from the historical API, the rest from ticks
    assert cached(cache, NIFTY, "5m").equals(resample(want, parse("5m"), nse()))


def test_reconcile_makes_the_cache_equal_to_what_mde_fetch_writes(kite, ws, source_1m, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ws.load([*script(source_1m, [NIFTY], minutes=10), sentinel("09:25:03")])
    # Kite's historical 09:17 differs from what the ticks said
    row = source_1m[NIFTY].row(2, named=True)
    kite.now = datetime.fromisoformat(f"{DAY}T09:25:03+05:30")
    kite.add_candles(NIFTY, "minute", [(row["ts"], row["open"], row["high"], row["low"] - 0.5, row["close"], 0)])
    try:
        child = start(env_for(kite, ws, cache), "-s", "NIFTY", "-t", "1m", "-t", "5m", "--until", "09:25", "--json")
        ws.wait_subscribed([NIFTY], "full", timeout=30)
        ws.advance(_epoch("09:25:03"))
        code, out, err = finish(child)
        assert code == 0, err
        summary = json.loads(out)
        rec = summary["reconciled"]
        one = next(s for s in rec["series"] if s["timeframe"] == "1m")
        assert one["differed"] == 1 and one["max_price_ticks"] == 10.0 and one["missing"] == 0
        fetched = tmp_path / "fetched"
        env = env_for(kite, ws, fetched, now="09:25:03")
        for tf in ("1m", "5m"):
            res = run_mde("fetch", "NIFTY", "-t", tf, "--from", DAY, "--to", DAY, env=env)
            assert res.returncode == 0, res.stderr
            a, b = CandleStore(cache), CandleStore(fetched)
            assert a.read(INST[NIFTY], parse(tf)).equals(b.read(INST[NIFTY], parse(tf)))
            ma, mb = a.manifest(INST[NIFTY], parse(tf)), b.manifest(INST[NIFTY], parse(tf))
            assert ma is not None and mb is not None
            assert ma.coverage == mb.coverage and ma.ticks == []
    finally:
        kite.add_candles(NIFTY, "minute", [(row["ts"], row["open"], row["high"], row["low"], row["close"], 0)])


def test_more_instruments_than_kite_streams_is_one_line_before_connecting(tmp_path: Path) -> None:
    symbols = ",".join(f"S{i}" for i in range(9001))
    res = run_mde(
        "stream",
        "--symbols",
        symbols,
        env={
            "MDE_CACHE_DIR": str(tmp_path / "c"),
            "KITE_API_KEY": "k",
            "KITE_ACCESS_TOKEN": "t",
            "MDE_KITE_ROOT": "http://127.0.0.1:9",
            "MDE_KITE_WS_ROOT": "ws://127.0.0.1:9",
        },
    )
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "3 connections x 3000" in res.stderr
    assert not (tmp_path / "c").exists()


def test_ws_root_is_configurable() -> None:
    assert load(environ={}).kite.ws_root == "wss://ws.kite.trade"
    assert load(environ={"MDE_KITE_WS_ROOT": "ws://127.0.0.1:1/"}).kite.ws_root == "ws://127.0.0.1:1"
    assert load(environ={}).stream_grace == 2.0


def _wait(predicate, timeout: float = 30.0) -> None:
    """Poll the cache (written by another process) until `predicate` holds; the timeout only guards a hang."""
    import threading

    done = threading.Event()
    for _ in range(int(timeout / 0.05)):
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - a file being replaced: look again
            pass
        done.wait(0.05)
    raise AssertionError("timed out waiting for the stream to write")


def test_mde_stream_reconcile_date_alone_replaces_the_streamed_day(kite, ws, source_1m, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ws.load([*script(source_1m, [NIFTY], minutes=5), sentinel("09:20:03")])
    child = start(env_for(kite, ws, cache), "-s", "NIFTY", "--until", "09:20", "--no-reconcile")
    ws.wait_subscribed([NIFTY], "full", timeout=30)
    ws.advance(_epoch("09:20:03"))
    code, out, err = finish(child)
    assert code == 0, err
    manifest = CandleStore(cache).manifest(INST[NIFTY], parse("1m"))
    assert manifest is not None and manifest.ticks and manifest.coverage == []
    kite.now = datetime.fromisoformat(f"{DAY}T09:20:03+05:30")
    res = run_mde("stream", "--reconcile", DAY, "-s", "NIFTY", "--json", env=env_for(kite, ws, cache, now="09:20:03"))
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["differed"] == 0 and report["series"][0]["kite"] == 5
    manifest = CandleStore(cache).manifest(INST[NIFTY], parse("1m"))
    assert manifest is not None and manifest.ticks == [] and manifest.coverage
    assert cached(cache, NIFTY, "1m").equals(source_1m[NIFTY].head(5))
    res = run_mde("stream", "--reconcile", "2024-06-15", "-s", "NIFTY", env=env_for(kite, ws, cache, now="09:20:03"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "future" in res.stderr


def test_a_server_restart_is_shown_and_its_candle_comes_from_the_historical_api(
    kite, ws, source_1m, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    ws.load([*script(source_1m, [NIFTY], minutes=6), sentinel("09:21:03")])
    child = start(env_for(kite, ws, cache), "-s", "NIFTY", "--until", "09:21", "--no-reconcile")
    ws.wait_subscribed([NIFTY], "full", timeout=30)
    ws.advance(_epoch("09:17:30"))
    ws.restart()  # every connection cut; the same port listens again with no subscriptions
    ws.wait_subscribed([NIFTY], "full", timeout=30)
    ws.advance(_epoch("09:21:03"))
    code, out, err = finish(child)
    assert code == 0, err
    assert "disconnected" in out and "connected (2)" in out and "1 reconnects" in out
    assert cached(cache, NIFTY, "1m").equals(source_1m[NIFTY].head(6))
    asked = kite.requests_to("/instruments/historical")
    assert len(asked) == 1 and asked[0].query["from"].endswith("09:17:00")  # the 09:17 candle, from Kite
