"""Moved to `mde.sources.kite.auth`; this re-export keeps old imports working until the
branches that use them are merged (then it goes)."""

from __future__ import annotations

from .sources.kite.auth import (
    EXPIRY_TIME,
    TOKEN_FIELDS,
    TokenInfo,
    access_token,
    complete_login,
    delete_token,
    exchange_request_token,
    expiry_after,
    load_token,
    login_client,
    login_url,
    parse_request_token,
    require_api_key,
    require_api_secret,
    save_token,
    status_text,
    token_path,
)

__all__ = [
    "EXPIRY_TIME",
    "TOKEN_FIELDS",
    "TokenInfo",
    "access_token",
    "complete_login",
    "delete_token",
    "exchange_request_token",
    "expiry_after",
    "load_token",
    "login_client",
    "login_url",
    "parse_request_token",
    "require_api_key",
    "require_api_secret",
    "save_token",
    "status_text",
    "token_path",
]
