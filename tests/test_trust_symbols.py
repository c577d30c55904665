"""Unknown symbols get one answer everywhere: `unknown symbol 'NIFTI'; did you mean NIFTY?`
(exit 2, HTTP 422), from one offline resolver (aliases, the instruments dump shipped with mde
or the cached one, remembered and cached instruments). A known symbol that is only not cached
keeps "no cached 5m candles ... run ..." (NotCached, HTTP 404). And `mde instruments` works
offline on the sample source, from the dump shipped inside the package."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from conftest import REPO, run_mde
from mde.config import Settings
from mde.engine import MarketDataEngine
from mde.errors import InputError, NotCached
from mde.instruments import BUNDLED_DATE, BUNDLED_DUMP, SCHEMA, OfflineCatalog, bundled_dump

NOW = "2024-12-31T15:30:00+05:30"


def env_for(cache: Path, **extra: str) -> dict[str, str]:
    return {"MDE_CACHE_DIR": str(cache), "MDE_SOURCE": "sample", "MDE_NOW": NOW, **extra}


def mde(cache: Path, *args: str, **extra: str):
    return run_mde(*args, env=env_for(cache, **extra), cwd=cache.parent)


def snapshot(folder: Path) -> dict[str, bytes]:
    return (
        {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        if folder.exists()
        else {}
    )


@pytest.fixture(scope="module")
def nifty_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("symbols") / "cache"
    done = run_mde("refresh", "--symbols", "NIFTY", "--count", "100", env=env_for(cache), cwd=cache.parent)
    assert done.returncode == 0, done.stderr
    return cache


# -- the CLI ---------------------------------------------------------------------------------


@pytest.mark.parametrize("typo", ["NIFTI", "nifti", " NIFTI "])
def test_window_unknown_symbol_suggests_and_exits_2(nifty_cache: Path, typo: str) -> None:
    before = snapshot(nifty_cache)
    done = mde(nifty_cache, "window", typo)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: unknown symbol {typo.strip()!r}; did you mean NIFTY"), lines[0]
    assert "no cached" not in done.stderr
    assert snapshot(nifty_cache) == before


def test_window_unknown_symbol_without_close_match_says_how_to_find_it(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    done = mde(cache, "window", "FOOBARQ")
    assert done.returncode == 2
    assert "unknown symbol 'FOOBARQ'" in done.stderr and "mde instruments --search" in done.stderr
    assert not cache.exists()  # nothing written


def test_the_advised_instruments_search_works_offline(tmp_path: Path) -> None:
    """The advice of an unknown symbol (`mde instruments --search TEXT`) runs on the sample source."""
    done = mde(tmp_path / "cache", "instruments", "--search", "reliance", "-f", "json")
    assert done.returncode == 0, done.stderr
    assert "RELIANCE" in {row["tradingsymbol"] for row in json.loads(done.stdout)}


@pytest.mark.parametrize("symbol", ["TCS", "NIFTY-FUT", "NSE:INFY"])
def test_window_known_but_not_cached_keeps_not_cached(nifty_cache: Path, symbol: str) -> None:
    done = mde(nifty_cache, "window", symbol)
    assert done.returncode == 2
    # on the sample source, which has none of these at 5m, the message says so instead of
    # advising a refresh that would fail the same way (tests/test_trust_advice.py)
    assert done.stderr.startswith(f"error: no cached 5m candles for {symbol}")
    assert "unknown symbol" not in done.stderr


def test_window_normalises_the_symbol_as_every_other_path(nifty_cache: Path) -> None:
    done = mde(nifty_cache, "window", "nse:nifty   50", "-n", "2")
    assert done.returncode == 0, done.stderr
    assert "NSE:NIFTY 50" in done.stdout and "NIFTY   50" not in done.stdout
    bad = mde(nifty_cache, "window", "NIFTY/../x")
    assert bad.returncode == 2 and "invalid symbol" in bad.stderr


@pytest.mark.parametrize("extra", [[], ["--dry-run"]])
def test_prune_unknown_symbol_is_an_error_not_nothing_to_prune(nifty_cache: Path, extra: list[str]) -> None:
    before = snapshot(nifty_cache)
    done = mde(nifty_cache, "prune", "--before", "2024-12-01", "--symbol", "FOOBAR", *extra)
    assert done.returncode == 2
    assert "unknown symbol 'FOOBAR'" in done.stderr and "nothing to prune" not in done.stdout
    typo = mde(nifty_cache, "prune", "--before", "2024-12-01", "--symbol", "NIFTI", *extra)
    assert typo.returncode == 2 and "did you mean NIFTY" in typo.stderr
    assert snapshot(nifty_cache) == before


def test_prune_known_symbol_with_nothing_cached_is_nothing_to_prune(nifty_cache: Path) -> None:
    done = mde(nifty_cache, "prune", "--before", "2024-12-01", "--symbol", "TCS", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "nothing to prune" in done.stdout


def test_replay_and_paper_unknown_symbol(nifty_cache: Path) -> None:
    before = snapshot(nifty_cache)
    rep = mde(
        nifty_cache,
        "replay",
        "--strategy",
        "sma_cross",
        "-s",
        "NIFTI",
        "--from",
        "2024-12-02",
        "--to",
        "2024-12-31",
        "--segment",
        "futures",
    )
    assert rep.returncode == 2 and "unknown symbol 'NIFTI'; did you mean NIFTY" in rep.stderr, rep.stderr
    pap = mde(
        nifty_cache,
        "paper",
        "--strategy",
        "sma_cross",
        "-s",
        "NIFTI",
        "--source",
        "sample",
        "--date",
        "2024-06-14",
        "--segment",
        "futures",
    )
    assert pap.returncode == 2 and "unknown symbol 'NIFTI'; did you mean NIFTY" in pap.stderr, pap.stderr
    assert snapshot(nifty_cache) == before  # no journal left behind


# -- the library and the API --------------------------------------------------------------------


def test_engine_tells_unknown_from_not_cached(engine: MarketDataEngine) -> None:
    with pytest.raises(InputError, match=r"^unknown symbol 'NIFTI'; did you mean NIFTY") as info:
        engine.get_window("NIFTI", "5m")
    assert not isinstance(info.value, NotCached)
    with pytest.raises(NotCached):
        engine.get_window("RELIANCE", "15m")
    with pytest.raises(InputError, match="unknown symbol 'BANKNIFTYY'; did you mean BANKNIFTY"):
        engine.history("BANKNIFTYY", "5m")
    assert not engine.settings.cache_dir.exists()  # reading wrote nothing (no known_instruments.json)


def test_aliases_remembered_and_cached_instruments_are_known(settings: Settings, tmp_path: Path) -> None:
    meta = settings.cache_dir / "_meta"
    meta.mkdir(parents=True)
    # an expired contract, long gone from the dump, remembered by an earlier Kite session
    (meta / "known_instruments.json").write_text(json.dumps({"NFO:NIFTY23DECFUT": {"token": 1, "name": "NIFTY"}}))
    eng = MarketDataEngine(settings.with_overrides(aliases={"MYIDX": "NSE:NIFTY 50", "BADALIAS": "NSE:NOSUCHTHINGQ"}))
    for known in ("NIFTY23DECFUT", "NFO:NIFTY23DECFUT", "MYIDX", "INDIAVIX", "FINNIFTY"):
        with pytest.raises(NotCached):
            eng.get_window(known, "5m")
    with pytest.raises(InputError, match=r"'BADALIAS' \(alias of NSE:NOSUCHTHINGQ\)"):
        eng.get_window("BADALIAS", "5m")
    # a series imported under a name the dump does not list is cached, so it is known
    csv = tmp_path / "x.csv"
    csv.write_text("ts,open,high,low,close,volume\n2024-06-14T09:15:00+05:30,1,2,0.5,1.5,10\n")
    with pytest.raises(InputError, match=r"unknown symbol 'MYDATA'.*give it with its exchange: --symbol NSE:MYDATA$"):
        eng.import_file(csv, "MYDATA", "5m")  # a typo must not become a series
    assert not (settings.cache_dir / "NSE").exists()
    eng.import_file(csv, "NSE:MYDATA", "5m")  # said explicitly: imported under that name
    assert eng.get_window("MYDATA", "5m").height == 1
    with pytest.raises(NotCached):
        eng.get_window("MYDATA", "1m")  # not buildable from 5m, but the symbol is known


def test_api_unknown_symbol_is_422_with_suggestion_and_not_cached_is_404(settings: Settings) -> None:
    from fastapi.testclient import TestClient

    from mde.api import create_app

    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        bad = client.get("/api/market_data/window", params={"symbol": "NIFTI"})
        assert bad.status_code == 422
        assert bad.json()["error"].startswith("unknown symbol 'NIFTI'; did you mean NIFTY")
        missing = client.get("/api/market_data/window", params={"symbol": "TCS"})
        assert missing.status_code == 404 and "no cached 5m candles for TCS" in missing.json()["error"]


_DUMP, _ = bundled_dump()
_EQUITIES = sorted(
    _DUMP.filter((pl.col("exchange") == "NSE") & (pl.col("segment") == "NSE"))["tradingsymbol"].to_list()
)
_POOL = {s.upper() for s in _DUMP["tradingsymbol"].to_list()}


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(symbol=st.sampled_from(_EQUITIES))
def test_every_listed_equity_is_known(engine: MarketDataEngine, symbol: str) -> None:
    try:
        engine.check_symbol(symbol)
    except InputError as exc:  # a listed name the validator refuses (odd punctuation) is "invalid", never "unknown"
        assert "unknown symbol" not in exc.message


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(symbol=st.from_regex(r"\A[A-Z][A-Z0-9]{2,11}\Z"))
def test_a_name_nobody_lists_is_unknown_never_not_cached(engine: MarketDataEngine, symbol: str) -> None:
    from mde.symbols import BUILTIN_ALIASES

    if symbol in _POOL or symbol in BUILTIN_ALIASES or symbol.endswith("FUT"):
        return
    with pytest.raises(InputError) as info:
        engine.get_window(symbol, "5m")
    assert not isinstance(info.value, NotCached)
    assert info.value.message.startswith(f"unknown symbol {symbol!r}")
    assert "\n" not in info.value.message


# -- the dump shipped inside the package ------------------------------------------------------------


def test_the_shipped_dump_is_what_the_build_script_makes(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_instruments", REPO / "data" / "build_instruments.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    built = mod.build(out=tmp_path / "instruments.parquet")
    shipped, taken = bundled_dump()
    assert shipped.equals(built)
    assert dict(shipped.schema) == SCHEMA
    assert taken.date().isoformat() == BUNDLED_DATE
    assert BUNDLED_DUMP.is_relative_to(Path(__import__("mde").__file__).parent)  # inside the package, not data/
    assert BUNDLED_DUMP.stat().st_size < 400_000
    csv = pl.read_csv(REPO / "data" / "instruments.csv", infer_schema_length=0)
    assert shipped.height == csv.height
    assert set(shipped["instrument_token"].to_list()) == {int(t) for t in csv["instrument_token"]}


def test_instruments_on_the_sample_source_needs_no_kite_key(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    done = mde(cache, "instruments", "--search", "nifty", "-n", "5")
    assert done.returncode == 0, done.stderr
    assert "NIFTY 50" in done.stdout
    assert f"Kite dump of {BUNDLED_DATE} shipped with mde" in " ".join(done.stdout.split())
    js = mde(cache, "instruments", "--search", "NIFTY25DECFUT", "-f", "json")
    assert js.returncode == 0, js.stderr
    row = next(r for r in json.loads(js.stdout) if r["tradingsymbol"] == "NIFTY25DECFUT")
    assert row["lot_size"] == 75 and row["segment"] == "NFO-FUT"
    assert BUNDLED_DATE in js.stderr
    refresh = mde(cache, "instruments", "--refresh")
    assert refresh.returncode == 2 and "--source kite" in refresh.stderr
    assert not cache.exists()  # offline and read-only


def test_instruments_on_the_sample_source_prefers_a_cached_kite_dump(settings: Settings) -> None:
    meta = settings.cache_dir / "_meta"
    meta.mkdir(parents=True)
    small = _DUMP.head(3)
    small.write_parquet(meta / "instruments.parquet")
    (meta / "instruments.json").write_text(json.dumps({"fetched_at": "2026-03-02T08:00:00+05:30", "rows": 3}))
    cat = OfflineCatalog(meta, lambda: settings.now)  # type: ignore[arg-type,return-value]
    assert cat.table().height == 3 and not cat.bundled
    done = run_mde(
        "instruments",
        env={"MDE_CACHE_DIR": str(settings.cache_dir), "MDE_SOURCE": "sample"},
        cwd=settings.cache_dir.parent,
    )
    assert done.returncode == 0, done.stderr
    assert "3 of 3 instruments" in done.stdout and "2026-03-02" in done.stdout


def test_the_sample_source_tells_a_listed_symbol_it_lacks_from_a_typo(tmp_path: Path) -> None:
    from mde.sources.sample import SampleSource

    with pytest.raises(InputError, match=r"^the sample data has no 'TCS' \(NSE:TCS\); it has NSE:INFY.*--source kite"):
        SampleSource().resolve("TCS")
    with pytest.raises(InputError, match=r"^unknown symbol 'NIFTI' in the sample data; did you mean NIFTY"):
        SampleSource().resolve("NIFTI")
    cache = tmp_path / "cache"
    done = mde(cache, "fetch", "TCS", "--from", "2024-06-03")
    assert done.returncode == 2 and "unknown" not in done.stderr and "--source kite" in done.stderr
    assert not cache.exists()


def test_import_of_a_typo_is_refused_with_the_suggestion(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    csv = tmp_path / "n.csv"
    csv.write_text("ts,open,high,low,close,volume\n2024-06-14T09:15:00+05:30,1,2,0.5,1.5,10\n")
    done = mde(cache, "import", str(csv), "--symbol", "NIFTI", "-t", "5m")
    assert done.returncode == 2 and "unknown symbol 'NIFTI'; did you mean NIFTY" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (cache / "NSE").exists()
    ok = mde(cache, "import", str(csv), "--symbol", "NIFTY", "-t", "5m")
    assert ok.returncode == 0, ok.stderr
