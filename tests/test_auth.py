"""Login and the saved Kite token, with the real kiteconnect client against KiteServer."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from kite_server import KiteServer
from mde.clock import IST
from mde.config import Settings, default_config_dir, load
from mde.errors import AuthError, ConfigError, InputError, MdeError, SourceUnavailable
from mde.sources.kite import auth

MORNING = datetime(2024, 6, 14, 9, 0, tzinfo=IST)


@pytest.fixture(scope="module")
def server() -> Iterator[KiteServer]:
    with KiteServer() as srv:
        yield srv


@pytest.fixture
def kite(server: KiteServer) -> Iterator[KiteServer]:
    server.reset()
    server.enforce_rate_limits = False
    server.now = MORNING
    yield server
    server.reset()


def make_settings(server: KiteServer, token_file: Path, **extra: str) -> Settings:
    env = {
        "MDE_TOKEN_FILE": str(token_file),
        "KITE_API_KEY": server.api_key,
        "KITE_API_SECRET": server.api_secret,
        "MDE_KITE_ROOT": server.url,
        **extra,
    }
    return load(environ=env)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    return tmp_path / "conf" / "mde" / "t.json"


@pytest.fixture
def settings(kite: KiteServer, token_file: Path) -> Settings:
    return make_settings(kite, token_file)


def login_client(server: KiteServer) -> Any:
    """A fresh, not-yet-logged-in real KiteConnect pointed at the server."""
    return server.make_client(access_token=None)


def raised(exc_type: type[BaseException], fn: Callable[[], Any], *secrets: str) -> BaseException:
    """Run fn, expect exc_type, and check that its message is one line without secrets."""
    with pytest.raises(exc_type) as info:
        fn()
    text = str(info.value)
    assert "\n" not in text
    for s in secrets:
        assert s not in text and s not in repr(info.value)
    return info.value


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the full exchange ----------------------------------------------------------------------


def test_full_login_saves_a_private_token_file_expiring_at_the_next_6am(
    kite: KiteServer, settings: Settings, token_file: Path
) -> None:
    kite.add_request_token("rt0001abcd")
    info = auth.complete_login(settings, login_client(kite), "rt0001abcd")

    assert info.access_token in kite.valid_tokens
    assert info.user_id == kite.user_id
    assert info.login_time == MORNING
    assert info.expires_at == datetime(2024, 6, 15, 6, 0, tzinfo=IST)
    assert not info.expired

    assert mode(token_file) == 0o600
    assert mode(token_file.parent) == 0o700  # mde created conf/mde
    assert mode(token_file.parent.parent) == 0o700
    assert [p.name for p in token_file.parent.iterdir()] == ["t.json"]  # no temp file left
    saved = json.loads(token_file.read_text())
    assert set(saved) == {"access_token", "user_id", "login_time", "expires_at"}
    assert saved["access_token"] == info.access_token
    assert saved["expires_at"] == "2024-06-15T06:00:00+05:30"
    assert saved["login_time"] == "2024-06-14T09:00:00+05:30"

    loaded = auth.load_token(settings, datetime(2024, 6, 14, 10, 0, tzinfo=IST))
    assert loaded == info
    assert auth.access_token(settings, datetime(2024, 6, 15, 5, 59, tzinfo=IST)) == info.access_token
    # The saved token really works with the client.
    assert kite.make_client(access_token=auth.access_token(settings, MORNING)).profile()["user_id"] == kite.user_id


def test_an_early_morning_login_expires_at_6am_the_same_day(kite: KiteServer, settings: Settings) -> None:
    kite.now = datetime(2024, 6, 14, 5, 30, tzinfo=IST)
    kite.add_request_token("rtearly123")
    info = auth.complete_login(settings, login_client(kite), "rtearly123")
    assert info.expires_at == datetime(2024, 6, 14, 6, 0, tzinfo=IST)


@pytest.mark.parametrize(
    ("login", "expiry"),
    [
        ("2024-06-14T05:30", "2024-06-14T06:00"),
        ("2024-06-14T05:59:59", "2024-06-14T06:00"),
        ("2024-06-14T06:00", "2024-06-15T06:00"),
        ("2024-06-14T09:00", "2024-06-15T06:00"),
        ("2024-06-14T23:59", "2024-06-15T06:00"),
        ("2024-12-31T10:00", "2025-01-01T06:00"),
        ("2024-06-14T03:30:00+00:00", "2024-06-15T06:00"),  # 09:00 IST given in UTC
    ],
)
def test_expiry_is_the_next_6am_ist(login: str, expiry: str) -> None:
    got = auth.expiry_after(datetime.fromisoformat(login))
    assert got == datetime.fromisoformat(expiry).replace(tzinfo=IST)


def test_the_request_token_is_single_use(kite: KiteServer, settings: Settings) -> None:
    kite.add_request_token("rtonce1234")
    first = auth.complete_login(settings, login_client(kite), "rtonce1234")
    err = raised(
        AuthError,
        lambda: auth.complete_login(settings, login_client(kite), "rtonce1234"),
        first.access_token,
        kite.api_secret,
    )
    assert "single-use" in str(err) and "mde login" in str(err)
    assert err.exit_code == 3
    # The first token is still the saved one.
    assert auth.access_token(settings, MORNING) == first.access_token


def test_a_wrong_api_secret_is_an_auth_error_naming_the_variable(kite: KiteServer, token_file: Path) -> None:
    kite.add_request_token("rtsecret12")
    bad = make_settings(kite, token_file, KITE_API_SECRET="not-the-secret")
    err = raised(AuthError, lambda: auth.complete_login(bad, login_client(kite), "rtsecret12"), "not-the-secret")
    assert "KITE_API_SECRET" in str(err)
    assert not token_file.exists()
    # The request token was not burnt by the failed checksum.
    good = make_settings(kite, token_file)
    assert auth.complete_login(good, login_client(kite), "rtsecret12").access_token


def test_a_pasted_redirect_url_works(kite: KiteServer, settings: Settings) -> None:
    kite.add_request_token("rtpasted99")
    url = " https://127.0.0.1/?request_token=rtpasted99&action=login&status=success\n"
    info = auth.complete_login(settings, login_client(kite), url)
    assert info.access_token in kite.valid_tokens


def test_login_url_comes_from_the_client(kite: KiteServer) -> None:
    url = auth.login_url(login_client(kite))
    assert url.startswith("https://kite.zerodha.com/connect/login?")
    assert f"api_key={kite.api_key}" in url and "v=3" in url


def test_network_trouble_during_the_exchange_is_source_unavailable(kite: KiteServer, settings: Settings) -> None:
    kite.add_request_token("rtnetwork1")
    kite.drop_connection_next(path_prefix="/session")
    raised(SourceUnavailable, lambda: auth.complete_login(settings, login_client(kite), "rtnetwork1"), kite.api_secret)
    kite.html_error_next(502, path_prefix="/session")
    raised(SourceUnavailable, lambda: auth.complete_login(settings, login_client(kite), "rtnetwork1"), kite.api_secret)
    # Neither failure reached the token check, so the request token still works.
    assert auth.complete_login(settings, login_client(kite), "rtnetwork1").access_token


def test_missing_credentials_say_what_to_set(kite: KiteServer, token_file: Path) -> None:
    no_key = load(environ={"MDE_TOKEN_FILE": str(token_file), "KITE_API_SECRET": "s"})
    err = raised(ConfigError, lambda: auth.complete_login(no_key, login_client(kite), "rtx12345"))
    assert "KITE_API_KEY" in str(err)
    assert "[kite]" in str(raised(ConfigError, lambda: auth.require_api_key(no_key)))
    no_secret = load(environ={"MDE_TOKEN_FILE": str(token_file), "KITE_API_KEY": kite.api_key})
    err = raised(ConfigError, lambda: auth.complete_login(no_secret, login_client(kite), "rtx12345"))
    assert "KITE_API_SECRET" in str(err)
    err = raised(ConfigError, lambda: auth.exchange_request_token(login_client(kite), "rtx12345", None))
    assert "KITE_API_SECRET" in str(err)


# -- pasting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "abc123XYZ",
        "  abc123XYZ\n",
        "https://127.0.0.1/?request_token=abc123XYZ&action=login&status=success",
        "https://example.com/cb?action=login&type=login&status=success&request_token=abc123XYZ",
        "http://localhost:8080/kite/callback?request_token=abc123XYZ",
        "request_token=abc123XYZ&action=login&status=success",
        "?request_token=abc123XYZ&status=success",
        "'https://127.0.0.1/?request_token=abc123XYZ&status=success'",
    ],
)
def test_parse_request_token_accepts_a_bare_token_or_the_redirect(text: str) -> None:
    assert auth.parse_request_token(text) == "abc123XYZ"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("https://127.0.0.1/?request_token=abc123XYZ&action=login&status=cancelled", "status=cancelled"),
        ("https://127.0.0.1/?action=login&status=success", "no request_token"),
        ("https://127.0.0.1/", "no request_token"),
        ("", "no request_token"),
        ("   ", "no request_token"),
        ("not a token at all", "does not look like"),
    ],
)
def test_parse_request_token_refuses_bad_pastes(text: str, words: str) -> None:
    err = raised(InputError, lambda: auth.parse_request_token(text))
    assert words in str(err)


# -- the saved token --------------------------------------------------------------------------


def test_an_expired_file_token_is_not_used(settings: Settings) -> None:
    auth.save_token(settings, "tok-expired-0001", "AB1234", MORNING)
    after = datetime(2024, 6, 15, 6, 0, tzinfo=IST)
    info = auth.load_token(settings, after)
    assert info is not None and info.expired and info.access_token == "tok-expired-0001"
    assert auth.access_token(settings, after) is None
    assert auth.access_token(settings, datetime(2024, 6, 15, 5, 59, tzinfo=IST)) == "tok-expired-0001"


def test_no_file_means_no_token(settings: Settings) -> None:
    assert auth.load_token(settings, MORNING) is None
    assert auth.access_token(settings, MORNING) is None
    assert not auth.delete_token(settings)


def test_kite_access_token_overrides_the_file(kite: KiteServer, token_file: Path) -> None:
    plain = make_settings(kite, token_file)
    auth.save_token(plain, "tok-from-file-01", "AB1234", MORNING)
    env = make_settings(kite, token_file, KITE_ACCESS_TOKEN="tok-from-env-001")
    assert auth.access_token(env, MORNING) == "tok-from-env-001"
    # ... even when the file's token has expired.
    assert auth.access_token(env, datetime(2030, 1, 1, tzinfo=IST)) == "tok-from-env-001"
    assert auth.status_text(env, MORNING) == "using KITE_ACCESS_TOKEN from the environment (expiry unknown)"
    assert auth.access_token(plain, MORNING) == "tok-from-file-01"


def test_status_text_never_shows_the_token(kite: KiteServer, token_file: Path) -> None:
    settings = make_settings(kite, token_file)
    assert auth.status_text(settings, MORNING) == "no token: run mde login"
    token = "tok-status-secret-77"
    auth.save_token(settings, token, "AB1234", MORNING)
    fresh = auth.status_text(settings, datetime(2024, 6, 14, 9, 30, tzinfo=IST))
    assert fresh == "token present, expires 2024-06-15 06:00 IST (in 20h 30m)"
    assert auth.status_text(settings, datetime(2024, 6, 15, 5, 15, tzinfo=IST)).endswith("(in 45m)")
    expired = auth.status_text(settings, datetime(2024, 6, 15, 6, 0, tzinfo=IST))
    assert expired == "token expired at 2024-06-15 06:00 IST: run mde login"
    env = auth.status_text(make_settings(kite, token_file, KITE_ACCESS_TOKEN=token), MORNING)
    for text in (fresh, expired, env):
        assert token not in text


def test_status_uses_the_settings_clock_when_no_now_is_given(kite: KiteServer, token_file: Path) -> None:
    settings = make_settings(kite, token_file, MDE_NOW="2024-06-14T12:00")
    auth.save_token(settings, "tok-clock-000001", "AB1234", MORNING)
    assert auth.status_text(settings) == "token present, expires 2024-06-15 06:00 IST (in 18h 0m)"
    assert not auth.load_token(settings).expired  # type: ignore[union-attr]


def test_token_info_repr_has_no_token() -> None:
    info = auth.TokenInfo(
        access_token="tok-repr-secret-42", user_id="AB1234", login_time=MORNING, expires_at=auth.expiry_after(MORNING)
    )
    assert "tok-repr-secret-42" not in repr(info) and "tok-repr-secret-42" not in str(info)
    assert "AB1234" in repr(info)


def test_saving_again_replaces_the_file_and_tightens_its_mode(settings: Settings, token_file: Path) -> None:
    token_file.parent.mkdir(parents=True)
    token_file.write_text("{}")
    token_file.chmod(0o644)
    auth.save_token(settings, "tok-replace-00001", "AB1234", MORNING)
    assert mode(token_file) == 0o600
    assert auth.load_token(settings, MORNING).access_token == "tok-replace-00001"  # type: ignore[union-attr]
    assert sorted(p.name for p in token_file.parent.iterdir()) == ["t.json"]


def test_an_existing_folder_keeps_its_mode(tmp_path: Path, kite: KiteServer) -> None:
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    settings = make_settings(kite, folder / "tok.json")
    auth.save_token(settings, "tok-folder-00001", "AB1234", MORNING)
    assert mode(folder) == 0o755 and mode(folder / "tok.json") == 0o600


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[]",
        '{"access_token": "tok-damaged-0001"}',
        '{"access_token": "tok-damaged-0001", "user_id": "A", "login_time": "x", "expires_at": "y"}',
    ],
)
def test_a_damaged_token_file_says_log_in_again(settings: Settings, token_file: Path, content: str) -> None:
    token_file.parent.mkdir(parents=True)
    token_file.write_text(content)
    err = raised(AuthError, lambda: auth.load_token(settings, MORNING), "tok-damaged-0001")
    assert "mde login" in str(err)
    raised(AuthError, lambda: auth.access_token(settings, MORNING), "tok-damaged-0001")
    assert "damaged" in auth.status_text(settings, MORNING)
    assert "tok-damaged-0001" not in auth.status_text(settings, MORNING)


def test_token_file_setting_comes_from_mde_token_file(tmp_path: Path) -> None:
    assert load(environ={"MDE_TOKEN_FILE": str(tmp_path / "x.json")}).token_file == tmp_path / "x.json"
    assert load(environ={}).token_file == default_config_dir() / "kite_token.json"
    assert auth.token_path(load(environ={"MDE_TOKEN_FILE": "~/k.json"})) == Path("~/k.json").expanduser()


def test_no_error_raised_here_carries_a_token_or_secret(kite: KiteServer, settings: Settings) -> None:
    """A sweep over every failing path: messages name what to fix, never the secret values."""
    kite.add_request_token("rtsweep001")
    good = auth.complete_login(settings, login_client(kite), "rtsweep001")
    secrets = (good.access_token, kite.api_secret, "rtsweep001")
    bad_secret = make_settings(kite, settings.token_file, KITE_API_SECRET="wrong-secret-xyz")
    attempts: list[Callable[[], Any]] = [
        lambda: auth.complete_login(settings, login_client(kite), "rtsweep001"),
        lambda: auth.complete_login(bad_secret, login_client(kite), "rtsweep001"),
        lambda: auth.exchange_request_token(login_client(kite), "rtsweep001", kite.api_secret),
        lambda: auth.exchange_request_token(login_client(kite), "rtsweep001", None),
    ]
    for attempt in attempts:
        with pytest.raises(MdeError) as info:
            attempt()
        for s in (*secrets, "wrong-secret-xyz"):
            assert s not in str(info.value) and s not in repr(info.value)
