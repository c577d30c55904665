"""Finding and making strategies: a name or `file.py:Class` to a class, `--param` text to values,
and a strategy's own exception to the one-line StrategyError the CLI prints.

Imports `api` only (never the runner): `mde strategies` describes a strategy without loading
the hot loop, and the runner imports this module for `strategy_error`.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError, MdeError, StrategyError
from .api import Strategy

__all__ = ["BUILTIN_STRATEGIES", "build", "describe", "load_strategy", "parse_params", "strategy_error"]

log = logging.getLogger("mde.strategy")

BUILTIN_STRATEGIES = {
    "sma_cross": "mde.strategy.builtins:SmaCross",
    "orb": "mde.strategy.builtins:OpeningRangeBreakout",
}


def parse_params(pairs: Sequence[str]) -> dict[str, list[str]]:
    """`["fast=5,10", "slow=30"]` -> {"fast": ["5", "10"], "slow": ["30"]} (lists make a sweep)."""
    out: dict[str, list[str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--param {pair!r} is not NAME=VALUE (or NAME=V1,V2 for a sweep)")
        values = [v.strip() for v in value.split(",")]
        if any(v == "" for v in values):
            raise InputError(f"--param {pair!r} has an empty value")
        out[key] = values
    return out


def strategy_error(exc: BaseException, cls: type[Strategy], when: str) -> StrategyError:
    """`strategy NAME raised TYPE: message at file.py:LINE <when> (run with -v for the traceback)`:
    the line is the innermost one of the strategy's source files (its class and its bases) in
    the traceback. The full traceback is logged at debug level (-v) and kept as `.traceback`."""
    frames = list(traceback.walk_tb(exc.__traceback__))
    files = {
        getattr(sys.modules.get(k.__module__), "__file__", None) for k in cls.__mro__ if k not in (Strategy, object)
    }
    at = next(((f.f_code.co_filename, line) for f, line in reversed(frames) if f.f_code.co_filename in files), None)
    if at is None:  # not in the strategy's files (a helper it called): the outermost frame outside mde.strategy
        outside = [(f.f_code.co_filename, line) for f, line in frames if not _in_this_package(f.f_code.co_filename)]
        at = outside[0] if outside else ("?", 0)
    rel = os.path.relpath(at[0]) if os.path.isabs(at[0]) else at[0]
    path = rel if not rel.startswith("..") else at[0]
    text = str(exc).strip().splitlines()
    what = f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__
    err = StrategyError(
        f"strategy {cls.label()} raised {what} at {path}:{at[1]} {when} (run with -v for the traceback)"
    )
    err.traceback = "".join(traceback.format_exception(exc))
    log.debug("the strategy's traceback:\n%s", err.traceback.rstrip())
    return err


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _in_this_package(filename: str) -> bool:
    """A frame of mde.strategy's own code (api, runner, loading): not where a strategy raised."""
    return filename != os.path.join(_PACKAGE_DIR, "builtins.py") and os.path.dirname(filename) == _PACKAGE_DIR


def build(cls: type[Strategy], params: dict[str, Any]) -> Strategy:
    """`cls(**params)`, with an exception of the strategy's own code (its validate(), its
    __init__) turned into a one-line StrategyError."""
    try:
        return cls(**params)
    except MdeError:
        raise
    except Exception as exc:
        raise strategy_error(exc, cls, "when created") from exc


def load_strategy(spec: str) -> type[Strategy]:
    """A built-in name (`sma_cross`, `orb`), `path/to/file.py:ClassName` or `package.module:ClassName`."""
    target = BUILTIN_STRATEGIES.get(spec, spec)
    module_name, sep, class_name = target.rpartition(":")
    if not sep or not module_name or not class_name:
        raise InputError(f"unknown strategy {spec!r}; use {', '.join(BUILTIN_STRATEGIES)} or path/to/file.py:ClassName")
    try:
        if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
            path = Path(module_name).expanduser()
            if not path.is_file():
                raise InputError(f"strategy file {path} does not exist")
            mod_id = f"mde_user_strategy_{abs(hash(str(path.resolve())))}"
            loader_spec = importlib.util.spec_from_file_location(mod_id, path)
            assert loader_spec is not None and loader_spec.loader is not None
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[mod_id] = module  # dataclasses and pickling (sweeps) need it registered
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except MdeError:
        raise
    except Exception as exc:  # the user's file failed to import: say where, keep the cause
        raise InputError(f"cannot load strategy {spec!r}: {type(exc).__name__}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise InputError(f"{module_name} has no Strategy subclass named {class_name!r}")
    return cls


def describe(spec: str) -> dict[str, Any]:
    """Name, one-line summary and parameters (type, default) of a strategy, for `mde strategies`."""
    cls = load_strategy(spec)
    doc = (cls.__doc__ or "").strip().splitlines()
    return {
        "strategy": spec,
        "summary": doc[0] if doc else "",
        "intraday": cls.intraday,
        "params": {k: {"type": t.__name__, "default": d} for k, (t, d) in cls.parameters().items()},
    }
