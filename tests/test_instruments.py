"""The instruments catalog: daily dump, symbol resolution, remembered contracts.

The real kiteconnect client talks to tests/kite_server.py, which serves the real
11,776-row NSE+NFO dump in data/instruments.csv. Expected tokens and expiries are read from
that CSV, not typed in from memory, wherever the test is about the dump.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from kite_server import KiteServer
from mde.clock import IST
from mde.errors import CacheError, InputError, SourceError, SourceUnavailable
from mde.instruments import INDEX_TOKENS
from mde.sources.kite.instruments import InstrumentCatalog
from mde.symbols import Instrument

REPO = Path(__file__).resolve().parents[1]
DUMP_CSV = REPO / "data" / "instruments.csv"
DEC20 = datetime(2025, 12, 20, 10, 0, tzinfo=IST)


def dump() -> pl.DataFrame:
    return pl.read_csv(DUMP_CSV, infer_schema_length=0).with_columns(
        pl.col("instrument_token").cast(pl.Int64), pl.col("expiry").str.to_date(strict=False)
    )


def token_in_dump(exchange: str, tradingsymbol: str) -> int:
    hit = dump().filter((pl.col("exchange") == exchange) & (pl.col("tradingsymbol") == tradingsymbol))
    assert hit.height == 1, f"{exchange}:{tradingsymbol} is not in {DUMP_CSV}"
    return hit["instrument_token"][0]


def futures_in_dump(name: str, today: date) -> list[tuple[str, date]]:
    futs = (
        dump()
        .filter(
            (pl.col("instrument_type") == "FUT")
            & (pl.col("segment") == "NFO-FUT")
            & (pl.col("name") == name)
            & (pl.col("expiry") >= today)
        )
        .sort("expiry")
    )
    return list(zip(futs["tradingsymbol"].to_list(), futs["expiry"].to_list(), strict=True))


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def instrument_requests(server: KiteServer) -> int:
    return sum(1 for r in server.requests if r.path.startswith("/instruments"))


@pytest.fixture(scope="module")
def server():
    srv = KiteServer(instruments_csv=DUMP_CSV).start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _fresh_log(server: KiteServer) -> None:
    server.reset()


@pytest.fixture(scope="module")
def primed(server: KiteServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the full dump, downloaded once for the module (it takes ~1 s)."""
    folder = tmp_path_factory.mktemp("primed")
    InstrumentCatalog(folder, server.make_client().instruments, Clock(DEC20)).table()
    return folder


@pytest.fixture
def make_catalog(server: KiteServer, primed: Path, tmp_path: Path) -> Callable[..., InstrumentCatalog]:
    """make_catalog(now) -> a catalog whose folder holds the full dump, fetched at `fetched`
    (default: `now`, so it needs no download)."""
    folder = tmp_path / "_meta"

    def make(
        now: datetime = DEC20, *, clock: Clock | None = None, fetched: datetime | None = None
    ) -> InstrumentCatalog:
        clock = clock or Clock(now)
        if not (folder / "instruments.parquet").exists():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(primed / "instruments.parquet", folder / "instruments.parquet")
        fetched_at = (fetched or clock()).isoformat()
        (folder / "instruments.json").write_text(json.dumps({"fetched_at": fetched_at}))
        return InstrumentCatalog(folder, server.make_client().instruments, clock)

    return make


def small_csv(path: Path, keep: Callable[[pl.DataFrame], pl.Expr] | None = None, drop: list[str] = ()) -> Path:
    """A slice of the real dump (fast to download), without the tradingsymbols in `drop`."""
    d = pl.read_csv(DUMP_CSV, infer_schema_length=0)
    wanted = ["NIFTY 50", "INFY", "RELIANCE", "NIFTY25DECFUT", "NIFTY26JANFUT", "NIFTY26FEBFUT", "BANKNIFTY26JANFUT"]
    d = d.filter(pl.col("tradingsymbol").is_in(wanted) & ~pl.col("tradingsymbol").is_in(list(drop)))
    d.write_csv(path)
    return path


# -- once per IST day ------------------------------------------------------------------------
def test_the_dump_is_downloaded_once_per_ist_day_and_refresh_forces_it(tmp_path: Path) -> None:
    with KiteServer(instruments_csv=small_csv(tmp_path / "small.csv")) as srv:
        client = srv.make_client()
        clock = Clock(datetime(2025, 12, 20, 8, 30, tzinfo=IST))
        folder = tmp_path / "meta"

        first = InstrumentCatalog(folder, client.instruments, clock)
        assert first.table().height == 7
        assert instrument_requests(srv) == 1
        assert (folder / "instruments.parquet").is_file()
        meta = json.loads((folder / "instruments.json").read_text())
        assert datetime.fromisoformat(meta["fetched_at"]) == clock.now
        first.table()
        first.resolve("NIFTY-FUT", {})
        assert instrument_requests(srv) == 1  # cached in memory

        clock.now = datetime(2025, 12, 20, 23, 59, tzinfo=IST)  # same IST day, a new process
        second = InstrumentCatalog(folder, client.instruments, clock)
        assert second.table().equals(first.table())
        assert second.resolve("NIFTY-FUT", {}).tradingsymbol == "NIFTY25DECFUT"
        assert instrument_requests(srv) == 1

        # 19:00 UTC on the 20th is 00:30 IST on the 21st: a new IST day.
        clock.now = datetime(2025, 12, 20, 19, 0, tzinfo=UTC)
        third = InstrumentCatalog(folder, client.instruments, clock)
        third.table()
        third.table()
        assert instrument_requests(srv) == 2
        first.table()  # an object that outlived midnight also notices the new day
        assert instrument_requests(srv) == 2  # ...and finds today's dump on disk

        third.refresh()
        assert instrument_requests(srv) == 3
        assert datetime.fromisoformat(json.loads((folder / "instruments.json").read_text())["fetched_at"]) == clock.now


def test_index_aliases_need_no_dump(tmp_path: Path) -> None:
    def no_download() -> list[dict]:
        raise AssertionError("resolving an index alias must not download the instruments list")

    cat = InstrumentCatalog(tmp_path / "meta", no_download, Clock(DEC20))
    expected = {
        "NIFTY": Instrument("NSE", "NIFTY 50", 256265),
        "BANKNIFTY": Instrument("NSE", "NIFTY BANK", 260105),
        "FINNIFTY": Instrument("NSE", "NIFTY FIN SERVICE", 257801),
        "MIDCPNIFTY": Instrument("NSE", "NIFTY MID SELECT", 288009),
        "SENSEX": Instrument("BSE", "SENSEX", 265),
        "INDIAVIX": Instrument("NSE", "INDIA VIX", 264969),
        "nifty 50": Instrument("NSE", "NIFTY 50", 256265),
        "NSE:NIFTY BANK": Instrument("NSE", "NIFTY BANK", 260105),
    }
    for symbol, inst in expected.items():
        got = cat.resolve(symbol, {})
        assert (got, got.token) == (inst, inst.token), symbol
    assert not (tmp_path / "meta" / "instruments.parquet").exists()
    assert cat.known()["NSE:NIFTY 50"]["token"] == 256265
    info = cat.instrument_info(Instrument("NSE", "NIFTY BANK"))
    assert info is not None and info["segment"] == "INDICES" and info["expiry"] is None
    assert cat.instrument_info("BSE:SENSEX")["token"] == 265


def test_builtin_index_tokens_match_the_dump() -> None:
    for key, token in INDEX_TOKENS.items():
        exchange, tradingsymbol = key.split(":")
        if exchange == "NSE":  # the dump has NSE and NFO only; SENSEX is BSE token 265
            assert token_in_dump(exchange, tradingsymbol) == token, key


# -- resolution ------------------------------------------------------------------------------
def test_bare_symbols_are_nse_equities(make_catalog, server: KiteServer) -> None:
    cat = make_catalog()
    infy = cat.resolve("INFY", {})
    assert infy == Instrument("NSE", "INFY", 408065) and infy.token == token_in_dump("NSE", "INFY")
    assert cat.resolve(" reliance ", {}).token == 738561 == token_in_dump("NSE", "RELIANCE")
    assert cat.resolve("NSE:INFY", {}).token == 408065
    assert instrument_requests(server) == 0  # the dump on disk was fetched today


def test_explicit_and_bare_fo_symbols(make_catalog) -> None:
    cat = make_catalog()
    fut = cat.resolve("NFO:NIFTY25DECFUT", {})
    assert (fut.exchange, fut.tradingsymbol, fut.token) == (
        "NFO",
        "NIFTY25DECFUT",
        token_in_dump("NFO", "NIFTY25DECFUT"),
    )
    assert cat.resolve("NIFTY25DECFUT", {}) == fut and cat.resolve("nifty25decfut", {}).token == fut.token
    opt = cat.resolve("NIFTY25D2325800CE", {})
    assert (opt.key, opt.token) == ("NFO:NIFTY25D2325800CE", token_in_dump("NFO", "NIFTY25D2325800CE"))
    info = cat.instrument_info(opt)
    assert info == {
        "token": opt.token,
        "tick_size": 0.05,
        "lot_size": 75,
        "segment": "NFO-OPT",
        "expiry": date(2025, 12, 23),
        "instrument_type": "CE",
        "name": "NIFTY",
    }
    with pytest.raises(InputError, match="not on NSE"):
        cat.resolve("NSE:NIFTY25DECFUT", {})


@pytest.mark.parametrize("name", ["NIFTY", "BANKNIFTY"])
def test_nearest_futures_come_from_the_dump(make_catalog, name: str) -> None:
    today = DEC20.date()
    listed = futures_in_dump(name, today)
    assert [s for s, _ in listed] == [f"{name}25DECFUT", f"{name}26JANFUT", f"{name}26FEBFUT"]
    cat = make_catalog(DEC20)
    for n, suffix in enumerate(["-FUT", "-FUT2", "-FUT3"]):
        inst = cat.resolve(name + suffix, {})
        assert (inst.exchange, inst.tradingsymbol, inst.token) == (
            "NFO",
            listed[n][0],
            token_in_dump("NFO", listed[n][0]),
        )
        assert cat.instrument_info(inst)["expiry"] == listed[n][1]
    assert cat.resolve(name + "-FUT1", {}) == cat.resolve(name + "-FUT", {})
    assert cat.instrument_info(cat.resolve(name + "-FUT", {}))["expiry"] == date(2025, 12, 30)
    assert cat.instrument_info(cat.resolve(name + "-FUT2", {}))["expiry"] == date(2026, 1, 27)
    with pytest.raises(InputError, match="only 3 are unexpired"):
        cat.resolve(name + "-FUT4", {})
    assert cat.resolve("NFO:" + name + "-FUT", {}) == cat.resolve(name + "-FUT", {})
    with pytest.raises(InputError, match="not NSE"):
        cat.resolve("NSE:" + name + "-FUT", {})


def test_the_nearest_future_rolls_after_expiry_day(make_catalog) -> None:
    clock = Clock(datetime(2025, 12, 30, 15, 0, tzinfo=IST))  # expiry day: still December
    cat = make_catalog(clock=clock)
    assert cat.resolve("NIFTY-FUT", {}).tradingsymbol == "NIFTY25DECFUT"
    clock.now = datetime(2025, 12, 31, 9, 15, tzinfo=IST)
    cat = make_catalog(clock=clock)
    assert cat.resolve("NIFTY-FUT", {}).tradingsymbol == "NIFTY26JANFUT"
    assert cat.resolve("NIFTY-FUT2", {}).tradingsymbol == "NIFTY26FEBFUT"
    assert cat.resolve("BANKNIFTY-FUT", {}).tradingsymbol == "BANKNIFTY26JANFUT"
    with pytest.raises(InputError, match="only 2 are unexpired"):
        cat.resolve("NIFTY-FUT3", {})


def test_user_aliases_extend_and_override_builtins(make_catalog) -> None:
    cat = make_catalog()
    aliases = {"NIFTY": "NSE:NIFTY BANK", "RIL": "RELIANCE", "NF": "NIFTY-FUT2", "IDX": "FINNIFTY"}
    assert cat.resolve("nifty", aliases).token == 260105
    assert cat.resolve("RIL", aliases) == Instrument("NSE", "RELIANCE", 738561)
    assert cat.resolve("NF", aliases).tradingsymbol == "NIFTY26JANFUT"
    assert cat.resolve("IDX", aliases).token == 257801
    assert cat.resolve("BANKNIFTY", aliases).token == 260105  # built-ins still there
    with pytest.raises(InputError, match="loop"):
        cat.resolve("A", {"A": "B", "B": "A"})
    with pytest.raises(InputError, match="invalid symbol"):
        cat.resolve("X", {"X": "../etc"})
    with pytest.raises(InputError, match=r"'typo' \(alias of RELIANC\).*did you mean RELIANCE"):
        cat.resolve("typo", {"TYPO": "RELIANC"})


def test_unknown_symbols_suggest_close_matches(make_catalog) -> None:
    cat = make_catalog()
    with pytest.raises(InputError, match="INFYY") as err:
        cat.resolve("INFYY", {})
    assert "did you mean INFY" in str(err.value)
    with pytest.raises(InputError, match="NIFTY-FUT"):
        cat.resolve("NIFTY-FUTT", {})
    with pytest.raises(InputError, match="BANKNIFTY-FUT"):
        cat.resolve("BANKNIFTI-FUT", {})
    with pytest.raises(InputError, match="NIFTY25DECFUT"):
        cat.resolve("NFO:NIFTY25DECFTU", {})

    fresh = make_catalog()  # a fresh catalog builds its suggestion index too
    with pytest.raises(InputError, match="RELIANCE"):
        fresh.resolve("RELIANC", {})


def test_a_cached_dump_resolves_without_downloading_again(make_catalog) -> None:
    first = make_catalog()
    first.table()
    again = make_catalog()
    assert again.resolve("TCS", {}).token == token_in_dump("NSE", "TCS")
    assert again.downloads == 0  # speed is measured in bench/, not asserted here


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/b", "..", "", "  ", "x\x00y", "NSE:../INFY", "A" * 65])
def test_unsafe_symbols_are_rejected_before_any_file_access(tmp_path: Path, bad: str) -> None:
    folder = tmp_path / "meta"

    def no_download() -> list[dict]:
        raise AssertionError("must not download")

    cat = InstrumentCatalog(folder, no_download, Clock(DEC20))
    with pytest.raises(InputError):
        cat.resolve(bad, {})
    assert not folder.exists()


# -- remembered contracts --------------------------------------------------------------------
def test_a_contract_stays_resolvable_after_it_leaves_the_dump(make_catalog, tmp_path: Path) -> None:
    cat = make_catalog(DEC20)
    dec = cat.resolve("NFO:NIFTY25DECFUT", {})
    cat.resolve("NIFTY-FUT2", {})
    known = cat.known()
    assert known["NFO:NIFTY25DECFUT"] == {
        "token": dec.token,
        "name": "NIFTY",
        "expiry": "2025-12-30",
        "instrument_type": "FUT",
        "segment": "NFO-FUT",
        "lot_size": 75,
        "tick_size": 0.1,
        "first_seen": DEC20.isoformat(),
    }
    assert "NFO:NIFTY26JANFUT" in known
    assert json.loads(cat.known_path.read_text())["NFO:NIFTY25DECFUT"]["token"] == dec.token

    jan5 = Clock(datetime(2026, 1, 5, 9, 0, tzinfo=IST))
    with KiteServer(instruments_csv=small_csv(tmp_path / "jan.csv", drop=["NIFTY25DECFUT"])) as later:
        cat2 = InstrumentCatalog(cat.folder, later.make_client().instruments, jan5)
        table = cat2.refresh()
        assert instrument_requests(later) == 1
        assert table.filter(pl.col("tradingsymbol") == "NIFTY25DECFUT").is_empty()
        assert cat2.resolve("NFO:NIFTY25DECFUT", {}) == Instrument("NFO", "NIFTY25DECFUT", dec.token)
        assert cat2.resolve("NIFTY25DECFUT", {}).token == dec.token
        assert cat2.instrument_info(dec)["expiry"] == date(2025, 12, 30)
        assert cat2.resolve("NIFTY-FUT", {}).tradingsymbol == "NIFTY26JANFUT"
        assert cat2.known()["NFO:NIFTY25DECFUT"]["first_seen"] == DEC20.isoformat()
        with pytest.raises(InputError, match="unknown symbol"):
            cat2.resolve("NFO:NIFTY25NOVFUT", {})
        assert instrument_requests(later) == 1


def test_remembered_instruments_resolve_without_downloading_a_stale_dump(make_catalog, server: KiteServer) -> None:
    make_catalog(DEC20).resolve("INFY", {})
    cat = make_catalog(DEC20 + timedelta(days=3), fetched=DEC20)
    assert cat.resolve("INFY", {}).token == 408065
    assert cat.resolve("NIFTY", {}).token == 256265
    assert instrument_requests(server) == 0
    assert cat.resolve("TCS", {}).token == token_in_dump("NSE", "TCS")  # not remembered: download
    assert instrument_requests(server) == 1


def test_a_corrupt_memory_file_is_reported_not_overwritten(make_catalog) -> None:
    cat = make_catalog()
    cat.folder.mkdir(parents=True, exist_ok=True)
    cat.known_path.write_text("{not json")
    with pytest.raises(CacheError, match="known_instruments.json"):
        cat.resolve("INFY", {})
    assert cat.known_path.read_text() == "{not json"


# -- failures ---------------------------------------------------------------------------------
def test_a_failed_download_falls_back_to_the_previous_dump(make_catalog, caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def broken() -> list[dict]:
        calls.append(1)
        raise SourceUnavailable("Kite is down")

    folder = make_catalog(DEC20).folder
    cat = InstrumentCatalog(folder, broken, Clock(DEC20 + timedelta(days=1)))
    with caplog.at_level(logging.WARNING, logger="mde.instruments"):
        assert cat.resolve("TCS", {}).token == token_in_dump("NSE", "TCS")
    assert "could not download" in caplog.text
    cat.resolve("HDFCBANK", {})
    assert len(calls) == 1  # not retried on every call
    with pytest.raises(SourceUnavailable):
        cat.refresh()

    empty = InstrumentCatalog(cat.folder.parent / "empty", broken, Clock(DEC20))
    with pytest.raises(SourceUnavailable):
        empty.resolve("TCS", {})


def test_an_empty_dump_is_refused_and_the_cached_one_kept(make_catalog) -> None:
    good = make_catalog()
    rows = good.table().height
    cat = InstrumentCatalog(good.folder, lambda: [], Clock(DEC20))
    with pytest.raises(SourceError, match="empty"):
        cat.refresh()
    assert pl.read_parquet(good.dump_path).height == rows


# -- search -----------------------------------------------------------------------------------
def test_search_is_case_insensitive_with_equities_and_indices_first(make_catalog) -> None:
    cat = make_catalog()
    found = cat.search("reliance")
    assert found["tradingsymbol"][0] == "RELIANCE" and found["exchange"][0] == "NSE"
    assert cat.search("infosys")["tradingsymbol"][0] == "INFY"  # matches the name column
    nifty = cat.search("Nifty", limit=10)
    assert nifty.height == 10 and "NIFTY 50" in nifty["tradingsymbol"].to_list()
    assert set(nifty["segment"]) <= {"INDICES", "NSE"}
    assert cat.search("NIFTY25DECFUT")["tradingsymbol"][0] == "NIFTY25DECFUT"
    assert cat.search("zzzzqqq").is_empty()
    with pytest.raises(InputError):
        cat.search("  ")
