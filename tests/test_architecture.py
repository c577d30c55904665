"""Dependencies point inward: the core never imports the CLI, rendering or web layers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import mde

PKG = Path(mde.__file__).resolve().parent
OUTER = {"mde.cli", "mde.render", "mde.api", "mde.__main__"}
FORBIDDEN_IN_CORE = {"typer", "rich", "click", "fastapi", "uvicorn", "starlette", "mde.cli", "mde.render", "mde.api"}
KITE_ONLY = {"kiteconnect", "requests"}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str | None = None) -> set[str]:
    """Absolute names of every module imported anywhere in the file (lazy imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = (name or module_name(path)).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                if not node.module:
                    found.update(f"{mod}.{alias.name}" for alias in node.names)
                else:
                    found.add(mod)
            else:
                found.add(node.module or "")
    return found


def _hits(imported: set[str], banned: set[str]) -> set[str]:
    return {i for i in imported for b in banned if i == b or i.startswith(b + ".")}


CORE_FILES = [p for p in sorted(PKG.rglob("*.py")) if module_name(p) not in OUTER]


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: module_name(p))
def test_core_module_does_not_import_outer_layers(path: Path) -> None:
    assert not _hits(imports_of(path), FORBIDDEN_IN_CORE), f"{module_name(path)} imports an outer layer"


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: module_name(p))
def test_only_the_kite_source_imports_kiteconnect(path: Path) -> None:
    # mde.stream drives kiteconnect's KiteTicker (the WebSocket transport); the REST client is mde.sources.kite
    name = module_name(path)
    if name in ("mde.sources.kite", "mde.stream") or name.startswith("mde.sources.kite."):
        return
    assert not _hits(imports_of(path), KITE_ONLY), f"{module_name(path)} imports kiteconnect/requests"


# The ground floor, which every other module may build on: each imports nothing of mde but
# what is listed (lazy imports included), so time and the candle schema never drag in the
# calendar, the store or a source.
GROUND = {"mde.errors": set(), "mde.clock": set(), "mde.candles": {"mde.errors", "mde.clock"}}


def mde_imports(path: Path, name: str | None = None) -> set[str]:
    return {i for i in imports_of(path, name) if i == "mde" or i.startswith("mde.")}


@pytest.mark.parametrize("name", sorted(GROUND))
def test_ground_modules_import_nothing_of_mde_above_them(name: str) -> None:
    path = PKG / f"{name.removeprefix('mde.')}.py"
    assert path.is_file(), path
    extra = mde_imports(path) - GROUND[name]
    assert not extra, f"{name} imports {sorted(extra)}; it may import only {sorted(GROUND[name]) or 'nothing of mde'}"


def test_the_ground_checker_catches_a_lazy_import_from_above(tmp_path: Path) -> None:
    clock = tmp_path / "clock.py"
    clock.write_text(
        "from datetime import datetime\n\ndef now():\n    from .calendar import nse\n    from . import errors\n"
    )
    assert mde_imports(clock, "mde.clock") == {"mde.calendar", "mde.errors"}
    candles = tmp_path / "candles.py"
    candles.write_text("import polars as pl\nfrom .errors import InputError\nimport mde.store\n")
    assert mde_imports(candles, "mde.candles") - GROUND["mde.candles"] == {"mde.store"}


def test_the_checker_catches_lazy_and_relative_imports(tmp_path: Path) -> None:
    # The guard must fail on a real violation, or it proves nothing.
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from ..render import window_table\n    import rich.table\n    from . import cli\n")
    found = imports_of(bad, "mde.sources.bad")
    assert _hits(found, FORBIDDEN_IN_CORE) == {"mde.render", "rich.table"}
    found = imports_of(bad, "mde.bad")
    assert "mde.cli" in _hits(found, FORBIDDEN_IN_CORE)


def test_public_names_are_sorted_and_importable() -> None:
    assert mde.__all__ == sorted(mde.__all__)
    for name in mde.__all__:
        assert getattr(mde, name) is not None


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def test_the_cli_starts_without_polars_or_kiteconnect() -> None:
    loaded = _modules_after("import mde.cli")
    assert "polars" not in loaded and "kiteconnect" not in loaded and "rich.table" not in loaded
    assert "fastapi" not in loaded and "uvicorn" not in loaded  # only `mde serve` imports them


def test_reading_the_cache_never_imports_kiteconnect() -> None:
    loaded = _modules_after("import mde.engine, mde.sources.sample")
    assert "kiteconnect" not in loaded and "twisted" not in loaded


# -- the strategy package: api <- loading <- runner, no circle ---------------------------------
STRATEGY = PKG / "strategy"


def runtime_imports_of(path: Path, scratch: Path) -> set[str]:
    """imports_of without the `if TYPE_CHECKING:` blocks (annotations only, never executed)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = [ast.Pass()]
    stripped = scratch / path.name
    stripped.write_text(ast.unparse(tree), encoding="utf-8")
    return imports_of(stripped, module_name(path))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` (module -> modules it imports), or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _strategy_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in STRATEGY.glob("*.py") if p.name != "__init__.py"}
    return {name: {i for i in imports_of(path) if i in modules} for name, path in modules.items()}


def test_the_strategy_api_imports_neither_the_runner_nor_the_loader() -> None:
    # what an author reads stands alone: Context asks the runner through the ContextHost protocol
    found = imports_of(STRATEGY / "api.py")
    assert not _hits(found, {"mde.strategy.runner", "mde.strategy.loading", "mde.strategy.builtins", "mde.strategy"})
    assert not _hits(imports_of(STRATEGY / "loading.py"), {"mde.strategy.runner"})


def test_the_strategy_package_has_no_import_circle() -> None:
    graph = _strategy_graph()
    assert set(graph) == {"mde.strategy.api", "mde.strategy.loading", "mde.strategy.runner", "mde.strategy.builtins"}
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph) or [])}"


def test_the_cycle_finder_finds_a_circle() -> None:
    # the guard must fail on a real circle, or it proves nothing
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_seams_and_the_candle_import_nothing_of_mde_above_them(tmp_path: Path) -> None:
    # protocols.py: typing only at run time; candles.py (the one Candle) below engine and strategy
    assert "mde.engine" in imports_of(PKG / "protocols.py")  # under TYPE_CHECKING: the stripping is what passes
    assert not {i for i in runtime_imports_of(PKG / "protocols.py", tmp_path) if i.startswith("mde")}
    assert {i for i in imports_of(PKG / "candles.py") if i.startswith("mde")} <= {"mde.clock", "mde.errors"}
    assert not _hits(imports_of(PKG / "engine.py"), {"mde.strategy"})


# -- the CLI is a client of the library's public names ----------------------------------------
# "Public" is what a Python user may import: a module-level name without a leading underscore,
# in a module whose path has none (mde.__all__ is the curated subset of those; a check against
# it alone would fail every time a new command's library call is not yet exported there).
THIN_CLIENTS = ("mde.cli", "mde.render")


def private_uses(path: Path, name: str | None = None) -> set[str]:
    """Private names of mde the file reaches: `from mde.x import _y`, `from mde._x import y`,
    and `thing._attr` on anything (dunders aside): a private attribute of an engine or a
    module is a rule the library keeps to itself."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = (name or module_name(path)).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    found: set[str] = set()

    def private(part: str) -> bool:
        return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = (
                ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
                if node.level
                else (node.module or "")
            )
            if module.split(".")[0] != "mde":
                continue
            found.update(
                f"{module}.{alias.name}"
                for alias in node.names
                if private(alias.name) or any(private(p) for p in module.split("."))
            )
        elif isinstance(node, ast.Import):
            found.update(
                a.name
                for a in node.names
                if a.name.split(".")[0] == "mde" and any(private(p) for p in a.name.split("."))
            )
        elif isinstance(node, ast.Attribute) and private(node.attr):
            found.add(f"{ast.unparse(node.value)}.{node.attr}")
    return found


@pytest.mark.parametrize("client", THIN_CLIENTS)
def test_the_cli_and_its_renderer_use_only_the_librarys_public_names(client: str) -> None:
    path = PKG.joinpath(*client.split(".")[1:]).with_suffix(".py")
    assert private_uses(path, client) == set(), f"{client} reaches into private names of mde"


def test_the_private_name_checker_catches_each_kind(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from .engine import MarketDataEngine, _as_instant\nfrom ._internal import thing\nimport mde._x\n"
        "from typer import _private_of_typer\n"
        "def f(eng):\n    eng._source.stats\n    return eng.__class__, eng.store\n"
    )
    assert private_uses(bad, "mde.cli") == {"mde.engine._as_instant", "mde._internal.thing", "mde._x", "eng._source"}
