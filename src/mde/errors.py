"""The one exception tree of mde. Each error's message is the one line a user sees.

MdeError                          exit 1   anything mde understood but could not do
├── ConfigError                   exit 2   bad mde.toml, environment variable or flag
├── InputError                    exit 2   bad symbol, timeframe, limit, date
│   └── NotCached                 exit 2   nothing in the cache for this series (HTTP 404)
├── SessionBusy                   exit 2   the paper session runs in another process
├── SourceError                   exit 5   the market-data source failed
│   ├── AuthError                 exit 3   token missing or expired: run `mde login`
│   ├── RateLimited               exit 4   HTTP 429 from Kite, retried, then gave up
│   └── SourceUnavailable         exit 5   network down, 5xx, timeouts, HTML error pages
├── CacheError                    exit 6   an unreadable cache file, or a cache that cannot be written
│                                          (read-only, no permission, full); nothing was changed
└── StrategyError                 exit 7   a strategy raised (its file:line, symbol and candle)

The CLI maps `exit_code` to the process exit status in one place; the HTTP API maps
the same classes to status codes. Messages never contain secrets.
"""

from __future__ import annotations


class MdeError(Exception):
    """Base class: something mde understood but could not do."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(MdeError):
    """The configuration (mde.toml, MDE_* / KITE_* variables, flags) is wrong: fix it and rerun."""

    exit_code = 2


class InputError(MdeError):
    """A value the user gave is not valid (symbol, timeframe, limit, date)."""

    exit_code = 2


class NotCached(InputError):
    """The cache has no candles for this series yet: fetch or refresh it first."""


class SessionBusy(MdeError):
    """Another process runs this paper session (one process owns a session's journal): watch
    it with `mde paper --status`, stop it with `mde paper --halt`."""

    exit_code = 2


class SourceError(MdeError):
    """The market-data source failed; the cache is unchanged."""

    exit_code = 5


class AuthError(SourceError):
    """The source refused our credentials. Kite tokens die around 06:00 IST: run `mde login`."""

    exit_code = 3


class RateLimited(SourceError):
    """The source kept answering 'too many requests' after our retries; try again in a minute."""

    exit_code = 4


class SourceUnavailable(SourceError):
    """The source could not be reached or answered garbage after our retries; try again later."""

    exit_code = 5


class CacheError(MdeError):
    """A cache file is unreadable or inconsistent (mde never deletes or rewrites it on its own),
    or the cache cannot be written: `cannot write the cache at <dir>: read-only file system`."""

    exit_code = 6


class StrategyError(MdeError):
    """A strategy's own code raised: the message names the strategy, its file:line, the symbol
    and the candle it was processing, and the exception. The original exception is the cause
    (`__cause__`) and its formatted traceback is `traceback` (printed with -v)."""

    exit_code = 7
    traceback = ""


# Worst first: what a cron job's exit status reports when several series failed differently.
# A corrupt cache and a dead token need a human; an outage or a rate limit passes by itself.
SEVERITY: tuple[type[MdeError], ...] = (
    CacheError,
    StrategyError,
    AuthError,
    SourceUnavailable,
    RateLimited,
    SourceError,
    ConfigError,
    InputError,
    MdeError,
)


def worst(errors: list[MdeError]) -> MdeError | None:
    """The most severe of several errors (by SEVERITY), or None if there are none."""
    if not errors:
        return None
    return min(errors, key=lambda e: next(i for i, cls in enumerate(SEVERITY) if isinstance(e, cls)))
