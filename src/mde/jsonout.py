"""The one JSON writer for everything mde prints or serves: valid JSON, always.

Python's `json.dumps` writes a non-finite float as `NaN`, `Infinity` or `-Infinity`, which
is not JSON: `JSON.parse`, jq and most parsers refuse the whole document. A source can still
send such a price, so every JSON mde writes for a user (`mde window -f json`, the HTTP API,
`mde ls`/`replay`/`paper --json`, ...) goes through `dumps` or `frame_rows` here, and a
non-finite float becomes `null`, as the API always wrote it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl


def finite(obj: Any) -> Any:
    """`obj` with every non-finite float (NaN, inf, -inf) inside dicts, lists and tuples as None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps(
    obj: Any,
    *,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    default: Callable[[Any], Any] | None = None,
    sort_keys: bool = False,
) -> str:
    """`json.dumps` that never writes NaN or Infinity: non-finite floats are `null`.

    `allow_nan=False` makes a non-finite float that slipped past `finite` (one returned by
    `default`) an error here rather than invalid JSON in a user's hands.
    """
    kwargs: dict[str, Any] = {"indent": indent, "separators": separators, "default": default, "sort_keys": sort_keys}
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)  # the common case: nothing to replace
    except ValueError:
        return json.dumps(finite(obj), allow_nan=False, **kwargs)


def frame_rows(frame: pl.DataFrame) -> str:
    """A frame's rows as a compact JSON array of objects, one per row, columns in order.

    polars writes NaN, inf and -inf as `null` (tests/test_trust_window.py pins it for the
    polars in uv.lock), dates and datetimes as ISO 8601 with the zone's offset.
    """
    return frame.write_json() if frame.height else "[]"
