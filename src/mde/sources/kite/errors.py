"""The one map from what Zerodha's client raises onto mde's error tree.

Every call mde makes through kiteconnect (candles, quotes, the instruments dump, the login
exchange) ends here when it fails: `kite_error()` turns the exception into an `MdeError`
whose message is one line saying what to do, with the exception as its `__cause__`.

    kiteconnect / requests                 mde                    retried by KiteSource.call
    TokenException                         AuthError (exit 3)     no: run `mde login`
    PermissionException                    AuthError (exit 3)     no
    InputException                         InputError (exit 2)    no (login: AuthError)
    NetworkException code 429              RateLimited (exit 4)   yes, then RateLimited
    NetworkException, DataException (an
      HTML error page), GeneralException
      5xx, timeouts, dropped connections   SourceUnavailable (5)  yes, then SourceUnavailable
    GeneralException 403                   AuthError (exit 3)     no
    any other KiteException (4xx,
      OrderException, ...), an answer the
      client could not read                SourceError (exit 5)   no

Kite's own message is kept (on one line, cut at 200 characters) with every secret mde holds
(access token, API secret, request token) blanked out. When a secret appears anywhere in the
printed form of the exception (its message or what it chains), the cause is not that
exception but a `RedactedCause` carrying its type and its text with the secrets blanked out,
so printing the error with its chain (`traceback.format_exception`) never shows a secret.

kiteconnect is imported here only inside `kite_error` (it pulls in twisted, ~260 ms), and only
after a client exists, so the import is free by then.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from dataclasses import dataclass

from ...errors import AuthError, InputError, MdeError, RateLimited, SourceError, SourceUnavailable


class Malformed(Exception):
    """A well-formed HTTP answer whose candles are not Kite's shape (the message says how)."""


class RedactedCause(Exception):
    """Stands in as the cause of an error whose real cause printed a secret: the original
    exception's type and text, secrets blanked out."""


@dataclass(frozen=True)
class Answer:
    """What the transport saw of the failed request: the HTTP status and Content-Type once
    the headers were in (None before), the total deadline when it was cut off by it, and the
    per-read timeout (for the message)."""

    status: int | None = None
    content_type: str | None = None
    cut_at_deadline: float | None = None
    timeout: float | None = None


def redact(text: str, secrets: Iterable[str | None]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _clean(message: str, secrets: Iterable[str | None]) -> str:
    """Kite's message on one line, short, with any secret we hold blanked out."""
    text = redact(" ".join(str(message).split()), secrets)
    return text[:200].rstrip(" .") or "no reason given"


def retryable(error: MdeError) -> bool:
    """Whether trying the same request again may help (a 429, an outage, a timeout)."""
    return isinstance(error, (RateLimited, SourceUnavailable))


def kite_error(
    exc: BaseException,
    doing: str,
    secrets: Iterable[str | None] = (),
    *,
    answer: Answer | None = None,
    login: bool = False,
) -> MdeError | None:
    """`exc`, raised while `doing` something through kiteconnect, as mde's error with `exc`
    as its cause; None when it is neither Kite's, nor requests', nor the client choking on
    an answer (a bug: let it propagate). `login` picks the advice for `mde login`."""
    held = [s for s in secrets if s]
    error = _translate(exc, doing, held, answer or Answer(), login)
    if error is None:
        return None
    if any(s in _printed(exc) for s in held):
        error.__cause__ = RedactedCause(f"{type(exc).__module__}.{type(exc).__qualname__}: {_clean(str(exc), held)}")
    else:
        error.__cause__ = exc
    return error


def _printed(exc: BaseException) -> str:
    """What printing `exc` with its chain shows of each exception (type and message)."""
    out: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        out += traceback.format_exception_only(current)
        current = (
            current.__cause__ if current.__cause__ is not None or current.__suppress_context__ else current.__context__
        )
    return "".join(out)


def _translate(exc: BaseException, doing: str, secrets: list[str], answer: Answer, login: bool) -> MdeError | None:
    import requests
    from kiteconnect import exceptions as kex

    msg = _clean(str(exc), secrets)
    if answer.cut_at_deadline is not None:
        return SourceUnavailable(f"Kite did not finish answering within {answer.cut_at_deadline:g}s while {doing}")
    if isinstance(exc, Malformed):
        return SourceError(f"Kite sent a malformed answer while {doing}: {msg}")
    if isinstance(exc, kex.KiteException):
        if login:
            return _login_error(exc, msg)
        return _data_error(exc, doing, msg, answer)
    if isinstance(exc, requests.RequestException) or (login and isinstance(exc, OSError)):
        if login:
            return SourceUnavailable(f"cannot reach Kite ({type(exc).__name__}); check the network and try again")
        if isinstance(exc, requests.Timeout):
            return SourceUnavailable(f"Kite did not answer within {answer.timeout or 7:.0f}s while {doing}")
        if isinstance(exc, requests.ConnectionError):
            return SourceUnavailable(f"cannot connect to Kite (network down?) while {doing}")
        return SourceUnavailable(f"HTTP error talking to Kite ({type(exc).__name__}) while {doing}")
    if isinstance(exc, KeyError):
        if answer.status is not None and answer.content_type is None:  # kiteconnect crashes on it
            return SourceUnavailable(f"Kite answered without a Content-Type while {doing}")
        return SourceError(f"Kite sent a malformed answer while {doing} (no {exc} in it)")
    if isinstance(exc, (AttributeError, TypeError, ValueError, IndexError)) and answer.status is not None:
        return SourceError(f"Kite sent a malformed answer while {doing}")  # the client choked on its shape
    return None


def _data_error(exc: BaseException, doing: str, msg: str, answer: Answer) -> MdeError:
    from kiteconnect import exceptions as kex

    code = getattr(exc, "code", None)
    if isinstance(exc, kex.TokenException):
        return AuthError(
            f"Kite rejected the access token while {doing} (tokens expire daily at ~06:00 IST): run `mde login`"
        )
    if isinstance(exc, kex.PermissionException):
        return AuthError(f"Kite refused {doing}: {msg} (does this API key have the historical-data add-on?)")
    if isinstance(exc, kex.InputException):
        return InputError(f"Kite rejected {doing}: {msg}")
    if isinstance(exc, kex.NetworkException):
        if code == 429:
            return RateLimited(f"Kite: too many requests while {doing}")
        return SourceUnavailable(f"Kite network error ({code or '?'}) while {doing}")
    if isinstance(exc, kex.DataException):
        if "json" in (answer.content_type or ""):  # Kite's own error_type: its backend answered badly
            return SourceUnavailable(f"Kite reported a data error ({msg}, HTTP {code}) while {doing}")
        # the client says 502 for any answer it cannot read; the status we saw is the real one
        seen = answer.status or code or 502
        if seen == 200:
            return SourceUnavailable(f"Kite answered HTTP 200 with something that is not JSON while {doing}")
        return SourceUnavailable(
            f"Kite answered with something that is not JSON (HTTP {seen}, likely an error page) while {doing}"
        )
    if isinstance(exc, kex.GeneralException):
        code = code or 500
        if code >= 500:
            return SourceUnavailable(f"Kite server error {code} while {doing}")
        if code == 403:
            return AuthError(f"Kite refused {doing} (HTTP 403): run `mde login`")
        return SourceError(f"Kite error {code} while {doing}: {msg}")
    return SourceError(f"Kite error while {doing}: {msg}")  # OrderException, UserException, ...


def _login_error(exc: BaseException, msg: str) -> MdeError:
    from kiteconnect import exceptions as kex

    if isinstance(exc, kex.TokenException):
        low = msg.lower()
        if "checksum" in low:
            return AuthError(f"Kite refused the login ({msg}): KITE_API_SECRET does not match KITE_API_KEY")
        if "api_key" in low:
            return AuthError(f"Kite refused the login ({msg}): check KITE_API_KEY")
        return AuthError(
            f"Kite refused the request token ({msg}): it is single-use and lasts a few minutes; run `mde login` again"
        )
    if isinstance(exc, kex.PermissionException):
        return AuthError(f"Kite refused the login ({msg}); check the app's permissions on developers.kite.trade")
    if isinstance(exc, kex.InputException):
        return AuthError(f"Kite rejected the login request ({msg}); run `mde login` again")
    if isinstance(exc, kex.NetworkException) and getattr(exc, "code", None) == 429:
        return RateLimited(f"Kite says too many requests ({msg}); wait a minute and run `mde login` again")
    return SourceUnavailable(f"Kite could not complete the login ({type(exc).__name__}: {msg}); try again shortly")
