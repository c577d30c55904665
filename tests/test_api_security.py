"""`mde serve` against a hostile browser or client: DNS rebinding (Host header), framing and
sniffing headers, the page's CSP, and no token in any log line. The real server, a real client."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import run_mde
from mde.errors import InputError
from mde.paper.state import session_path
from mde.symbols import validate_symbol
from test_api import Server, base_env, serving_port


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("security")
    cache = root / "cache"
    done = run_mde("refresh", "--symbols", "NIFTY", "-t", "5m", env=base_env(cache), cwd=root)
    assert done.returncode == 0, done.stderr
    return cache


@pytest.fixture(scope="module")
def open_server(cache: Path) -> Iterator[Server]:
    srv = Server(cache)
    yield srv
    srv.stop()


def get(server: Server, path: str, host: str | None = None, **headers: str) -> httpx.Response:
    if host is not None:
        headers["Host"] = host
    return httpx.get(server.url + path, headers=headers, timeout=10)


def test_a_tokenless_server_refuses_a_foreign_host_name(open_server: Server) -> None:
    port = open_server.port
    for path in ("/api/paper/sessions", "/api/market_data/window?symbol=NIFTY", "/"):
        res = get(open_server, path, host=f"attacker.example:{port}")
        assert res.status_code == 421, path
        assert "Host header refused" in res.json()["error"]


@pytest.mark.parametrize(
    "host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}", "127.0.0.1", "[::1]:{port}"]
)
def test_a_tokenless_server_answers_its_loopback_names(open_server: Server, host: str) -> None:
    res = get(open_server, "/api/market_data/window?symbol=NIFTY&limit=2", host=host.format(port=open_server.port))
    assert res.status_code == 200
    assert res.json()["count"] == 2


def test_every_response_forbids_sniffing_and_framing(open_server: Server) -> None:
    for path in ("/", "/api/market_data/window?symbol=NIFTY", "/static/app.js", "/healthz", "/api/nope"):
        res = get(open_server, path)
        assert res.headers["x-content-type-options"] == "nosniff", path
        assert res.headers["x-frame-options"] == "DENY", path


def test_the_page_may_run_only_mdes_own_scripts(open_server: Server) -> None:
    csp = get(open_server, "/").headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["connect-src"] == "'self'"


def test_with_a_token_a_foreign_host_needs_the_token_and_allowed_hosts_narrow_it(cache: Path) -> None:
    srv = Server(cache, env=base_env(cache, MDE_API_TOKEN="s3cret-token-value", MDE_ALLOWED_HOSTS="mde.lan"))
    try:
        auth = {"Authorization": "Bearer s3cret-token-value"}
        assert get(srv, "/api/series", host=f"mde.lan:{srv.port}", **auth).status_code == 200
        assert get(srv, "/api/series", host=f"127.0.0.1:{srv.port}", **auth).status_code == 200
        assert get(srv, "/api/series", host=f"attacker.example:{srv.port}", **auth).status_code == 421
        assert get(srv, "/api/series", host=f"mde.lan:{srv.port}").status_code == 401
    finally:
        srv.stop()
    srv = Server(cache, env=base_env(cache, MDE_API_TOKEN="s3cret-token-value"))
    try:  # no allowed_hosts: the token is the guard, any name is served
        res = get(srv, "/api/series", host="mde.example:1", Authorization="Bearer s3cret-token-value")
        assert res.status_code == 200
    finally:
        srv.stop()


def test_a_token_in_a_query_string_never_reaches_the_access_log(cache: Path) -> None:
    log = cache.parent / "verbose.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mde", "-v", "serve", "--port", "0"],
        env=base_env(cache),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        cwd=cache.parent,
    )
    try:
        port = serving_port(proc, log)
        for query in ("token=leak-one", "access_token=leak-two&symbol=NIFTY", "symbol=NIFTY&API_KEY=leak-three"):
            httpx.get(f"http://127.0.0.1:{port}/api/market_data/window?{query}", timeout=10)
    finally:
        proc.terminate()
        proc.wait(10)
    text = log.read_text()
    assert "/api/market_data/window?" in text  # the access log is on (-v): the lines were written
    for secret in ("leak-one", "leak-two", "leak-three"):
        assert secret not in text
    assert "token=***" in text and "API_KEY=***" in text


@pytest.mark.parametrize("name", ["CON", "nul", "NSE:AUX", "COM1", "lpt9"])
def test_windows_device_names_are_refused_as_symbols(name: str) -> None:
    with pytest.raises(InputError, match="device name Windows reserves"):
        validate_symbol(name)


def test_windows_device_names_are_refused_as_session_names(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="device name Windows reserves"):
        session_path(tmp_path, "con")


def test_import_under_a_device_name_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    csv = tmp_path / "x.csv"
    csv.write_text("ts,open,high,low,close,volume\n2024-06-14T09:15:00+05:30,1,2,0.5,1.5,10\n")
    cache = tmp_path / "cache"
    done = run_mde("import", str(csv), "--symbol", "CON", "-t", "5m", env=base_env(cache), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("error: invalid symbol 'CON'") and done.stderr.count("\n") == 1
    assert list(cache.rglob("*.parquet")) == []  # nothing written (an absent folder has none either)
