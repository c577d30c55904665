"""The one home of configuration: `mde.toml`, then environment variables, then flags.

Lookup of the file: `--config PATH`, else `$MDE_CONFIG`, else `./mde.toml`, else built-in
defaults. Relative paths inside a file are relative to that file's folder. Unknown keys
and wrong types are errors naming the key and the file, so a typo never goes unnoticed.

Environment: MDE_CACHE_DIR, MDE_SOURCE, MDE_NOW, MDE_KITE_ROOT, MDE_KITE_WS_ROOT, MDE_KITE_DEADLINE, MDE_LOCK_TIMEOUT, KITE_API_KEY,
KITE_ACCESS_TOKEN, KITE_API_SECRET, MDE_TOKEN_FILE, MDE_API_TOKEN, MDE_CORS_ORIGINS. Secrets never
appear in a repr or a message.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .calendar import now_ist, parse_instant
from .clock import IST
from .errors import ConfigError, InputError

SOURCES = ("sample", "kite")
# `--count` and `[refresh] count`: about ten years of 1m candles. A larger count cannot be
# served by any source and would walk the calendar back past the year 1.
MAX_COUNT = 1_000_000
# The range a pinned clock (MDE_NOW) may take: NSE data starts in 1990; beyond 2099 a refresh
# would ask for decades of candles that cannot exist.
CLOCK_RANGE = (datetime(1990, 1, 1, tzinfo=IST), datetime(2100, 1, 1, tzinfo=IST))
DEFAULT_KITE_ROOT = "https://api.kite.trade"
DEFAULT_KITE_WS_ROOT = "wss://ws.kite.trade"
DEFAULT_STREAM_GRACE = 2.0


def default_cache_dir() -> Path:
    from platformdirs import user_data_path

    return user_data_path("mde", appauthor=False) / "cache"


def default_config_dir() -> Path:
    from platformdirs import user_config_path

    return user_config_path("mde", appauthor=False)


@dataclass(frozen=True, kw_only=True)
class KiteSettings:
    api_key: str | None = None
    root: str = DEFAULT_KITE_ROOT
    access_token: str | None = field(default=None, repr=False)
    api_secret: str | None = field(default=None, repr=False)
    deadline: float = 30.0  # seconds for one request, all of it ([kite] deadline, MDE_KITE_DEADLINE)
    ws_root: str = DEFAULT_KITE_WS_ROOT  # the ticker's WebSocket ([kite] ws_root, MDE_KITE_WS_ROOT)


def _rebuild(cls: type, state: dict[str, Any]) -> Any:
    return cls(**{k: MappingProxyType(v) if isinstance(v, dict) else v for k, v in state.items()})


class _Picklable:
    """Read-only mappings cannot be pickled; settings must cross to sweep worker processes."""

    def __reduce__(self) -> tuple[Any, ...]:
        state = {k: dict(v) if isinstance(v, MappingProxyType) else v for k, v in self.__dict__.items()}
        return (_rebuild, (type(self), state))


@dataclass(frozen=True, kw_only=True)
class RefreshSettings(_Picklable):
    symbols: tuple[str, ...] = ()
    timeframes: tuple[str, ...] = ("5m",)
    count: int = 1000
    multi_tf: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))  # per symbol


LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost` are this machine only; anything else (0.0.0.0, a LAN IP,
    a host name) can be reached from elsewhere."""
    text = host.strip().strip("[]").lower()
    if text in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, kw_only=True)
class ServeSettings:
    """`mde serve`: [serve] host, port, cors_origins; the API token only from MDE_API_TOKEN or
    --token (never from a file that may be committed), never in a repr, a message or a log."""

    host: str = "127.0.0.1"
    port: int = 8000
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()  # Host names served besides loopback (with a token only)
    token: str | None = field(default=None, repr=False)

    def check(self) -> None:
        """The token rule: binding beyond loopback needs a token."""
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port must be between 0 (any free port) and 65535, got {self.port}")
        if not is_loopback(self.host) and not self.token:
            raise ConfigError(
                f"refusing to serve on {self.host} without an API token: set MDE_API_TOKEN or pass --token "
                "(only 127.0.0.1/localhost may be served without one)"
            )


@dataclass(frozen=True, kw_only=True)
class Settings(_Picklable):
    """Everything mde needs to know, built once by `load()` and never mutated."""

    cache_dir: Path
    source: str = "kite"
    kite: KiteSettings = KiteSettings()
    refresh: RefreshSettings = RefreshSettings()
    aliases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    now: datetime | None = None  # MDE_NOW: a pinned clock
    config_path: Path | None = None
    token_file: Path = field(default_factory=lambda: default_config_dir() / "kite_token.json")  # MDE_TOKEN_FILE
    costs_file: Path | None = None  # [costs] file: the user's own charges table (else the bundled one)
    margins_file: Path | None = None  # [margins] file: the user's own margin rates (else the bundled one)
    risk: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))  # [risk] limits of paper sessions
    serve: ServeSettings = ServeSettings()  # [serve], MDE_API_TOKEN, MDE_CORS_ORIGINS
    lock_timeout: float = (
        120.0  # seconds a writer waits for another mde's cache lock ([cache] lock_timeout, MDE_LOCK_TIMEOUT)
    )
    stream_grace: float = (
        DEFAULT_STREAM_GRACE  # [stream] grace: seconds `mde stream` waits for late ticks after a close
    )

    def clock(self) -> datetime:
        """The pinned instant if MDE_NOW is set, else the wall clock, in IST."""
        return self.now if self.now is not None else now_ist()

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)


# section -> key -> (type description, validator/converter)
def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError("a string")
    return v


def _str_list(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise TypeError("a list of strings")
    return tuple(v)


def _pos_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise TypeError("a positive integer")
    return v


def _count(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_COUNT:
        raise TypeError(f"a whole number between 1 and {MAX_COUNT:,}")
    return v


def _pos_num(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise TypeError("a positive number")
    return float(v)


def _tf_map(v: Any) -> Mapping[str, tuple[str, ...]]:
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise TypeError("a table of SYMBOL = [timeframes]")
    return MappingProxyType({k.upper(): _str_list(x) for k, x in v.items()})


def _port(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 65536:
        raise TypeError("a port number (0..65535; 0: any free port)")
    return v


def _source(v: Any) -> str:
    if v not in SOURCES:
        raise TypeError(f"one of {', '.join(repr(s) for s in SOURCES)}")
    return str(v)


SCHEMA: dict[str, dict[str, Any]] = {
    "cache": {"dir": _str, "lock_timeout": _pos_num},
    "source": {"kind": _source},
    "kite": {"api_key": _str, "root": _str, "ws_root": _str, "deadline": _pos_num},
    "stream": {"grace": _pos_num},
    "refresh": {"symbols": _str_list, "timeframes": _str_list, "count": _count, "multi_tf": _tf_map},
    "costs": {"file": _str},
    "margins": {"file": _str},
    "risk": {
        "max_loss_per_day": _pos_num,
        "max_position_qty": _pos_int,
        "max_position_notional": _pos_num,
        "max_orders_per_minute": _pos_int,
    },
    # no token here on purpose: a secret does not belong in a file that may be committed
    "serve": {"host": _str, "port": _port, "cors_origins": _str_list, "allowed_hosts": _str_list},
}
# Sections whose keys are free-form (validated by their own type only).
FREE_SECTIONS = {"aliases": _str}


def _check(raw: dict[str, Any], where: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    known_sections = [*SCHEMA, *FREE_SECTIONS]
    for section, body in raw.items():
        if section not in known_sections:
            hint = difflib.get_close_matches(section, known_sections, n=1)
            extra = f"; did you mean [{hint[0]}]?" if hint else f"; known sections: {', '.join(known_sections)}"
            raise ConfigError(f"unknown section [{section}] in {where}{extra}")
        if not isinstance(body, dict):
            raise ConfigError(f"[{section}] in {where} must be a table")
        out[section] = {}
        for key, value in body.items():
            if section in FREE_SECTIONS:
                check = FREE_SECTIONS[section]
            else:
                keys = SCHEMA[section]
                if key not in keys:
                    hint = difflib.get_close_matches(key, list(keys), n=1)
                    extra = f"; did you mean '{hint[0]}'?" if hint else f"; known keys: {', '.join(keys)}"
                    raise ConfigError(f"unknown key '{key}' in [{section}] of {where}{extra}")
                check = keys[key]
            try:
                out[section][key] = check(value)
            except TypeError as exc:
                raise ConfigError(f"'{section}.{key}' in {where} must be {exc}, not {value!r}") from None
    return out


def find_config_file(explicit: str | Path | None, environ: Mapping[str, str]) -> Path | None:
    if explicit:
        return _config_file(Path(explicit).expanduser(), "config file {path}")
    if environ.get("MDE_CONFIG"):
        return _config_file(Path(environ["MDE_CONFIG"]).expanduser(), "MDE_CONFIG points to {path}, which")
    local = Path("mde.toml")
    return local if local.is_file() else None


def _config_file(path: Path, what: str) -> Path:
    """`path` if it is a file, else a ConfigError saying what it is instead."""
    named = what.format(path=path)
    if path.is_dir():
        raise ConfigError(f"{named} is a folder, not a file; give the path of a TOML file like mde.toml")
    if not path.exists():
        raise ConfigError(f"{named} does not exist")
    return path


def load(
    config: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cache_dir: str | Path | None = None,
    source: str | None = None,
    now: str | datetime | None = None,
    host: str | None = None,
    port: int | None = None,
    api_token: str | None = None,
) -> Settings:
    """Build the Settings: file, then environment, then the keyword arguments (flags)."""
    env = os.environ if environ is None else environ
    path = find_config_file(config, env)
    raw: dict[str, dict[str, Any]] = {}
    base = Path.cwd()
    if path is not None:
        try:
            parsed = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
            ) from None
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
        raw = _check(parsed, path)
        base = path.resolve().parent

    def pick(flag: Any, env_name: str, section: str, key: str, default: Any) -> Any:
        if flag is not None:
            return flag
        if env.get(env_name):
            return env[env_name]
        return raw.get(section, {}).get(key, default)

    cache = pick(cache_dir, "MDE_CACHE_DIR", "cache", "dir", None)
    if cache is None:
        cache_path = default_cache_dir()
    else:
        cache_path = Path(cache).expanduser()
        if not cache_path.is_absolute() and cache_dir is None and not env.get("MDE_CACHE_DIR"):
            cache_path = base / cache_path  # relative to the config file
    kind = pick(source, "MDE_SOURCE", "source", "kind", "kite")
    if kind not in SOURCES:
        raise ConfigError(f"unknown source {kind!r}; use one of {', '.join(SOURCES)}")

    given = now if now is not None else env.get("MDE_NOW") or None
    pinned: datetime | None = None
    in_range = True
    try:
        if isinstance(given, str):
            pinned = parse_instant(given, "MDE_NOW", check_years=False)  # CLOCK_RANGE, below
        elif isinstance(given, datetime):
            pinned = given.astimezone(IST) if given.tzinfo else given.replace(tzinfo=IST)
        if pinned is not None:
            in_range = CLOCK_RANGE[0] <= pinned < CLOCK_RANGE[1]
    except InputError as exc:
        raise ConfigError(str(exc)) from None
    except (OverflowError, ValueError):  # 0001-01-01 and 9999-12-31 cannot even be moved to IST
        in_range = False
    if not in_range:
        last = CLOCK_RANGE[1] - timedelta(days=1)
        raise ConfigError(
            f"MDE_NOW must be between {CLOCK_RANGE[0]:%Y-%m-%d} and {last:%Y-%m-%d} (IST), got {given!s:.40}"
        )

    kite_raw = raw.get("kite", {})
    deadline = kite_raw.get("deadline", 30.0)
    if env.get("MDE_KITE_DEADLINE"):
        try:
            deadline = float(env["MDE_KITE_DEADLINE"])
        except ValueError:
            deadline = float("nan")
        if not 0 < deadline < float("inf"):
            raise ConfigError(
                f"MDE_KITE_DEADLINE must be a positive number of seconds, got {env['MDE_KITE_DEADLINE']!r}"
            )
    kite = KiteSettings(
        deadline=deadline,
        api_key=env.get("KITE_API_KEY") or kite_raw.get("api_key"),
        root=(env.get("MDE_KITE_ROOT") or kite_raw.get("root") or DEFAULT_KITE_ROOT).rstrip("/"),
        ws_root=(env.get("MDE_KITE_WS_ROOT") or kite_raw.get("ws_root") or DEFAULT_KITE_WS_ROOT).rstrip("/"),
        access_token=env.get("KITE_ACCESS_TOKEN") or None,
        api_secret=env.get("KITE_API_SECRET") or None,
    )
    refresh = RefreshSettings(**raw.get("refresh", {}))
    aliases = MappingProxyType({k.upper(): v for k, v in raw.get("aliases", {}).items()})
    costs_file = raw.get("costs", {}).get("file")
    margins_file = raw.get("margins", {}).get("file")
    serve_raw = raw.get("serve", {})
    cors_env = env.get("MDE_CORS_ORIGINS")
    hosts_env = env.get("MDE_ALLOWED_HOSTS")
    serve = ServeSettings(
        host=host or serve_raw.get("host", "127.0.0.1"),
        port=port if port is not None else serve_raw.get("port", 8000),
        cors_origins=tuple(o.strip() for o in cors_env.split(",") if o.strip())
        if cors_env
        else serve_raw.get("cors_origins", ()),
        allowed_hosts=tuple(h.strip() for h in hosts_env.split(",") if h.strip())
        if hosts_env
        else tuple(serve_raw.get("allowed_hosts", ())),
        token=api_token or env.get("MDE_API_TOKEN") or None,
    )
    lock_timeout = raw.get("cache", {}).get("lock_timeout", 120.0)
    if env.get("MDE_LOCK_TIMEOUT"):
        try:
            lock_timeout = float(env["MDE_LOCK_TIMEOUT"])
        except ValueError:
            lock_timeout = float("nan")
        if not 0 <= lock_timeout < float("inf"):
            raise ConfigError(f"MDE_LOCK_TIMEOUT must be a number of seconds, got {env['MDE_LOCK_TIMEOUT']!r}")
    return Settings(
        stream_grace=float(raw.get("stream", {}).get("grace", DEFAULT_STREAM_GRACE)),
        lock_timeout=lock_timeout,
        serve=serve,
        costs_file=(base / Path(costs_file).expanduser()) if costs_file else None,
        margins_file=(base / Path(margins_file).expanduser()) if margins_file else None,
        risk=MappingProxyType(dict(raw.get("risk", {}))),
        cache_dir=cache_path,
        source=kind,
        kite=kite,
        refresh=refresh,
        aliases=aliases,
        now=pinned,
        config_path=path,
        token_file=Path(env["MDE_TOKEN_FILE"]).expanduser()
        if env.get("MDE_TOKEN_FILE")
        else default_config_dir() / "kite_token.json",
    )
