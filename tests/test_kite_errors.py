"""The one map from kiteconnect's exceptions to mde's errors (mde.sources.kite.errors).

Every exception class arrives for real: tests/kite_server.py answers with Kite's JSON error
envelope, the real kiteconnect client raises its own exception from it, and mde maps it. For
each: the right mde error and exit code, the kiteconnect exception kept as `__cause__`, and
no access token, API secret or request token in the message, the repr or the printed chain.
"""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kiteconnect import exceptions as kex

from mde.clock import IST
from mde.config import Settings, load
from mde.errors import AuthError, InputError, MdeError, RateLimited, SourceError, SourceUnavailable
from mde.sources.kite import KiteSource, RateLimiter, RetryPolicy, kite_error
from mde.sources.kite.auth import complete_login
from mde.sources.kite.errors import RedactedCause
from mde.symbols import Instrument
from mde.timeframes import parse as tf_parse

try:
    from kite_server import KiteServer
except ImportError:  # pragma: no cover
    from tests.kite_server import KiteServer

REPO = Path(__file__).resolve().parents[1]
HIST = "/instruments/historical"
NIFTY = Instrument("NSE", "NIFTY 50", 256265)
# No waiting between tries: what is tested is which error comes out, not the back-off.
NO_WAIT = {"attempts": 2, "attempts_429": 2, "base_delay": 0.0, "delay_429": 0.0, "timeout": 5.0}

# error_type, HTTP status, mde error, exit code, retried (so asked twice)
CASES = [
    ("TokenException", 403, AuthError, 3, False),
    ("PermissionException", 403, AuthError, 3, False),
    ("InputException", 400, InputError, 2, False),
    ("DataException", 502, SourceUnavailable, 5, True),
    ("NetworkException", 503, SourceUnavailable, 5, True),
    ("NetworkException", 429, RateLimited, 4, True),
    ("OrderException", 500, SourceError, 5, False),
    ("GeneralException", 500, SourceUnavailable, 5, True),
    ("GeneralException", 400, SourceError, 5, False),
]
LOGIN_CASES = [
    ("TokenException", 403, AuthError, 3),
    ("PermissionException", 403, AuthError, 3),
    ("InputException", 400, AuthError, 3),
    ("DataException", 502, SourceUnavailable, 5),
    ("NetworkException", 503, SourceUnavailable, 5),
    ("NetworkException", 429, RateLimited, 4),
    ("OrderException", 500, SourceUnavailable, 5),
    ("GeneralException", 500, SourceUnavailable, 5),
]


def _id(case: tuple[Any, ...]) -> str:
    return f"{case[0]}-{case[1]}"


@pytest.fixture(scope="module")
def server() -> Iterator[KiteServer]:
    with KiteServer(instruments_csv=REPO / "data" / "instruments.csv") as srv:
        yield srv


@pytest.fixture
def kite(server: KiteServer) -> Iterator[KiteServer]:
    server.reset()
    server.enforce_rate_limits = False
    server.now = datetime(2024, 6, 14, 18, 0, tzinfo=IST)
    yield server
    server.reset()


def settings_for(server: KiteServer, cache: Path) -> Settings:
    env = {
        "KITE_API_KEY": server.api_key,
        "KITE_ACCESS_TOKEN": server.access_token,
        "KITE_API_SECRET": server.api_secret,
        "MDE_KITE_ROOT": server.url,
        "MDE_TOKEN_FILE": str(cache.parent / "token.json"),
    }
    return load(environ=env, cache_dir=cache, source="kite")


def source(server: KiteServer, tmp_path: Path) -> KiteSource:
    limiters = {kind: RateLimiter(100, window=0.01) for kind in ("historical", "quote", "other")}
    return KiteSource(settings_for(server, tmp_path / "cache"), retry=RetryPolicy(**NO_WAIT), limiters=limiters)


def chain_text(err: BaseException) -> str:
    """What printing `err` with its chain shows of each exception (not the source lines)."""
    out: list[str] = []
    seen: BaseException | None = err
    while seen is not None:
        out += traceback.format_exception_only(seen)
        seen = seen.__cause__ if seen.__cause__ is not None or seen.__suppress_context__ else seen.__context__
    return "".join(out)


def assert_no_secret(err: BaseException, *secrets: str) -> None:
    printed = chain_text(err)
    for secret in secrets:
        assert secret not in str(err) and secret not in repr(err) and secret not in printed, secret
    assert "\n" not in str(err)


def fetch(src: KiteSource) -> Any:
    start = datetime(2024, 6, 10, 9, 15, tzinfo=IST)
    return src.historical(NIFTY, tf_parse("5m"), start, start.replace(day=14, hour=15, minute=25))


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_every_kite_exception_maps_to_its_error_with_the_cause_kept(
    kite: KiteServer, tmp_path: Path, case: tuple[Any, ...]
) -> None:
    error_type, status, expected, exit_code, retried = case
    kite.fail_next(status, error_type, f"{error_type} from the test server", times=10, path_prefix=HIST)
    with pytest.raises(MdeError) as info:
        fetch(source(kite, tmp_path))
    err = info.value
    assert type(err) is expected, err
    assert err.exit_code == exit_code
    cause = err.__cause__
    assert isinstance(cause, getattr(kex, error_type)), repr(cause)
    assert cause.code == status
    assert "fetching NSE:NIFTY 50 5m" in err.message
    assert_no_secret(err, kite.access_token, kite.api_secret)
    assert len(kite.requests_to(HIST)) == (2 if retried else 1)  # NO_WAIT allows two tries


@pytest.mark.parametrize("case", LOGIN_CASES, ids=_id)
def test_the_login_exchange_uses_the_same_map(kite: KiteServer, tmp_path: Path, case: tuple[Any, ...]) -> None:
    error_type, status, expected, exit_code = case
    kite.add_request_token("rtlogin001")
    kite.fail_next(status, error_type, f"{error_type} from the test server", path_prefix="/session")
    client = kite.make_client(access_token=None)
    with pytest.raises(MdeError) as info:
        complete_login(settings_for(kite, tmp_path / "cache"), client, "rtlogin001")
    err = info.value
    assert type(err) is expected and err.exit_code == exit_code, err
    assert isinstance(err.__cause__, getattr(kex, error_type))
    assert_no_secret(err, kite.api_secret, "rtlogin001")
    assert not (tmp_path / "token.json").exists()


def test_a_kite_message_quoting_a_secret_is_redacted_in_the_error_and_its_cause(
    kite: KiteServer, tmp_path: Path
) -> None:
    """Kite does not echo tokens today; if an answer ever did, neither the message nor the
    printed chain may show it: the cause is then a redacted stand-in, not the raw exception."""
    echo = f"bad param token={kite.access_token} secret={kite.api_secret}"
    kite.fail_next(400, "InputException", echo, path_prefix=HIST)
    with pytest.raises(InputError) as info:
        fetch(source(kite, tmp_path))
    err = info.value
    assert "bad param token=*** secret=***" in err.message
    assert isinstance(err.__cause__, RedactedCause)
    assert "kiteconnect.exceptions.InputException" in str(err.__cause__)
    assert_no_secret(err, kite.access_token, kite.api_secret)


def test_network_failures_are_source_unavailable_with_the_requests_error_as_cause(
    kite: KiteServer, tmp_path: Path
) -> None:
    import requests

    kite.drop_connection_next(times=2, path_prefix=HIST)  # both tries
    with pytest.raises(SourceUnavailable, match="gave up after 2 tries") as info:
        fetch(source(kite, tmp_path))
    assert isinstance(info.value.__cause__, requests.ConnectionError)
    kite.html_error_next(504, times=10, path_prefix=HIST)
    with pytest.raises(SourceUnavailable, match="HTTP 504") as info:
        fetch(source(kite, tmp_path))
    assert isinstance(info.value.__cause__, kex.DataException)  # the client's "Unknown Content-Type"


def test_anything_else_is_not_ours_to_map() -> None:
    assert kite_error(ZeroDivisionError("a bug"), "fetching X") is None


_CLI = (
    "import functools, sys\n"
    "from mde.sources.kite import client\n"
    f"client.RetryPolicy = functools.partial(client.RetryPolicy, **{NO_WAIT!r})\n"
    "sys.argv[0] = 'mde'\n"
    "from mde.cli import main\n"
    "main()\n"
)


# The CLI turns any MdeError's exit_code into the status in one place: one run per kind of
# failure a user meets (a dead token, a rate limit, an outage) is enough; a subprocess costs ~1 s.
@pytest.mark.parametrize(
    "case", [c for c in CASES if _id(c) in ("TokenException-403", "NetworkException-429", "DataException-502")], ids=_id
)
def test_cli_exit_codes_follow_the_map(kite: KiteServer, tmp_path: Path, case: tuple[Any, ...]) -> None:
    error_type, status, _, exit_code, _ = case
    kite.fail_next(status, error_type, f"{error_type} from the test server", times=10, path_prefix="/instruments")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MDE_", "KITE_"))}
    env.update(
        KITE_API_KEY=kite.api_key,
        KITE_ACCESS_TOKEN=kite.access_token,
        KITE_API_SECRET=kite.api_secret,
        MDE_KITE_ROOT=kite.url,
        MDE_CACHE_DIR=str(tmp_path / "cache"),
        MDE_SOURCE="kite",
        MDE_TOKEN_FILE=str(tmp_path / "token.json"),
    )
    done = subprocess.run(
        [sys.executable, "-c", _CLI, "instruments", "-n", "1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == exit_code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "downloading the instruments list" in lines[0]
    assert kite.access_token not in done.stderr and kite.api_secret not in done.stderr
    assert not (tmp_path / "cache" / "_meta" / "instruments.parquet").exists()


def test_the_map_is_the_only_place_that_knows_kiteconnects_exceptions() -> None:
    """No second map can grow elsewhere: only errors.py imports kiteconnect's exceptions or
    names their classes (as the old login code did, by string)."""
    import mde

    src = Path(mde.__file__).resolve().parent
    names = ("kiteconnect.exceptions", "import exceptions", "TokenException", "NetworkException", "DataException")
    offenders = sorted(
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if p.name != "errors.py" or p.parent.name != "kite"
        if any(n in p.read_text(encoding="utf-8") for n in names)
    )
    assert offenders == []
