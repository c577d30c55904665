"""Kite Connect login and the saved access token.

Kite's login is a browser round trip (kite-api.md §1): the user opens `login_url()`, logs
in (password + TOTP), and Kite redirects to the app's redirect URL with
`?request_token=…&action=login&status=success`. `mde login` takes that request_token (or
the whole pasted URL), exchanges it for an access_token with `POST /session/token`, and
saves the token here. The token dies at about 06:00 IST the next day; there is no refresh.

The token file (`settings.token_file`: `$MDE_TOKEN_FILE`, else `<config dir>/kite_token.json`)
is JSON `{"access_token", "user_id", "login_time", "expires_at"}`, created 0600 through a
temp file and `os.replace` in the same folder (a folder mde creates is 0700).
`KITE_ACCESS_TOKEN` in the environment overrides the file.

Callers pass in a client (`login_client()` builds one); what it raises goes through the
one map in `errors.py`. Failures to read or write the token file are mapped in
`_token_file_error`. No token or secret ever appears in a repr, a status line or an error
message (nor in the printed chain of one).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ...atomic import atomic_write
from ...clock import IST, to_ist
from ...config import Settings
from ...errors import AuthError, ConfigError, InputError, MdeError, SourceUnavailable
from .errors import kite_error

EXPIRY_TIME = time(6, 0)  # Kite access tokens die around 06:00 IST the next day
TOKEN_FIELDS = ("access_token", "user_id", "login_time", "expires_at")
_REQUEST_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{6,128}")
NO_API_KEY = "no Kite API key: set KITE_API_KEY or [kite] api_key in mde.toml"
NO_API_SECRET = "no Kite api_secret: set KITE_API_SECRET in the environment (it is never read from mde.toml)"


@dataclass(frozen=True, kw_only=True)
class TokenInfo:
    """A Kite session. The token itself is never part of the repr."""

    access_token: str = field(repr=False)
    user_id: str
    login_time: datetime  # tz-aware IST
    expires_at: datetime  # tz-aware IST: the first 06:00 IST after login_time
    expired: bool = False  # as of the `now` it was loaded with


# -- time -------------------------------------------------------------------------------


def expiry_after(login_time: datetime) -> datetime:
    """The next 06:00 IST strictly after `login_time` (05:30 -> 06:00 today, 09:00 -> 06:00 tomorrow)."""
    t = to_ist(login_time)  # a naive login_time is IST wall clock, as Kite sends it
    six = datetime.combine(t.date(), EXPIRY_TIME, IST)
    return six if t < six else datetime.combine(t.date() + timedelta(days=1), EXPIRY_TIME, IST)


def _now(settings: Settings, now: datetime | None) -> datetime:
    return to_ist(now) if now is not None else settings.clock()


def _fmt(ts: datetime) -> str:
    return to_ist(ts).strftime("%Y-%m-%d %H:%M IST")


def _fmt_left(delta: timedelta) -> str:
    minutes = max(int(delta.total_seconds() // 60), 0)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m" if hours else f"{minutes}m"


# -- the token file -----------------------------------------------------------------------


def token_path(settings: Settings) -> Path:
    return Path(settings.token_file)


def _make_private_dirs(folder: Path) -> None:
    """Create `folder` and any missing parents, each 0700; existing folders are left alone."""
    missing: list[Path] = []
    p = folder
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)


def _write_private(path: Path, data: bytes) -> None:
    """Replace `path` atomically with a 0600 file holding `data` (mkstemp creates it 0600)."""
    _make_private_dirs(path.parent)
    with atomic_write(path) as fh:
        os.fchmod(fh.fileno(), 0o600)  # whatever the umask
        fh.write(data)


def save_token(settings: Settings, access_token: str, user_id: str, login_time: datetime) -> TokenInfo:
    """Write the token file (0600, atomic) and return what was saved."""
    if not access_token:
        raise AuthError("Kite returned no access token; run `mde login` again")
    login = to_ist(login_time).replace(microsecond=0)
    info = TokenInfo(access_token=access_token, user_id=user_id, login_time=login, expires_at=expiry_after(login))
    body = {
        "access_token": info.access_token,
        "user_id": info.user_id,
        "login_time": info.login_time.isoformat(),
        "expires_at": info.expires_at.isoformat(),
    }
    path = token_path(settings)
    try:
        _write_private(path, (json.dumps(body, indent=2) + "\n").encode())
    except OSError as exc:
        raise _token_file_error(path, exc, writing=True) from exc
    return info


def load_token(settings: Settings, now: datetime | None = None) -> TokenInfo | None:
    """The saved token, or None if there is no file. An expired token comes back with
    `.expired == True`; an unreadable file is an AuthError that says to log in again."""
    path = token_path(settings)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _token_file_error(path, exc) from exc
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) and data.get(k) for k in TOKEN_FIELDS):
            raise ValueError
        login = to_ist(datetime.fromisoformat(data["login_time"]))
        expires = to_ist(datetime.fromisoformat(data["expires_at"]))
    except ValueError as exc:  # json.JSONDecodeError is a ValueError too
        raise _token_file_error(path, exc) from None  # its text may quote the file, token and all
    return TokenInfo(
        access_token=data["access_token"],
        user_id=data["user_id"],
        login_time=login,
        expires_at=expires,
        expired=_now(settings, now) >= expires,
    )


def _token_file_error(path: Path, exc: OSError | ValueError, writing: bool = False) -> MdeError:
    """The one map of what goes wrong with the token file: it cannot be written (ConfigError:
    point MDE_TOKEN_FILE elsewhere), read (AuthError) or parsed (AuthError: log in again)."""
    if isinstance(exc, OSError):
        reason = exc.strerror or type(exc).__name__
        if writing:
            return ConfigError(f"cannot write the token file {path}: {reason}; set MDE_TOKEN_FILE to a writable path")
        return AuthError(f"cannot read the token file {path}: {reason}; run `mde login` again")
    return AuthError(f"the token file {path} is damaged; run `mde login` again")


def delete_token(settings: Settings) -> bool:
    """Remove the token file (a logout on our side); True if there was one."""
    try:
        token_path(settings).unlink()
    except FileNotFoundError:
        return False
    return True


def access_token(settings: Settings, now: datetime | None = None) -> str | None:
    """KITE_ACCESS_TOKEN if set; else the saved token unless it has expired; else None."""
    if settings.kite.access_token:
        return settings.kite.access_token
    info = load_token(settings, now)
    if info is None or info.expired:
        return None
    return info.access_token


def status_text(settings: Settings, now: datetime | None = None) -> str:
    """One line for `mde login --status`. Never contains the token."""
    if settings.kite.access_token:
        return "using KITE_ACCESS_TOKEN from the environment (expiry unknown)"
    try:
        info = load_token(settings, now)
    except AuthError as exc:
        return str(exc)
    if info is None:
        return "no token: run mde login"
    if info.expired:
        return f"token expired at {_fmt(info.expires_at)}: run mde login"
    left = info.expires_at - _now(settings, now)
    return f"token present, expires {_fmt(info.expires_at)} (in {_fmt_left(left)})"


# -- the login exchange -------------------------------------------------------------------


def require_api_key(settings: Settings) -> str:
    if not settings.kite.api_key:
        raise ConfigError(NO_API_KEY)
    return settings.kite.api_key


def require_api_secret(settings: Settings) -> str:
    if not settings.kite.api_secret:
        raise ConfigError(NO_API_SECRET)
    return settings.kite.api_secret


def parse_request_token(text: str) -> str:
    """A bare request_token, or the whole redirect URL (or its query string) as pasted."""
    text = (text or "").strip().strip("'\"<>").strip()
    if not text:
        raise InputError("no request_token given: paste the request_token or the whole redirect URL")
    if _REQUEST_TOKEN_RE.fullmatch(text):
        return text
    if "=" not in text and "://" not in text:
        raise InputError(
            "that does not look like a request_token (letters and digits) or a redirect URL "
            "with ?request_token=…; paste the address Kite redirected you to"
        )
    parts = urlsplit(text)
    query = parts.query or parts.fragment
    if not query and "://" not in text:
        query = text.lstrip("?")
    params = parse_qs(query, keep_blank_values=True)
    status = (params.get("status") or [""])[0]
    if status and status != "success":
        raise InputError(f"the redirect URL says status={status}, so the login did not succeed; run `mde login` again")
    token = (params.get("request_token") or [""])[0].strip()
    if not token:
        raise InputError("the redirect URL has no request_token; paste the whole address Kite redirected you to")
    if not _REQUEST_TOKEN_RE.fullmatch(token):
        raise InputError("the request_token in that URL is malformed; paste the whole address Kite redirected you to")
    return token


def login_url(client: Any) -> str:
    """Where the user logs in (`https://kite.zerodha.com/connect/login?api_key=…&v=3`)."""
    if not getattr(client, "api_key", None):
        raise ConfigError(NO_API_KEY)
    return str(client.login_url())


def exchange_request_token(client: Any, request_token: str, api_secret: str | None) -> TokenInfo:
    """`POST /session/token` through a kiteconnect client; returns the session (not saved).

    Failures are mapped by `errors.kite_error` with the login's advice (a spent or stale
    request token, a wrong api_secret, network trouble).
    """
    if not getattr(client, "api_key", None):
        raise ConfigError(NO_API_KEY)
    if not api_secret:
        raise ConfigError(NO_API_SECRET)
    request_token = parse_request_token(request_token)
    try:
        data = client.generate_session(request_token, api_secret=api_secret)
    except Exception as exc:
        error = kite_error(exc, "logging in", (request_token, api_secret), login=True)
        if error is None:
            raise
        raise error from error.__cause__
    if not isinstance(data, dict) or not data.get("access_token"):
        raise SourceUnavailable("Kite's login answer had no access_token; run `mde login` again")
    login = data.get("login_time")
    if isinstance(login, str):
        try:
            login = datetime.strptime(login.strip(), "%Y-%m-%d %H:%M:%S")
        except ValueError:
            login = None
    if not isinstance(login, datetime):
        login = datetime.now(IST)
    login = to_ist(login).replace(microsecond=0)
    return TokenInfo(
        access_token=str(data["access_token"]),
        user_id=str(data.get("user_id") or ""),
        login_time=login,
        expires_at=expiry_after(login),
    )


def complete_login(settings: Settings, client: Any, pasted: str) -> TokenInfo:
    """What `mde login` does after the browser step: parse what the user pasted, exchange
    it, save the token file. The client must be built with settings' api_key and root."""
    require_api_key(settings)
    secret = require_api_secret(settings)
    token = parse_request_token(pasted)
    info = exchange_request_token(client, token, secret)
    return save_token(settings, info.access_token, info.user_id, info.login_time)


def login_client(settings: Settings) -> Any:
    """A client without an access token, for the login exchange (`mde login`)."""
    from kiteconnect import KiteConnect

    return KiteConnect(require_api_key(settings), root=settings.kite.root)
