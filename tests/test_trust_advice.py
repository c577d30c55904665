"""Advice that does not loop (issue 14, section 2).

Every error that says "run `mde ...`" is followed here as printed (the command parsed out of
the message), and the original command must then succeed or fail differently. Sources say what
they have: the sample refuses a range outside its span (nothing recorded), a range without an
NSE session is refused by fetch and replay, and a Kite answer of no candles is recorded as
empty, which replay does not advise fetching again.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from conftest import NSE_DATA, REPO, run_mde
from mde.clock import IST

ADVICE = re.compile(r"`(mde [^`]+)`")
REPLAY = ["replay", "--strategy", "sma_cross", "--symbol", "NIFTY", "--segment", "futures"]


def snapshot(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".lock" not in p.name
    }


def advised(stderr: str) -> list[str]:
    """The `mde ...` commands an error tells the user to run, as argument lists."""
    return [shlex.split(cmd)[1:] for cmd in ADVICE.findall(stderr)]


def follow(cli, args: list[str], *, extra_args: list[str] | None = None) -> tuple[object, object]:
    """Run `args` (it must fail with advice), run the advice as printed, run `args` again."""
    first = cli(*args)
    assert first.exit_code != 0, first.output
    assert "Traceback" not in first.stderr
    if extra_args is None:
        commands = advised(first.stderr)
        assert commands, first.stderr
        for command in commands[:1]:  # "run X, or Y": X is the advice
            done = cli(*command)
            assert done.exit_code == 0, (command, done.output)
        again = cli(*args)
    else:
        again = cli(*args, *extra_args)
    assert again.exit_code == 0 or again.stderr != first.stderr, (first.stderr, again.stderr)
    return first, again


# -- each advice-bearing error, followed ----------------------------------------------------


def test_replay_of_an_uncached_series_advises_a_fetch_that_makes_it_run(cli) -> None:
    first, again = follow(cli, [*REPLAY, "-t", "1m", "--from", "2024-06-03", "--to", "2024-06-07"])
    assert "run `mde fetch NIFTY --timeframe 1m --from 2024-06-03 --to 2024-06-07`" in first.stderr
    assert again.exit_code == 0, again.output


def test_replay_gap_advice_fills_the_gap(cli) -> None:
    assert cli("fetch", "NIFTY", "-t", "5m", "--from", "2024-12-02", "--to", "2024-12-13").exit_code == 0
    first, again = follow(cli, [*REPLAY, "-t", "5m", "--from", "2024-12-02", "--to", "2024-12-31"])
    assert "the cache lacks 11 session(s)" in first.stderr
    assert again.exit_code == 0, again.output


def test_replay_over_the_sample_span_is_told_the_span_and_allow_gaps_runs(cli) -> None:
    """The December 1m replay of the issue: the sample's 1m ends on 2024-06-28, so no fetch can
    help; the error names the span and advises no fetch."""
    res = cli(*REPLAY, "-t", "1m", "--from", "2024-12-02", "--to", "2024-12-31")
    assert res.exit_code == 2 and not advised(res.stderr)
    assert "the sample has no 1m candles of NIFTY between 2024-12-02 and 2024-12-31" in res.stderr
    assert "2024-01-01 to 2024-06-28" in res.stderr
    # across the end of the span: fetch what exists (advised), then the rest is named, not advised
    first, again = follow(cli, [*REPLAY, "-t", "1m", "--from", "2024-06-24", "--to", "2024-07-05"])
    assert "--from 2024-06-24 --to 2024-06-28" in first.stderr
    assert again.exit_code == 2 and not advised(again.stderr) and "outside what the sample has" in again.stderr
    _, allowed = follow(
        cli, [*REPLAY, "-t", "1m", "--from", "2024-06-24", "--to", "2024-07-05"], extra_args=["--allow-gaps"]
    )
    assert allowed.exit_code == 0 and "skipped (--allow-gaps)" in allowed.output


def test_replay_with_allow_gaps_and_no_candle_in_range_advises_a_fetch_that_helps(cli) -> None:
    assert cli("fetch", "NIFTY", "-t", "5m", "--from", "2024-12-02", "--to", "2024-12-06").exit_code == 0
    first, again = follow(cli, [*REPLAY, "-t", "5m", "--from", "2024-11-04", "--to", "2024-11-08", "--allow-gaps"])
    assert "no cached 5m candles of NIFTY between 2024-11-04 and 2024-11-08" in first.stderr
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize("tf", ["1m", "5m", "15m", "1d"])
def test_window_of_an_uncached_series_advises_a_refresh_that_fills_it(cli, tf: str) -> None:
    first, again = follow(cli, ["window", "NIFTY", "-t", tf, "-n", "3"])
    assert f"run `mde refresh --symbols NIFTY --timeframe {tf}`" in first.stderr
    assert again.exit_code == 0 and again.stdout


def test_a_series_the_sample_cannot_give_gets_no_advice(cli) -> None:
    for args in (
        ["window", "INFY", "-t", "5m"],
        ["window", "TCS"],
        [*REPLAY[:4], "INFY", "-t", "5m", "--from", "2024-12-09", "--to", "2024-12-13", "--costs", "none"],
    ):
        res = cli(*args)
        assert res.exit_code == 2 and not advised(res.stderr) and "the sample has none to fetch" in res.stderr, (
            res.stderr
        )


def test_an_unreadable_cache_file_names_the_fetch_that_replaces_it(cli, cache_dir: Path, tmp_path: Path) -> None:
    assert cli("fetch", "NIFTY", "-t", "1m", "--from", "2024-05-27", "--to", "2024-06-07").exit_code == 0
    bad = next(cache_dir.rglob("2024-06.parquet"))
    bad.write_bytes(b"PAR1 not really")
    first = cli("window", "NIFTY", "-t", "1m", "-n", "3")
    assert first.exit_code == 6
    assert (
        "move it aside, then run `mde fetch 'NSE:NIFTY 50' --timeframe 1m --from 2024-06-01 --to 2024-06-30`"
        in first.stderr
    )
    shutil.move(bad, tmp_path / "aside.parquet")  # the first half of the advice
    (command,) = advised(first.stderr)
    assert cli(*command).exit_code == 0
    again = cli("window", "NIFTY", "-t", "1m", "-n", "3")
    assert again.exit_code == 0 and "2024-06-28 15:29" in again.stdout


def test_refusing_to_mix_sources_names_the_prune_that_clears_the_way(cli, cache_dir: Path, tmp_path: Path) -> None:
    assert cli("fetch", "NIFTY", "-t", "5m", "--from", "2024-12-02", "--to", "2024-12-06").exit_code == 0
    csv = tmp_path / "mine.csv"
    csv.write_text("ts,open,high,low,close,volume\n2024-12-09T09:15:00+05:30,100,101,99,100,5\n")
    first, again = follow(cli, ["import", str(csv), "--symbol", "NIFTY", "-t", "5m"])
    assert (
        "refusing to mix" in first.stderr
        and "run `mde prune --before 2024-12-07 --symbol 'NSE:NIFTY 50' --timeframe 5m`" in first.stderr
    )
    assert again.exit_code == 0 and "1 new" in again.stdout


# -- sources say what they have; sessionless ranges -------------------------------------------


def test_a_fetch_outside_the_sample_span_is_one_line_and_records_nothing(cli, cache_dir: Path) -> None:
    assert cli("fetch", "NIFTY", "-t", "5m", "--from", "2024-12-02", "--to", "2024-12-06").exit_code == 0
    before = snapshot(cache_dir)
    res = cli("fetch", "NIFTY", "-t", "5m", "--from", "2010-01-01", "--to", "2010-01-31")
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert "the sample has no 5m candles of NSE:NIFTY 50 between 2010-01-01 and 2010-01-31" in res.stderr
    assert "2024-01-01 09:15 to 2024-12-31 15:30" in res.stderr and "nothing was recorded" in res.stderr
    assert snapshot(cache_dir) == before
    ls = json.loads(cli("ls", "-f", "json").stdout)
    assert [c[0][:10] for c in ls[0]["coverage"]] == ["2024-12-02"]


def test_a_fetch_across_the_sample_span_records_only_what_the_sample_has(cli) -> None:
    res = cli("fetch", "NIFTY", "-t", "1m", "--from", "2024-06-24", "--to", "2024-07-05")
    assert res.exit_code == 0
    (entry,) = json.loads(cli("ls", "-f", "json").stdout)
    assert entry["coverage"] == [["2024-06-24T00:00:00+05:30", "2024-06-28T15:30:00+05:30"]]


@pytest.mark.parametrize(
    ("lo", "hi"), [("2024-12-07", "2024-12-08"), ("2024-12-25", "2024-12-25"), ("2024-11-01", "2024-11-01")]
)
def test_ranges_without_a_session_are_refused_by_fetch_and_replay(cli, cache_dir: Path, lo: str, hi: str) -> None:
    if lo == "2024-11-01":  # Diwali: a holiday with a Muhurat session, so it is a session day
        assert cli("fetch", "NIFTY", "-t", "5m", "--from", lo, "--to", hi).exit_code == 0
        return
    res = cli("fetch", "NIFTY", "-t", "5m", "--from", lo, "--to", hi)
    assert res.exit_code == 2 and f"no NSE session between {lo} and {hi}" in res.stderr
    assert not cache_dir.exists()
    rep = cli(*REPLAY, "-t", "5m", "--from", lo, "--to", hi)
    assert rep.exit_code == 2 and f"no NSE session between {lo} and {hi}" in rep.stderr and not advised(rep.stderr)


def test_library_fetch_outside_the_span_raises_and_latest_is_cut_to_the_span(engine) -> None:
    from mde.errors import InputError

    with pytest.raises(InputError, match="it has them from 2024-01-01 09:15 to 2024-06-28 15:30 only"):
        engine.fetch_historical("NIFTY", "1m", "2024-12-02", "2024-12-31")
    df = engine.fetch_latest("NIFTY", "1m", count=10)
    assert df.height == 10 and str(df["ts"][-1]).startswith("2024-06-28 15:29")
    manifest = engine.store.manifest(engine.resolve("NIFTY"), __import__("mde.timeframes").timeframes.parse("1m"))
    assert max(b for _, b in manifest.coverage) == datetime(2024, 6, 28, 15, 30, tzinfo=IST)


# -- Kite: an empty answer is recorded as empty, and replay does not advise fetching it again ----


def test_a_kite_empty_answer_is_recorded_as_empty_and_replay_does_not_loop(tmp_path: Path) -> None:
    try:
        from kite_server import KiteServer
    except ImportError:  # pragma: no cover
        from tests.kite_server import KiteServer

    cache = tmp_path / "cache"
    with KiteServer(instruments_csv=REPO / "data" / "instruments.csv") as srv:
        srv.load_csv(256265, "5minute", NSE_DATA / "NIFTY50_5m_2024.csv")
        now = "2024-12-31T15:31:00+05:30"
        srv.now = datetime.fromisoformat(now)
        env = {
            "KITE_API_KEY": srv.api_key,
            "KITE_ACCESS_TOKEN": srv.access_token,
            "MDE_KITE_ROOT": srv.url,
            "MDE_NOW": now,
            "MDE_SOURCE": "kite",
            "MDE_CACHE_DIR": str(cache),
            "MDE_TOKEN_FILE": str(tmp_path / "t.json"),
        }
        replay = [*REPLAY, "-t", "5m", "--from", "2010-01-04", "--to", "2010-01-08"]
        first = run_mde(*replay, env=env)
        assert first.returncode == 2
        (command,) = advised(first.stderr)
        assert command == ["fetch", "NIFTY", "--timeframe", "5m", "--from", "2010-01-04", "--to", "2010-01-08"]
        fetched = run_mde(*command, env=env)
        assert fetched.returncode == 0, fetched.stderr
        assert "the source has no candles" in fetched.stdout and "recorded as empty" in fetched.stdout
        again = run_mde(*replay, env=env)
        assert again.returncode == 2 and again.stderr != first.stderr and not advised(again.stderr)
        assert "answered no 5m candles of NIFTY between 2010-01-04 and 2010-01-08" in again.stderr
        # a later answer with candles takes the empty mark away
        assert (
            run_mde("fetch", "NIFTY", "-t", "5m", "--from", "2024-12-02", "--to", "2024-12-06", env=env).returncode == 0
        )
        (entry,) = json.loads(run_mde("ls", "-f", "json", env=env).stdout)
        assert entry["empty"] == [["2010-01-04T00:00:00+05:30", "2010-01-08T23:59:59.999999+05:30"]]
        assert all(not c[0].startswith("2010") for c in entry["coverage"])


# -- the inventory of advice: every "run `mde ...`" in the code is one of those followed above --


def test_every_advice_in_the_code_is_followed_by_a_test_here() -> None:
    followed = {
        "replay.py": 4,  # uncached series, gap, no candle in range with --allow-gaps; a short last session
        # (followed in tests/test_faults_source.py::test_replay_warns_when_the_last_session_in_range_is_short)
        "engine.py": 2,  # window of an uncached series; the built-from note (followed in test_trust_window.py)
        "store.py": 2,  # unreadable file (fetch), refusing to mix (prune)
    }
    found: dict[str, int] = {}
    for path in (REPO / "src" / "mde").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        n = len(re.findall(r"`mde (?:fetch|refresh|prune) [^`]*\{", text))  # a formatted command: advice
        if n:
            found[path.name] = n
    assert found == followed


def test_a_kite_refresh_of_an_instrument_with_no_candles_does_not_loop(tmp_path: Path) -> None:
    """`mde window` of an uncached series advises `mde refresh`; when Kite has nothing for it, the
    refresh records an empty range and the window then says so, advising nothing."""
    try:
        from kite_server import KiteServer
    except ImportError:  # pragma: no cover
        from tests.kite_server import KiteServer

    with KiteServer(instruments_csv=REPO / "data" / "instruments.csv") as srv:
        now = "2024-12-31T15:31:00+05:30"
        srv.now = datetime.fromisoformat(now)
        env = {
            "KITE_API_KEY": srv.api_key,
            "KITE_ACCESS_TOKEN": srv.access_token,
            "MDE_KITE_ROOT": srv.url,
            "MDE_NOW": now,
            "MDE_SOURCE": "kite",
            "MDE_CACHE_DIR": str(tmp_path / "cache"),
            "MDE_TOKEN_FILE": str(tmp_path / "t.json"),
        }
        first = run_mde("window", "INFY", "-t", "5m", env=env)
        assert first.returncode == 2
        (command,) = advised(first.stderr)
        assert command == ["refresh", "--symbols", "INFY", "--timeframe", "5m"]
        done = run_mde(*command, env=env)
        assert done.returncode == 0, done.stderr
        again = run_mde("window", "INFY", "-t", "5m", env=env)
        assert again.returncode == 2 and again.stderr != first.stderr and not advised(again.stderr)
        assert "the source answered none" in again.stderr
