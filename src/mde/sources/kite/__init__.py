"""Zerodha Kite Connect: the candle source and everything that talks to Kite.

    client.py       KiteSource (candles, quotes, resolution), the rate limiter, retries,
                    the fast kiteconnect client
    errors.py       the one map from kiteconnect's and requests' exceptions to mde's errors
    auth.py         `mde login`: the request-token exchange and the saved access token
    instruments.py  Kite's instruments dump, downloaded at most once a day (the offline
                    catalog it builds on is `mde.instruments`)

Only this package imports kiteconnect and requests, lazily (kiteconnect pulls in twisted,
~260 ms): importing it costs nothing until a client is made.
"""

from __future__ import annotations

from .auth import login_client
from .client import (
    DEFAULT_DEADLINE,
    MAX_DAYS,
    RATE_LIMITS,
    KiteSource,
    RateLimiter,
    RetryPolicy,
    chunk_ranges,
    parse_candle_ts,
    shared_limiter,
)
from .errors import kite_error

__all__ = [
    "DEFAULT_DEADLINE",
    "MAX_DAYS",
    "RATE_LIMITS",
    "KiteSource",
    "RateLimiter",
    "RetryPolicy",
    "chunk_ranges",
    "kite_error",
    "login_client",
    "parse_candle_ts",
    "shared_limiter",
]
