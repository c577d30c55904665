"""`mde`'s public names: `__all__`, the lazy import table and the TYPE_CHECKING imports say the
same thing (like httpx's test_exported_members), and every name is the one object it names."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import mde

INIT = Path(mde.__file__)


def _type_checking_imports() -> dict[str, tuple[str, str]]:
    """name -> (module, attribute) of the imports under `if TYPE_CHECKING:` in mde/__init__.py."""
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    found: dict[str, tuple[str, str]] = {}
    blocks = [
        n for n in tree.body if isinstance(n, ast.If) and isinstance(n.test, ast.Name) and n.test.id == "TYPE_CHECKING"
    ]
    assert blocks, "mde/__init__.py has no `if TYPE_CHECKING:` block"
    for block in blocks:
        for node in block.body:
            assert isinstance(node, ast.ImportFrom), f"line {node.lineno}: only `from X import Y` belongs here"
            module = node.module or ""
            if node.level:  # from .engine import X
                module = "mde" + ("." + module if module else "")
            for alias in node.names:
                found[alias.asname or alias.name] = (module, alias.name)
    return found


def test_all_is_sorted_and_equals_the_lazy_table() -> None:
    assert mde.__all__ == sorted(mde.__all__)
    assert len(set(mde.__all__)) == len(mde.__all__)
    assert set(mde.__all__) == set(mde._WHERE)


def test_the_type_checking_imports_match_the_lazy_table() -> None:
    # what mypy and editors see is what `mde.X` returns at run time
    assert _type_checking_imports() == mde._WHERE


def test_every_public_name_resolves_to_the_object_it_names() -> None:
    for name in mde.__all__:
        module, attr = mde._WHERE[name]
        member = getattr(mde, name)
        assert member is getattr(importlib.import_module(module), attr), name
        assert name in dir(mde)
        if inspect.isclass(member) or inspect.isfunction(member):
            # the table names the module that defines it, not a re-export of a re-export
            assert member.__module__ == module, f"mde.{name} is defined in {member.__module__}, the table says {module}"


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        mde.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("mde.NoSuchThing resolved")


def test_one_candle_type_for_the_engine_and_the_strategies() -> None:
    import mde.engine
    import mde.strategy
    import mde.strategy.api

    assert mde.Candle is mde.engine.Candle is mde.strategy.Candle is mde.strategy.api.Candle


def test_the_strategy_author_names_are_those_of_mde_strategy() -> None:
    import mde.strategy

    for name in (
        "Strategy",
        "Context",
        "Candle",
        "Indicator",
        "PerSymbolIndicator",
        "Order",
        "Note",
        "StrategyRunner",
        "SeriesData",
        "load_strategy",
    ):
        assert getattr(mde, name) is getattr(mde.strategy, name), name


def test_importing_mde_imports_none_of_its_public_modules() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import mde, sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    lazy = {module for module, _ in mde._WHERE.values()}
    assert not lazy & set(out), sorted(lazy & set(out))
    assert "polars" not in out


def test_the_package_ships_py_typed() -> None:
    # PEP 561: without it, mypy in a user's project treats every mde import as Any
    assert (INIT.parent / "py.typed").is_file()
