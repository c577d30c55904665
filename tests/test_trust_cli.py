"""The CLI surface a user types at: one-line usage errors, one option vocabulary, help that
keeps config names, validated paper risk flags, and the last-resort handler (exit 70).

Output formatting is checked on the real `mde` in a subprocess (run_mde); the rest in-process.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from conftest import REPO, run_mde
from mde.cli import app
from mde.config import load
from mde.errors import InputError
from mde.paper.risk import RiskEngine, RiskLimits
from mde.paper.rules import limits_from

SAMPLE = {"MDE_SOURCE": "sample"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NIFTY and BANKNIFTY 5m from the sample, the last 1000 candles of 2024 (read-only for these tests)."""
    path = tmp_path_factory.mktemp("trust-cli") / "cache"
    result = CliRunner().invoke(
        app, ["--cache-dir", str(path), "refresh", "--symbols", "NIFTY", "BANKNIFTY"], env=SAMPLE
    )
    assert result.exit_code == 0, result.stderr
    return path


def mde(cache: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_mde(*args, env={"MDE_CACHE_DIR": str(cache), **SAMPLE, **(env or {})})


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr and "╭" not in proc.stderr
    return lines[0]


# --- 1. usage errors: one line, exit 2 ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["window", "NIFTY", "-n", "abc"], "error: --limit: 'abc' is not an integer; see mde window --help"),
        (
            ["window", "NIFTY", "--format", "xml"],
            "error: --format: 'xml' is not one of 'table', 'json', 'csv'; see mde window --help",
        ),
        (["window"], "error: missing argument 'symbol'; see mde window --help"),
        (["window", "NIFTY", "--zzzzzzzz"], "error: no such option: --zzzzzzzz; see mde window --help"),
        (
            ["window", "NIFTY", "--limt", "3"],
            "error: no such option: --limt (Possible options: --limit, --quiet); see mde window --help",
        ),
        (["window", "NIFTY", "--limit"], "error: option '--limit' requires an argument; see mde window --help"),
        (["nosuchcommand"], "error: no such command 'nosuchcommand'; see mde --help"),
        (
            [
                "replay",
                "--strategy",
                "sma_cross",
                "-s",
                "NIFTY",
                "--from",
                "2024-12-20",
                "--to",
                "2024-12-31",
                "--cash",
                "lots",
            ],
            "error: --cash: 'lots' is not a number; see mde replay --help",
        ),
        (["fetch", "NIFTY"], "error: missing option '--from'; see mde fetch --help"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(cache: Path, args: list[str], line: str) -> None:
    proc = mde(cache, *args)
    assert proc.returncode == 2
    assert one_error_line(proc) == line
    assert proc.stdout == ""


def test_format_names_are_case_insensitive(cache: Path) -> None:
    runner = CliRunner()
    base = ["--cache-dir", str(cache), "window", "NIFTY", "-n", "3"]
    for fmt in ("csv", "json"):
        want = runner.invoke(app, [*base, "-f", fmt], env=SAMPLE)
        assert want.exit_code == 0 and want.stdout
        for spelling in (fmt.upper(), fmt.capitalize()):
            got = runner.invoke(app, [*base, "-f", spelling], env=SAMPLE)
            assert got.exit_code == 0, got.stderr
            assert got.stdout == want.stdout
    got = runner.invoke(app, ["--cache-dir", str(cache), "ls", "-f", "JSON"], env=SAMPLE)
    assert got.exit_code == 0 and json.loads(got.stdout)


def test_quiet_and_verbose_work_after_the_command_too(cache: Path) -> None:
    after = mde(cache, "window", "NIFTY", "-n", "2", "-q")
    before = mde(cache, "-q", "window", "NIFTY", "-n", "2")
    assert after.returncode == before.returncode == 0
    assert after.stdout == before.stdout and after.stderr == before.stderr == ""
    # -v: refresh lists each series (up to date) on top of the summary, as `mde -v refresh` does
    runner = CliRunner()
    v_after = runner.invoke(app, ["--cache-dir", str(cache), "refresh", "-s", "NIFTY", "-v"], env=SAMPLE)
    v_before = runner.invoke(app, ["--cache-dir", str(cache), "-v", "refresh", "-s", "NIFTY"], env=SAMPLE)
    plain = runner.invoke(app, ["--cache-dir", str(cache), "refresh", "-s", "NIFTY"], env=SAMPLE)
    assert "NSE:NIFTY 50 5m: up to date" in v_after.stdout and "NSE:NIFTY 50 5m: up to date" in v_before.stdout
    assert "up to date" not in plain.stdout
    # -q after the command silences refresh's summary line
    assert runner.invoke(app, ["--cache-dir", str(cache), "refresh", "-s", "NIFTY", "-q"], env=SAMPLE).stdout == ""


# --- 2. one option vocabulary --------------------------------------------------------------------

REPLAY = [
    "replay",
    "--strategy",
    "sma_cross",
    "--from",
    "2024-12-20",
    "--to",
    "2024-12-31",
    "--segment",
    "futures",
    "--json",
]


@pytest.mark.parametrize(
    "spelling",
    [
        ["--symbols", "NIFTY", "BANKNIFTY"],
        ["--symbol", "NIFTY", "BANKNIFTY"],
        ["--symbol", "NIFTY", "--symbol", "BANKNIFTY"],
        ["-s", "NIFTY", "-s", "BANKNIFTY"],
        ["--symbols", "NIFTY,BANKNIFTY"],
        ["-s", "NIFTY", "BANKNIFTY"],
    ],
)
def test_replay_takes_every_spelling_of_several_symbols(cache: Path, spelling: list[str]) -> None:
    runner = CliRunner()
    want = runner.invoke(
        app, ["--cache-dir", str(cache), *REPLAY, "--symbol", "NIFTY", "--symbol", "BANKNIFTY"], env=SAMPLE
    )
    assert want.exit_code == 0, want.stderr
    got = runner.invoke(app, ["--cache-dir", str(cache), *REPLAY, *spelling], env=SAMPLE)
    assert got.exit_code == 0, got.stderr
    summary = json.loads(got.stdout)
    assert summary == json.loads(want.stdout)
    assert "BANKNIFTY" in got.stdout and "NIFTY" in got.stdout


def test_replay_without_a_symbol_says_so(cache: Path) -> None:
    proc = mde(cache, *REPLAY)
    assert proc.returncode == 2
    assert "needs a symbol" in one_error_line(proc)


@pytest.mark.parametrize(
    "spelling",
    [["--symbol", "NIFTY", "BANKNIFTY"], ["-s", "NIFTY", "-s", "BANKNIFTY"], ["--symbols", "NIFTY,BANKNIFTY"]],
)
def test_refresh_takes_every_spelling(cache: Path, spelling: list[str]) -> None:
    got = CliRunner().invoke(app, ["--cache-dir", str(cache), "refresh", *spelling, "--json"], env=SAMPLE)
    assert got.exit_code == 0, got.stderr
    summary = json.loads(got.stdout)
    assert summary["ok"] == 2, summary


def test_paper_takes_every_spelling(tmp_path: Path) -> None:
    runner = CliRunner()
    outs = []
    for i, spelling in enumerate(
        (["--symbols", "NIFTY", "BANKNIFTY"], ["--symbol", "NIFTY", "--symbol", "BANKNIFTY"], ["-s", "NIFTY,BANKNIFTY"])
    ):
        got = runner.invoke(
            app,
            [
                "--cache-dir",
                str(tmp_path / f"c{i}"),
                "paper",
                "--strategy",
                "sma_cross",
                *spelling,
                "--source",
                "sample",
                "--date",
                "2024-06-14",
                "--segment",
                "futures",
                "--json",
                "--session",
                "spell",
            ],
            env=SAMPLE,
        )
        assert got.exit_code == 0, got.stderr
        outs.append(json.loads(got.stdout))
    assert outs[0] == outs[1] == outs[2]


def test_source_flag_on_window_and_replay_overrides_the_configured_source(cache: Path) -> None:
    """With MDE_SOURCE=kite (no key, the wall clock), --source sample gives the sample's answer."""
    runner = CliRunner()
    env = {"MDE_SOURCE": "kite", "MDE_KITE_ROOT": "http://127.0.0.1:9"}
    want = runner.invoke(app, ["--cache-dir", str(cache), "window", "NIFTY", "-n", "5", "-f", "json"], env=SAMPLE)
    got = runner.invoke(
        app, ["--cache-dir", str(cache), "window", "NIFTY", "-n", "5", "-f", "json", "--source", "sample"], env=env
    )
    assert got.exit_code == 0, got.stderr
    assert got.stdout == want.stdout
    want = runner.invoke(app, ["--cache-dir", str(cache), *REPLAY, "-s", "NIFTY"], env=SAMPLE)
    got = runner.invoke(app, ["--cache-dir", str(cache), *REPLAY, "-s", "NIFTY", "--source", "SAMPLE"], env=env)
    assert want.exit_code == 0 and got.exit_code == 0, got.stderr
    assert json.loads(got.stdout) == json.loads(want.stdout)


# --- 3. help keeps the config names --------------------------------------------------------------

BRACKETED = re.compile(r"\\?\[([A-Za-z_][A-Za-z0-9_.]*)\]")


def _help_sources(command) -> list[str]:
    texts = [command.help or ""]
    texts += [getattr(p, "help", None) or "" for p in command.params]
    return texts


def test_help_of_every_command_shows_the_config_names_it_mentions() -> None:
    from mde.config import SCHEMA

    group = get_command(app)
    names = sorted(group.commands)  # discovered from the app, not a hand list
    assert {"window", "refresh", "paper", "serve", "replay"} <= set(names)
    sections = set(SCHEMA) | {f"refresh.{k}" for k in ("multi_tf",)}
    checked = 0
    for name in [None, *names]:
        command = group if name is None else group.commands[name]
        wanted = {m for text in _help_sources(command) for m in BRACKETED.findall(text)}
        if not wanted:
            continue
        proc = run_mde(*([name] if name else []), "--help", env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
        assert proc.returncode == 0, proc.stderr
        flat = " ".join(proc.stdout.replace("│", " ").split())
        for key in wanted:
            assert f"[{key}]" in flat, f"mde {name} --help lost [{key}]"
            if not key.isdigit():
                assert key in sections, f"mde {name} --help names [{key}], which is no section of mde.toml"
            checked += 1
    assert checked >= 6  # [source], [refresh] x3, [serve] x2 at least


def test_help_names_the_section_and_its_key_together() -> None:
    proc = run_mde("paper", "--help", env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    flat = " ".join(proc.stdout.replace("│", " ").split())
    assert "default: [source] kind" in flat
    assert "each symbol's first in [refresh.multi_tf], else [refresh] timeframes[0]" in flat


# --- 4. paper risk flags -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"max_position_qty": 0},
        {"max_position_qty": -3},
        {"max_position_qty": 1.5},
        {"max_loss_per_day": -5},
        {"max_loss_per_day": 0},
        {"max_loss_per_day": float("nan")},
        {"max_position_notional": float("inf")},
        {"max_orders_per_minute": 0},
        {"max_position_qty": True},
    ],
)
def test_risk_limits_refuse_zero_negative_and_non_finite(bad: dict) -> None:
    with pytest.raises(InputError) as err:
        RiskLimits(**bad)
    (name,) = bad
    assert name in err.value.message and "\n" not in err.value.message


def test_risk_limits_keep_good_values_and_none_means_no_limit() -> None:
    lim = RiskLimits(max_loss_per_day=5000, max_position_qty=150.0, max_position_notional=1e6, max_orders_per_minute=10)
    assert lim.max_position_qty == 150 and isinstance(lim.max_position_qty, int)
    assert RiskEngine(RiskLimits()).check(0, 1, 10**6, 1e5, 0) is None


def test_limits_from_flags_do_not_turn_zero_into_unlimited(tmp_path: Path) -> None:
    st = load(cache_dir=tmp_path, source="sample", environ={})
    with pytest.raises(InputError, match="max_position_qty"):
        limits_from(st, max_position_qty=0)
    with pytest.raises(InputError, match="max_loss_per_day"):
        limits_from(st, max_loss_per_day=-5.0)


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--max-qty", "0", "--max-qty"),
        ("--max-loss", "-5", "--max-loss"),
        ("--max-notional", "nan", "--max-notional"),
        ("--max-orders-per-minute", "0", "--max-orders-per-minute"),
        ("--until", "25:00", "--until '25:00'"),
        ("--until", "12:60", "--until '12:60'"),
        ("--until", "-1:30", "--until '-1:30'"),
    ],
)
def test_paper_refuses_bad_risk_flags_in_one_line_and_leaves_no_journal(
    tmp_path: Path, flag: str, value: str, says: str
) -> None:
    cache = tmp_path / "cache"
    proc = run_mde(
        "paper",
        "--strategy",
        "sma_cross",
        "-s",
        "NIFTY",
        "--source",
        "sample",
        "--date",
        "2024-06-14",
        "--segment",
        "futures",
        "--session",
        "bad",
        f"{flag}={value}",
        env={"MDE_CACHE_DIR": str(cache)},
    )
    assert proc.returncode == 2
    assert says in one_error_line(proc)
    assert not (cache / "_paper" / "bad.sqlite").exists()


# --- 5. the last-resort handler ------------------------------------------------------------------

BOOM = """
import sys
import typer
from mde import cli

@cli.app.command()
def boom() -> None:
    raise ValueError("boom with s3cret-token-value inside")

sys.argv = ["mde", *sys.argv[1:]]
cli.main()
"""


def _boom(*args: str) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MDE_", "KITE_"))}
    env["KITE_ACCESS_TOKEN"] = "s3cret-token-value"
    return subprocess.run([sys.executable, "-c", BOOM, *args], capture_output=True, text=True, env=env, timeout=60)


def test_an_unexpected_exception_is_one_line_and_exit_70() -> None:
    proc = _boom("boom")
    assert proc.returncode == 70
    assert (
        one_error_line(proc)
        == "error: internal error: ValueError: boom with *** inside (run with -v for the traceback)"
    )


def test_verbose_adds_the_traceback_without_secrets() -> None:
    proc = _boom("-v", "boom")
    assert proc.returncode == 70
    assert "Traceback (most recent call last)" in proc.stderr and "ValueError" in proc.stderr
    assert (
        proc.stderr.splitlines()[-1]
        == "error: internal error: ValueError: boom with *** inside (run with -v for the traceback)"
    )
    assert "s3cret" not in proc.stderr


def test_readme_documents_every_exit_code() -> None:
    text = (REPO / "README.md").read_text()
    table = text[text.index("## Errors and exit codes") :]
    table = table[: table.index("\n## ", 10)]
    codes = {int(m) for m in re.findall(r"^\| (\d+) \|", table, re.M)}
    assert {0, 1, 2, 3, 4, 5, 6, 7, 70} <= codes


# --- found by the fuzz test (tests/test_fuzz_cli.py) -------------------------------------------


def test_a_non_utf8_config_is_one_line_exit_2(tmp_path: Path) -> None:
    conf = tmp_path / "mde.toml"
    conf.write_bytes(b'[source]\nkind = "sample" # caf\xe9\n')
    proc = run_mde("--config", str(conf), "ls")
    assert proc.returncode == 2
    assert one_error_line(proc) == f"error: {conf} is not UTF-8 text (byte 0xe9 at offset 30); save it as UTF-8"


def test_a_config_that_is_a_folder_says_so(tmp_path: Path) -> None:
    proc = run_mde("--config", str(tmp_path), "ls")
    assert proc.returncode == 2
    assert (
        one_error_line(proc)
        == f"error: config file {tmp_path} is a folder, not a file; give the path of a TOML file like mde.toml"
    )


@pytest.mark.parametrize("count", ["100000000", "0", "-5"])
def test_refresh_count_out_of_range_is_one_line_and_touches_nothing(cache: Path, count: str) -> None:
    before = {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()}
    proc = mde(cache, "refresh", "--symbols", "NIFTY", "BANKNIFTY", "--count", count)
    assert proc.returncode == 2
    assert (
        one_error_line(proc)
        == f"error: count must be between 1 and 1,000,000 (about ten years of 1m candles), got {int(count):,}"
    )
    assert {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()} == before


def test_refresh_with_a_bad_timeframe_among_good_ones_touches_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    proc = run_mde("refresh", "-s", "NIFTY", "-t", "5m", "-t", "7m", env={"MDE_CACHE_DIR": str(cache), **SAMPLE})
    assert proc.returncode == 2
    assert one_error_line(proc).startswith("error: unknown timeframe '7m'")
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*.parquet"))


def test_a_huge_count_in_the_library_stops_at_the_calendars_start_instead_of_overflowing(tmp_path: Path) -> None:
    from mde.engine import MarketDataEngine

    eng = MarketDataEngine(load(cache_dir=tmp_path / "c", source="sample", environ={}))
    report = eng.refresh("NIFTY", "1d", count=1_000_000)  # more daily candles than exist since 1990
    assert report.rows > 1000


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["window", "NIFTY", "--as-of", "0001-01-01"],
            "error: bad as_of '0001-01-01'; mde handles the years 1900 to 2199",
        ),
        (
            [
                "replay",
                "--strategy",
                "sma_cross",
                "-s",
                "NIFTY",
                "--from",
                "0001-01-01",
                "--to",
                "9999-12-31",
                "--segment",
                "futures",
            ],
            "error: bad --from date '0001-01-01'; mde handles the years 1900 to 2199",
        ),
        (
            [
                "paper",
                "--strategy",
                "sma_cross",
                "-s",
                "NIFTY",
                "--date",
                "2024-06-14",
                "--segment",
                "futures",
                "--tick",
                "1e400m",
            ],
            "error: --tick '1e400m' is longer than a day",
        ),
    ],
)
def test_dates_and_durations_out_of_range_are_input_errors(cache: Path, args: list[str], says: str) -> None:
    proc = mde(cache, *args)
    assert proc.returncode == 2
    assert one_error_line(proc) == says
