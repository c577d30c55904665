"""The dashboard in a real browser: Debian's chromium, headless, driven by selenium.

No browser download: selenium is given /usr/bin/chromium and /usr/bin/chromedriver (and
SE_OFFLINE), and the page loads nothing but what `mde serve` serves.
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from conftest import run_mde
from test_api import Server, base_env

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
HAVE_BROWSER = Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()

pytestmark = pytest.mark.skipif(
    not HAVE_BROWSER and not os.environ.get("CI"),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver); .ci/run installs them",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("dashboard")
    cache = root / "cache"
    done = run_mde("refresh", "--symbols", "NIFTY", "BANKNIFTY", env=base_env(cache), cwd=root)
    assert done.returncode == 0, done.stderr
    srv = Server(cache)
    yield srv
    srv.stop()


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium-manager must not fetch anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


def test_the_page_draws_the_chart_and_its_table_matches_the_api(
    server: Server, browser: object, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    driver.get(server.url + "/?symbol=NSE:NIFTY%2050&timeframe=15m")  # type: ignore[attr-defined]
    WebDriverWait(driver, 20).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "NSE:NIFTY 50/15m"
    )
    # the chart drew: its canvases exist and are not blank
    canvases = driver.find_elements(By.CSS_SELECTOR, "#chart canvas")  # type: ignore[attr-defined]
    assert canvases and max(c.size["width"] for c in canvases) > 300
    painted = driver.execute_script(  # type: ignore[attr-defined]
        "const c = [...document.querySelectorAll('#chart canvas')].sort((a, b) => b.width * b.height - a.width * a.height)[0];"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "const seen = new Set(); for (let i = 0; i < d.length; i += 4 * 97) seen.add(d[i] + ',' + d[i + 1] + ',' + d[i + 2]);"
        "return seen.size;"
    )
    assert painted > 3, "the chart's canvas is blank"

    # the table is the newest candles of the API, newest first
    rows = driver.find_elements(By.CSS_SELECTOR, "#candles tbody tr")  # type: ignore[attr-defined]
    api = httpx.get(
        server.url + "/api/market_data/window",
        params={"symbol": "NSE:NIFTY 50", "timeframe": "15m", "limit": len(rows)},
    ).json()
    assert len(rows) == 20 == api["count"]
    expected = list(reversed(api["candles"]))
    for row, candle in zip(rows, expected, strict=True):
        cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        assert row.get_attribute("data-ts") == candle["ts"]
        assert cells == [
            candle["ts"][:16].replace("T", " "),
            *(f"{candle[k]:.2f}" for k in ("open", "high", "low", "close")),
            str(candle["volume"]),
        ]
    assert expected[0]["ts"] == "2024-06-14T15:15:00+05:30"
    clock = driver.find_element(By.ID, "clock").text  # type: ignore[attr-defined]
    assert "2024-06-14 15:30 IST" in clock and "market closed" in clock
    assert driver.find_element(By.ID, "paper").get_attribute("hidden") is not None  # type: ignore[attr-defined]
    assert driver.find_element(By.ID, "error").get_attribute("hidden") is not None  # type: ignore[attr-defined]
    options = [o.get_attribute("value") for o in driver.find_elements(By.CSS_SELECTOR, "#symbol option")]  # type: ignore[attr-defined]
    assert options == ["NSE:NIFTY 50", "NSE:NIFTY BANK"]

    # everything the page loaded came from mde itself
    loaded = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")  # type: ignore[attr-defined]
    assert any("lightweight-charts-5.2.1" in u for u in loaded)
    assert all(u.startswith(server.url + "/") for u in loaded), loaded

    shot = tmp_path / "screenshot.png"
    driver.save_screenshot(str(shot))  # type: ignore[attr-defined]
    assert shot.stat().st_size > 20_000 and png_size(shot) >= (1000, 600)
    if os.environ.get("DASHBOARD_SCREENSHOT_COPY"):
        shutil.copy(shot, os.environ["DASHBOARD_SCREENSHOT_COPY"])


def test_the_page_works_with_a_token_in_its_url_fragment(tmp_path: Path, browser: object, server: Server) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    cache = Path(server.log).parent / "cache"
    secure = Server(cache, env=base_env(cache, MDE_API_TOKEN="tok-abc"))
    try:
        driver = browser
        driver.get(secure.url + "/")  # type: ignore[attr-defined]
        WebDriverWait(driver, 20).until(lambda d: not d.find_element(By.ID, "token-form").get_attribute("hidden"))
        driver.get(secure.url + "/#token=tok-abc")  # type: ignore[attr-defined]
        driver.refresh()  # type: ignore[attr-defined]
        WebDriverWait(driver, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        assert "token" not in driver.current_url  # type: ignore[attr-defined]
        assert len(driver.find_elements(By.CSS_SELECTOR, "#candles tbody tr")) == 20  # type: ignore[attr-defined]
    finally:
        secure.stop()


def test_a_running_paper_session_shows_its_positions_pnl_and_fills(server: Server, browser: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from mde.clock import IST
    from mde.paper.state import TradeState, session_path

    # a journal as a running session leaves it (written by the journal's own writer); the
    # underscore is escaped in the file name, and the page must show and ask for the name itself
    journal = session_path(Path(server.log).parent / "cache" / "_paper", "live_1")
    at = lambda hh, mm: int(datetime(2024, 6, 14, hh, mm, tzinfo=IST).timestamp() * 1e6)  # noqa: E731
    state = TradeState(journal)
    state.own()  # held by this process while the page looks: a running session owns its journal
    state.set_meta(
        {
            "status": "running",
            "strategy": "sma_cross",
            "symbols": "NIFTY",
            "timeframe": "5m",
            "day": "2024-06-14",
            "costs": "zerodha",
            "segment": "futures",
        }
    )
    state.record(
        "fill",
        at(10, 0),
        {"order": 1, "side": 1, "qty": 50, "price": 23400.0, "ts_us": at(10, 0), "reason": "market"},
        "NIFTY",
    )
    state.record(
        "fill",
        at(11, 0),
        {"order": 2, "side": -1, "qty": 25, "price": 23450.0, "ts_us": at(11, 0), "reason": "market"},
        "NIFTY",
    )
    try:
        # P&L: the fills' cash flow plus the open 25 at the last close (15:25 candle, 23454.15)
        view = httpx.get(server.url + "/api/paper/sessions/live_1").json()
        assert view["status"] == "running" and view["positions"] == {"NIFTY": 25}
        assert view["gross_pnl"] == round(-50 * 23400.0 + 25 * 23450.0 + 25 * 23454.15, 2) == 2603.75
        assert 0 < view["charges"] < 300 and view["net_pnl"] == round(view["gross_pnl"] - view["charges"], 2)
        driver = browser
        driver.get(server.url + "/")  # type: ignore[attr-defined]
        WebDriverWait(driver, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        panel = driver.find_element(By.ID, "paper")  # type: ignore[attr-defined]
        assert panel.get_attribute("hidden") is None
        text = panel.text
        assert (
            f"live_1 (sma_cross, 5m) net P&L {view['net_pnl']:.2f} (gross 2603.75, charges {view['charges']:.2f})"
            in text
        ) and "positions: NIFTY 25" in text
        assert "2024-06-14 11:00 SELL 25 NIFTY @ 23450.00 (market)" in text
        state.close()  # the process "dies": the session is no longer shown as running
        assert httpx.get(server.url + "/api/paper/sessions/live_1").json()["status"] == "stopped"
    finally:
        state.close()
        for extra in journal.parent.glob(journal.stem + "*"):
            extra.unlink()


def test_the_page_refreshes_itself_while_the_market_is_open(server: Server, browser: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    cache = Path(server.log).parent / "cache"
    live = Server(cache, env=base_env(cache, MDE_NOW="2024-06-14T11:02"))  # inside the session
    try:
        assert httpx.get(live.url + "/api/clock").json()["market_open"] is True
        driver = browser
        driver.get(live.url + "/?symbol=NSE:NIFTY%20BANK")  # type: ignore[attr-defined]
        body = lambda d: d.find_element(By.TAG_NAME, "body")  # noqa: E731
        WebDriverWait(driver, 20).until(lambda d: body(d).get_attribute("data-ready") == "NSE:NIFTY BANK/5m")
        assert "market open" in driver.find_element(By.ID, "clock").text  # type: ignore[attr-defined]
        first = driver.find_element(By.ID, "refreshed").text  # type: ignore[attr-defined]
        # the next refresh comes 5 s later (toLocaleTimeString has whole seconds)
        WebDriverWait(driver, 12).until(lambda d: d.find_element(By.ID, "refreshed").text != first)
        newest = driver.find_element(By.CSS_SELECTOR, "#candles tbody tr").get_attribute("data-ts")  # type: ignore[attr-defined]
        assert newest == "2024-06-14T10:55:00+05:30"  # the last candle complete at 11:02
    finally:
        live.stop()


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch) -> None:
    """The browser started after this runs in New York time (chromium reads TZ)."""
    monkeypatch.setenv("TZ", "America/New_York")


def test_the_update_time_is_ist_whatever_the_browser_zone(server: Server, new_york: None, browser: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from mde.clock import IST

    driver = browser
    before = datetime.now(IST).replace(microsecond=0)
    driver.get(server.url + "/")  # type: ignore[attr-defined]
    WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "refreshed").text)
    shown = driver.find_element(By.ID, "refreshed").text  # type: ignore[attr-defined]
    after = datetime.now(IST)
    assert driver.execute_script("return new Date().getTimezoneOffset()") != -330  # type: ignore[attr-defined]
    assert shown.startswith("updated ") and shown.endswith(" IST"), shown
    hms = shown.removeprefix("updated ").removesuffix(" IST")
    # between the two readings of the IST clock (a day that turns over in between is allowed for)
    assert before.strftime("%H:%M:%S") <= hms <= after.strftime("%H:%M:%S") or after.date() != before.date(), (
        hms,
        before,
        after,
    )
