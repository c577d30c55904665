"""`mde serve`: the real server in a subprocess on a free port, a real HTTP client (httpx).

One server per module on a cache filled from the bundled sample, with the clock pinned
(MDE_NOW) so that the CLI run beside it sees the same candles.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from conftest import run_mde

NOW = "2024-06-14T15:30"
WINDOW = "/api/market_data/window"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MDE_", "KITE_"))}
    env.update({"MDE_CACHE_DIR": str(cache), "MDE_SOURCE": "sample", "MDE_NOW": NOW}, **extra)
    return env


def serving_port(proc: subprocess.Popen[bytes], log: Path) -> int:
    """The port a `mde serve --port 0` names on its first line, once /healthz answers there."""
    deadline = time.monotonic() + 20
    port = None
    while True:
        if port is None and (announced := re.search(r"^mde serve: http://\S+:(\d+)/", log.read_text(), re.M)):
            port = int(announced.group(1))
        if port is not None:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                return port
            except httpx.TransportError:
                pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"mde serve did not start: {log.read_text()}")
        time.sleep(0.05)


class Server:
    """`mde serve` as a user starts it; stopped (and its output kept) at the end."""

    def __init__(self, cache: Path, *args: str, env: dict[str, str] | None = None, host: str = "127.0.0.1") -> None:
        # --port 0: the system picks a free port and `mde serve` names it (no port picked here and
        # bound later, which another test running in parallel could take in between)
        self.log = Path(tempfile.mkstemp(prefix="serve-", suffix=".log", dir=cache.parent)[1])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mde", "serve", "--host", host, "--port", "0", *args],
            env=env or base_env(cache),
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            cwd=cache.parent,
        )
        try:
            self.port = serving_port(self.proc, self.log)
        except RuntimeError:
            self.stop()
            raise
        self.url = f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NIFTY and BANKNIFTY 5m up to 2024-06-14 15:30, and one finished sample paper session."""
    root = tmp_path_factory.mktemp("api")
    cache = root / "cache"
    env = base_env(cache)
    done = run_mde("refresh", "--symbols", "NIFTY", "BANKNIFTY", env=env, cwd=root)
    assert done.returncode == 0, done.stderr
    done = run_mde(
        "paper",
        "--strategy",
        "sma_cross",
        "-s",
        "NIFTY",
        "--source",
        "sample",
        "--date",
        "2024-06-14",
        "--speed",
        "0",
        "--session",
        "t1",
        "--segment",
        "futures",
        "-p",
        "fast=3",
        "-p",
        "slow=8",
        env=env,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr
    return cache


@pytest.fixture(scope="module")
def server(cache: Path) -> Iterator[Server]:
    srv = Server(cache)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def cli(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_mde(*args, env=base_env(cache), cwd=cache.parent)


def cli_error_with_code(cache: Path, code: int, *args: str) -> str:
    """What `mde ...` prints after `error: ` (one line), checking its exit code."""
    done = cli(cache, *args)
    assert done.returncode == code, done.stderr
    line = done.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line, line
    return line.removeprefix("error: ")


def cli_error(cache: Path, *args: str) -> str:
    """What `mde ...` prints after `error: ` (one line) for the same bad input (exit 2)."""
    return cli_error_with_code(cache, 2, *args)


# -- the window ---------------------------------------------------------------------------------
def test_window_is_exactly_the_cli_json(client: httpx.Client, cache: Path) -> None:
    res = client.get(WINDOW, params={"symbol": "NIFTY", "timeframe": "15m", "limit": 20})
    assert res.status_code == 200
    assert res.headers["content-type"] == "application/json"
    expected = json.loads(cli(cache, "window", "NIFTY", "-t", "15m", "-n", "20", "--format", "json").stdout)
    assert res.json() == expected
    body = res.json()
    assert list(body) == ["symbol", "timeframe", "count", "candles"]
    assert body["symbol"] == "NIFTY" and body["timeframe"] == "15m" and body["count"] == 20
    assert all(list(c) == ["ts", "open", "high", "low", "close", "volume"] for c in body["candles"])


def test_window_defaults_to_50_candles_of_5m_oldest_first_in_ist(client: httpx.Client) -> None:
    body = client.get(WINDOW, params={"symbol": "NIFTY"}).json()
    assert body["timeframe"] == "5m" and body["count"] == 50 == len(body["candles"])
    stamps = [c["ts"] for c in body["candles"]]
    assert stamps == sorted(stamps) and len(set(stamps)) == 50
    assert all(ts.endswith("+05:30") for ts in stamps)
    assert stamps[-1] == "2024-06-14T15:25:00+05:30"  # the last candle complete at the pinned 15:30


def test_as_of_returns_only_candles_complete_then(client: httpx.Client, cache: Path) -> None:
    res = client.get(WINDOW, params={"symbol": "BANKNIFTY", "limit": 3, "as_of": "2024-06-14T11:02"})
    assert [c["ts"] for c in res.json()["candles"]] == [
        "2024-06-14T10:45:00+05:30",
        "2024-06-14T10:50:00+05:30",
        "2024-06-14T10:55:00+05:30",
    ]
    expected = json.loads(
        cli(cache, "window", "BANKNIFTY", "-n", "3", "--as-of", "2024-06-14T11:02", "-f", "json").stdout
    )
    assert res.json() == expected


def test_a_refresh_by_another_process_shows_in_the_next_window(tmp_path: Path) -> None:
    """Warm windows are answered from memory; a file that `mde refresh` replaced is read again."""
    cache = tmp_path / "cache"
    done = run_mde("refresh", "--symbols", "NIFTY", env=base_env(cache, MDE_NOW="2024-06-14T12:00"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    srv = Server(cache)
    try:
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            for _ in range(3):  # the first read is cold, the others come from memory
                assert (
                    c.get(WINDOW, params={"symbol": "NIFTY", "limit": 2}).json()["candles"][-1]["ts"]
                    == "2024-06-14T11:55:00+05:30"
                )
            done = run_mde("refresh", "--symbols", "NIFTY", env=base_env(cache), cwd=tmp_path)
            assert done.returncode == 0, done.stderr
            after = c.get(WINDOW, params={"symbol": "NIFTY", "limit": 2}).json()
        assert [x["ts"] for x in after["candles"]] == ["2024-06-14T15:20:00+05:30", "2024-06-14T15:25:00+05:30"]
        assert after == json.loads(cli(cache, "window", "NIFTY", "-n", "2", "-f", "json").stdout)
    finally:
        srv.stop()


def test_an_unreadable_cache_file_is_a_500_with_the_cli_message_and_the_file_is_left_alone(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    done = run_mde("refresh", "--symbols", "NIFTY", env=base_env(cache), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    newest = sorted((cache / "NSE").glob("NIFTY*/5m/*.parquet"))[-1]
    newest.write_bytes(b"PAR1 not really parquet")
    srv = Server(cache)
    try:
        res = httpx.get(srv.url + WINDOW, params={"symbol": "NIFTY"}, timeout=10)
        cli_line = cli_error_with_code(cache, 6, "window", "NIFTY")
    finally:
        srv.stop()
    assert res.status_code == 500 and res.json() == {"error": cli_line}
    assert "unreadable" in cli_line and "Traceback" not in srv.output()
    assert newest.read_bytes() == b"PAR1 not really parquet"  # nothing rewrote or removed it


BAD_INPUT = {
    "limit-0": ({"limit": "0"}, ["-n", "0"]),
    "limit-1001": ({"limit": "1001"}, ["-n", "1001"]),
    "limit-negative": ({"limit": "-1"}, ["-n", "-1"]),
    "bad-timeframe": ({"timeframe": "7m"}, ["-t", "7m"]),
    "as_of-word": ({"as_of": "yesterday"}, ["--as-of", "yesterday"]),
    "as_of-impossible-date": ({"as_of": "2024-13-40T10:00"}, ["--as-of", "2024-13-40T10:00"]),
    "as_of-with-letters": ({"as_of": "2024-06-14Tnoon"}, ["--as-of", "2024-06-14Tnoon"]),
}


@pytest.fixture(scope="module")
def cli_errors(cache: Path) -> dict[str, str]:
    """`mde window NIFTY <bad flag>` for every case, run side by side (each is a process start)."""
    cases = {k: ["window", "NIFTY", *args] for k, (_, args) in BAD_INPUT.items()} | {"not-cached": ["window", "INFY"]}
    with ThreadPoolExecutor(len(cases)) as pool:
        return dict(zip(cases, pool.map(lambda args: cli_error(cache, *args), cases.values()), strict=True))


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_422_with_the_cli_message(client: httpx.Client, cli_errors: dict[str, str], case: str) -> None:
    res = client.get(WINDOW, params={"symbol": "NIFTY", **BAD_INPUT[case][0]})
    assert res.status_code == 422
    assert res.json() == {"error": cli_errors[case]}


def test_a_symbol_not_in_the_cache_is_404_with_the_cli_message(
    client: httpx.Client, cli_errors: dict[str, str]
) -> None:
    res = client.get(WINDOW, params={"symbol": "INFY"})
    assert res.status_code == 404
    assert res.json() == {"error": cli_errors["not-cached"]}


def test_a_limit_that_is_not_a_number_is_422_in_one_line(client: httpx.Client) -> None:
    res = client.get(WINDOW, params={"symbol": "NIFTY", "limit": "abc"})
    assert res.status_code == 422
    assert res.json() == {"error": "limit must be a whole number between 1 and 1000, got 'abc'"}


def test_a_missing_symbol_is_422(client: httpx.Client) -> None:
    res = client.get(WINDOW)
    assert res.status_code == 422
    assert res.json() == {"error": "missing query parameter 'symbol'"}


def test_limits_1_and_1000_are_allowed(client: httpx.Client) -> None:
    assert client.get(WINDOW, params={"symbol": "NIFTY", "limit": 1}).json()["count"] == 1
    big = client.get(WINDOW, params={"symbol": "NIFTY", "limit": 1000})
    assert big.status_code == 200 and 0 < big.json()["count"] <= 1000


@pytest.mark.parametrize(
    "symbol",
    [
        "../etc/passwd",
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e%2f%2e%2e",
        "/etc/passwd",
        "NIFTY/../../x",
        "..\\..\\x",
        "NIFTY\x00",
        "NSE:../../x",
        "....//....//etc",
        "NIFTY 50/../../../etc/passwd",
    ],
)
def test_a_symbol_never_reaches_outside_the_cache(client: httpx.Client, symbol: str) -> None:
    res = client.get(WINDOW, params={"symbol": symbol})
    assert res.status_code in (404, 422), res.text
    assert list(res.json()) == ["error"]
    assert "root:" not in res.text and "Traceback" not in res.text


@pytest.mark.parametrize(
    "raw_query",
    [
        "symbol=..%2F..%2Fetc%2Fpasswd",
        "symbol=%2e%2e%2f%2e%2e%2fetc",
        "symbol=%2F",
        "symbol=NIFTY%00",
        "symbol=%5C..%5C",
    ],
)
def test_percent_encoded_traversal_is_rejected(server: Server, raw_query: str) -> None:
    # sent byte for byte, not re-encoded by the client
    res = httpx.get(f"{server.url}{WINDOW}?{raw_query}")
    assert res.status_code == 422 and list(res.json()) == ["error"]


@pytest.mark.parametrize(
    "path",
    ["/static/../pyproject.toml", "/static/%2e%2e/api.py", "/static/..%2fapi.py", "/api/paper/sessions/..%2F..%2Fx"],
)
def test_no_path_serves_a_file_outside_the_web_folder(server: Server, path: str) -> None:
    res = httpx.get(server.url + path)
    assert res.status_code in (404, 422)
    assert "import" not in res.text and "[project]" not in res.text


# -- the other endpoints ------------------------------------------------------------------------
def test_series_is_the_ls_inventory(client: httpx.Client, cache: Path) -> None:
    res = client.get("/api/series")
    assert res.status_code == 200
    assert res.json() == json.loads(cli(cache, "ls", "--format", "json").stdout)
    assert {(s["instrument"], s["timeframe"]) for s in res.json()} == {("NSE:NIFTY 50", "5m"), ("NSE:NIFTY BANK", "5m")}


def test_paper_sessions_come_from_the_journal(client: httpx.Client, cache: Path) -> None:
    listed = client.get("/api/paper/sessions").json()
    assert [s["session"] for s in listed] == ["t1"]
    one = client.get("/api/paper/sessions/t1").json()
    assert one == listed[0]
    status = json.loads(cli(cache, "paper", "--status", "--session", "t1", "--json").stdout)
    status = status[0] if isinstance(status, list) else status
    assert one["status"] == status["status"] == "finished"
    assert one["fills"] == status["fills"] > 0 and one["positions"] == {}
    assert isinstance(one["gross_pnl"], float) and one["recent_fills"][-1]["ts"].endswith("+05:30")
    assert one["net_pnl"] == round(one["gross_pnl"] - one["charges"], 2)


@pytest.mark.parametrize(
    ("name", "status"), [("nope", {404}), ("..", {404, 422}), ("a.b", {422}), ("x%00", {422}), ("%2e%2e", {404, 422})]
)
def test_an_unknown_or_invalid_session_name_is_an_error(
    client: httpx.Client, cache: Path, name: str, status: set[int]
) -> None:
    res = client.get(f"/api/paper/sessions/{name}")
    assert res.status_code in status and list(res.json()) == ["error"]
    assert str(cache) not in res.json()["error"]  # no server path in the message


def test_healthz_clock_and_openapi(client: httpx.Client) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/api/clock").json() == {"now": "2024-06-14T15:30:00+05:30", "market_open": False, "pinned": True}
    schema = client.get("/openapi.json").json()
    assert {
        "/api/market_data/window",
        "/api/series",
        "/api/paper/sessions",
        "/api/paper/sessions/{name}",
        "/healthz",
    } <= set(schema["paths"])
    window = schema["paths"]["/api/market_data/window"]["get"]
    assert [p["name"] for p in window["parameters"]] == ["symbol", "timeframe", "limit", "as_of"]
    assert window["parameters"][0]["required"] is True
    assert set(window["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1:]) == {
        "WindowOut"
    }


def test_the_api_is_read_only(client: httpx.Client) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        res = client.request(method, WINDOW, params={"symbol": "NIFTY"})
        assert res.status_code == 405 and list(res.json()) == ["error"]


def test_data_is_never_cached_and_assets_are(client: httpx.Client) -> None:
    for path in (f"{WINDOW}?symbol=NIFTY", f"{WINDOW}?symbol=INFY", "/api/series", "/api/paper/sessions", "/healthz"):
        assert client.get(path).headers["cache-control"] == "no-store", path
    page = client.get("/")
    assert page.status_code == 200 and "lightweight-charts-5.2.1" in page.text
    asset = client.get("/static/vendor/lightweight-charts-5.2.1.standalone.production.js")
    assert asset.status_code == 200 and "immutable" in asset.headers["cache-control"]
    assert client.get("/static/vendor/lightweight-charts-LICENSE.txt").text.strip().startswith("Apache License")


def test_no_cors_headers_unless_configured(client: httpx.Client, cache: Path) -> None:
    origin = {"Origin": "http://evil.example"}
    res = client.get(WINDOW, params={"symbol": "NIFTY"}, headers=origin)
    assert not any(h.startswith("access-control-") for h in res.headers)
    srv = Server(cache, env=base_env(cache, MDE_CORS_ORIGINS="http://desk.example"))
    try:
        allowed = httpx.get(srv.url + WINDOW, params={"symbol": "NIFTY"}, headers={"Origin": "http://desk.example"})
        assert allowed.headers["access-control-allow-origin"] == "http://desk.example"
        other = httpx.get(srv.url + WINDOW, params={"symbol": "NIFTY"}, headers=origin)
        assert "access-control-allow-origin" not in other.headers
    finally:
        srv.stop()


def test_200_concurrent_requests_are_all_answered_correctly(server: Server) -> None:
    cases = [
        {"symbol": s, "timeframe": tf, "limit": n}
        for s in ("NIFTY", "BANKNIFTY")
        for tf in ("5m", "15m")
        for n in (1, 50)
    ]
    with httpx.Client(base_url=server.url) as c:
        expected = [c.get(WINDOW, params=p).json() for p in cases]
    assert all(e["count"] in (1, 50) for e in expected)

    async def all_at_once() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as c:
            return await asyncio.gather(*(c.get(WINDOW, params=cases[i % len(cases)]) for i in range(200)))

    responses = asyncio.run(all_at_once())
    assert len(responses) == 200
    for i, res in enumerate(responses):
        assert res.status_code == 200 and res.json() == expected[i % len(cases)]


def test_a_port_in_use_or_an_address_not_here_is_one_line_and_exit_2(server: Server, cache: Path) -> None:
    taken = run_mde("serve", "--port", str(server.port), env=base_env(cache), cwd=cache.parent, timeout=20)
    assert taken.returncode == 2, taken.stderr
    assert (
        taken.stderr
        == f"error: port {server.port} on 127.0.0.1 is already in use (another mde serve?); stop that or pass --port N\n"
    )
    assert httpx.get(server.url + "/healthz").status_code == 200  # the running server is untouched
    foreign = run_mde(
        "serve",
        "--host",
        "192.0.2.1",
        "--port",
        str(free_port()),
        env=base_env(cache, MDE_API_TOKEN="t" * 16),
        cwd=cache.parent,
        timeout=20,
    )  # TEST-NET-1: never an address of this machine
    assert foreign.returncode == 2 and foreign.stderr.count("\n") == 1
    assert foreign.stderr.startswith("error: cannot listen on 192.0.2.1:") and "t" * 16 not in foreign.stderr


# -- the token rule -----------------------------------------------------------------------------
def test_a_public_address_without_a_token_refuses_to_start(cache: Path) -> None:
    port = free_port()
    done = run_mde("serve", "--host", "0.0.0.0", "--port", str(port), env=base_env(cache), cwd=cache.parent, timeout=20)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(
        "error: refusing to serve on 0.0.0.0 without an API token"
    )
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens


@pytest.mark.parametrize("how", ["env-on-loopback", "flag-on-0.0.0.0"])
def test_a_token_is_required_on_every_api_request(cache: Path, how: str) -> None:
    secret = "s3cret-token-123"
    if how == "env-on-loopback":
        srv = Server(cache, env=base_env(cache, MDE_API_TOKEN=secret))
    else:
        srv = Server(cache, "--token", secret, host="0.0.0.0")
    try:
        for path in (f"{WINDOW}?symbol=NIFTY", "/api/series", "/api/paper/sessions", "/api/clock"):
            assert httpx.get(srv.url + path).status_code == 401
            wrong = httpx.get(srv.url + path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and list(wrong.json()) == ["error"]
            assert httpx.get(srv.url + path, headers={"Authorization": f"Basic {secret}"}).status_code == 401
            assert httpx.get(srv.url + path, headers={"Authorization": f"Bearer {secret}x"}).status_code == 401
            right = httpx.get(srv.url + path, headers={"Authorization": f"Bearer {secret}"})
            assert right.status_code == 200, path
            assert httpx.get(srv.url + path, headers={"Authorization": f"bearer {secret}"}).status_code == 200
        assert httpx.get(srv.url + "/").status_code == 200  # the page holds no data
        assert httpx.get(srv.url + "/healthz").status_code == 200
    finally:
        srv.stop()
    assert secret not in srv.output()


# -- configuration of `mde serve` -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LocalHost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("10.0.0.1", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_only_loopback_addresses_may_serve_without_a_token(host: str, loopback: bool) -> None:
    from mde.config import ServeSettings, is_loopback
    from mde.errors import ConfigError

    assert is_loopback(host) is loopback
    if loopback:
        ServeSettings(host=host).check()
    else:
        with pytest.raises(ConfigError, match="without an API token"):
            ServeSettings(host=host).check()
        ServeSettings(host=host, token="t").check()


def test_serve_settings_come_from_the_file_then_the_environment_then_flags(tmp_path: Path) -> None:
    from mde.config import load
    from mde.errors import ConfigError

    conf = tmp_path / "mde.toml"
    conf.write_text('[serve]\nhost = "0.0.0.0"\nport = 9001\ncors_origins = ["http://a.example"]\n')
    s = load(conf, environ={}).serve
    assert (s.host, s.port, s.cors_origins, s.token) == ("0.0.0.0", 9001, ("http://a.example",), None)
    s = load(conf, environ={"MDE_API_TOKEN": "env-tok", "MDE_CORS_ORIGINS": "http://b.example, http://c.example"}).serve
    assert s.token == "env-tok" and s.cors_origins == ("http://b.example", "http://c.example")
    s = load(conf, environ={"MDE_API_TOKEN": "env-tok"}, host="127.0.0.1", port=9002, api_token="flag-tok").serve
    assert (s.host, s.port, s.token) == ("127.0.0.1", 9002, "flag-tok")
    assert "env-tok" not in repr(load(conf, environ={"MDE_API_TOKEN": "env-tok"}))
    conf.write_text('[serve]\ntoken = "in-a-file"\n')
    with pytest.raises(ConfigError, match="unknown key 'token' in \\[serve\\]"):
        load(conf, environ={})
