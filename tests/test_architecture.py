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
    if module_name(path) == "mde.sources.kite" or module_name(path).startswith("mde.sources.kite."):
        return
    assert not _hits(imports_of(path), KITE_ONLY), f"{module_name(path)} imports kiteconnect/requests"


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
        capture_output=True, text=True, check=True,
    ).stdout
    return set(out.split())


def test_the_cli_starts_without_polars_or_kiteconnect() -> None:
    loaded = _modules_after("import mde.cli")
    assert "polars" not in loaded and "kiteconnect" not in loaded and "rich.table" not in loaded
    assert "fastapi" not in loaded and "uvicorn" not in loaded  # only `mde serve` imports them


def test_reading_the_cache_never_imports_kiteconnect() -> None:
    loaded = _modules_after("import mde.engine, mde.sources.sample")
    assert "kiteconnect" not in loaded and "twisted" not in loaded
