"""The reference pages in docs/ say what the code does: each test fails when they drift apart."""

from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SRC = ROOT / "src" / "mde"


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("mde_docs_gen_cli", DOCS / "gen_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def test_the_cli_reference_is_up_to_date(gen):
    assert _read("cli.md") == gen.render(), f"docs/cli.md is out of date: run `{gen.REGENERATE}` and commit it"


def test_the_cli_reference_names_every_command_and_option(gen):
    """Not only equal to the generator's output: the generator itself leaves nothing out."""
    import typer

    from mde.cli import app

    text = _read("cli.md")
    root = typer.main.get_command(app)
    for name, cmd in root.commands.items():
        section = text.split(f"\n## mde {name}\n", 1)[1].split("\n## ", 1)[0]
        for param in cmd.params:
            for opt in param.opts if param.param_type_name == "option" else [param.human_readable_name]:
                assert f"`{opt}`" in section, f"mde {name}: {opt} missing from docs/cli.md"


def test_the_ctx_table_is_up_to_date(gen):
    text = _read("strategy-api.md")
    assert text == gen.render_strategy_api(text), (
        f"the ctx table of docs/strategy-api.md is out of date: run `{gen.REGENERATE}`"
    )


def test_every_public_context_member_is_documented():
    from mde.strategy import Context

    text = _read("strategy-api.md")
    public = {n for n in dir(Context) if not n.startswith("_")} | {
        n for n in Context.__slots__ if not n.startswith("_")
    }
    assert public, "Context has no public members?"
    documented = set(re.findall(r"^\| `ctx\.(\w+)", text, flags=re.M))
    assert documented == public, (
        f"missing: {sorted(public - documented)}; no longer exist: {sorted(documented - public)}"
    )
    for name in public:
        member = inspect.getattr_static(Context, name)
        doc = inspect.getdoc(member) if isinstance(member, property) or callable(member) else None
        row = next(line for line in text.splitlines() if re.match(rf"\| `ctx\.{name}\b(?!_)", line))
        assert row.split(" | ", 1)[1].strip(" |"), f"ctx.{name} has no description in docs/strategy-api.md"
        if doc:
            first_words = " ".join(doc.split()[:4])
            assert first_words in row, (
                f"ctx.{name}: its docstring ({first_words} ...) is not what docs/strategy-api.md says"
            )


def _exit_table() -> dict[int, str]:
    """exit code -> the 'error' cell of docs/exit-codes.md's table."""
    rows = {}
    for line in _read("exit-codes.md").splitlines():
        m = re.match(r"^\|\s*(\d+)\s*\|([^|]*)\|", line)
        if m:
            assert int(m.group(1)) not in rows, f"exit code {m.group(1)} has two rows"
            rows[int(m.group(1))] = m.group(2)
    return rows


def _error_classes() -> list[type]:
    # Every module that defines an MdeError subclass (grep `class X(...Error)` finds them), imported
    # so that __subclasses__ sees them all.
    import mde.cli  # noqa: F401
    import mde.errors
    import mde.paper.state  # noqa: F401
    import mde.validate  # noqa: F401

    out, todo = [], [mde.errors.MdeError]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return [c for c in out if c.__module__.startswith("mde")]


def test_the_exit_code_table_equals_the_codes_mde_uses():
    from mde import cli

    table = _exit_table()
    classes = _error_classes()
    expected = {0, cli.INTERNAL_ERROR, 130} | {cls.exit_code for cls in classes}
    assert cli.INTERNAL_ERROR == 70
    assert re.search(r"_fail\([^)]*,\s*130\)", inspect.getsource(cli)), "Ctrl-C no longer exits 130?"
    assert set(table) == expected
    named = {code: set(re.findall(r"`(\w+)`", cell)) for code, cell in table.items()}
    for cls in classes:
        assert cls.__name__ in named[cls.exit_code], (
            f"{cls.__name__} (exit {cls.exit_code}) is not in the row of {cls.exit_code}"
        )
    every = {cls.__name__ for cls in classes}
    for code, names in named.items():
        assert names <= every, f"the row of exit {code} names {sorted(names - every)}, which mde does not define"
    assert "internal error" in table[70]


def test_the_error_tree_in_the_docs_matches_the_classes():
    classes = _error_classes()
    text = _read("exit-codes.md")
    tree = dict(re.findall(r"^[│├└─ ]*(\w+)\s+exit (\d+)", text, flags=re.M))
    assert {name: int(code) for name, code in tree.items()} == {c.__name__: c.exit_code for c in classes}


def _env_names() -> set[str]:
    """Every MDE_*/KITE_* environment variable the code reads: a string literal that is exactly the name."""
    names = set()
    for path in SRC.rglob("*.py"):
        names |= set(re.findall(r"""["']((?:MDE|KITE)_[A-Z0-9_]+)["']""", path.read_text(encoding="utf-8")))
    return names


def test_the_configuration_page_names_every_key_and_variable():
    from mde.config import FREE_SECTIONS, SCHEMA

    text = _read("configuration.md")
    toml = text.split("```toml", 1)[1].split("```", 1)[0]
    for section, keys in SCHEMA.items():
        assert re.search(rf"^\[{section}\]", toml, flags=re.M), f"[{section}] is not in docs/configuration.md"
        body = re.split(rf"^\[{section}\][^\n]*\n", toml, flags=re.M)[1]
        body = re.split(r"^\[(?!" + section + r"\.)", body, flags=re.M)[0]
        for key in keys:
            assert re.search(rf"^(\[{section}\.)?{key}\b", body, flags=re.M), (
                f"[{section}] {key} is not in docs/configuration.md"
            )
    for section in FREE_SECTIONS:
        assert f"[{section}]" in toml
    names = _env_names()
    assert {"MDE_CONFIG", "MDE_CACHE_DIR", "KITE_API_KEY"} <= names, "the scan of src/mde finds no variables?"
    table = re.findall(r"`((?:MDE|KITE)_[A-Z0-9_]+)`", text)
    missing = names - set(table)
    assert not missing, f"environment variables read by mde but not in docs/configuration.md: {sorted(missing)}"
    stale = set(table) - names
    assert not stale, f"docs/configuration.md names variables mde no longer reads: {sorted(stale)}"


def test_the_docs_pages_link_to_each_other_and_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    assert pages == ["cache-format.md", "cli.md", "configuration.md", "exit-codes.md", "http-api.md", "strategy-api.md"]
    for page in pages:
        assert f"(docs/{page})" in readme, f"README's Reference list lacks docs/{page}"
    for page in pages:
        for target in re.findall(r"\]\((\.\./[^)#]+|[\w-]+\.md)(?:#[^)]*)?\)", _read(page)):
            assert (DOCS / target).resolve().exists(), f"docs/{page} links to {target}, which does not exist"


def test_the_changelog_has_unreleased_first_and_the_current_version():
    import tomllib

    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    versions = re.findall(r"^## \[([^\]]+)\]", text, flags=re.M)
    assert versions and versions[0] == "Unreleased", "CHANGELOG.md must start with ## [Unreleased]"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert version in versions, f"pyproject's version {version} has no ## [{version}] section in CHANGELOG.md"
    for heading in re.findall(r"^### (.+)$", text, flags=re.M):
        assert heading in {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}, heading
    assert "(CHANGELOG.md)" in (ROOT / "README.md").read_text(encoding="utf-8")


def _section(text: str, heading: str) -> str | None:
    if f"\n{heading}\n" not in text:
        return None
    body = text.split(f"\n{heading}\n", 1)[1]
    return re.split(r"^## ", body, flags=re.M)[0]


@pytest.mark.parametrize(("heading", "page"), [("## Errors and exit codes", "exit-codes.md")])
def test_the_readme_copies_say_what_the_docs_say(heading, page):
    """The README keeps one reference table of its own (exit codes): it and docs/ must not disagree.
    Configuration lives in docs/configuration.md only."""
    section = _section((ROOT / "README.md").read_text(encoding="utf-8"), heading)
    assert section is not None, f"README.md lost {heading!r}; drop it from this list if docs/{page} is the only copy"
    rows = lambda text: [line for line in text.splitlines() if line.startswith("| ")]  # noqa: E731
    blocks = lambda text: re.findall(r"```toml\n.*?```", text, flags=re.S)  # noqa: E731
    doc = _read(page)
    assert rows(section) == rows(doc), f"README.md {heading!r} and docs/{page} list different rows: edit both"
    assert blocks(section) == blocks(doc)


def test_the_http_api_page_names_every_route(tmp_path):
    from mde.api import create_app
    from mde.config import load

    settings = load(environ={"MDE_CACHE_DIR": str(tmp_path / "cache"), "MDE_SOURCE": "sample"})
    app = create_app(settings)
    text = _read("http-api.md")
    routes = [r for r in app.routes if getattr(r, "include_in_schema", False) and "GET" in getattr(r, "methods", ())]
    assert len(routes) >= 5, "create_app has no GET routes?"
    for route in routes:
        assert re.search(rf"`GET {re.escape(route.path)}[`?\[]", text), f"GET {route.path} is not in docs/http-api.md"


def test_the_cache_page_names_every_timeframes_partition():
    from datetime import datetime

    from mde.clock import IST
    from mde.store import partition_key
    from mde.timeframes import TIMEFRAMES

    layout = _read("cache-format.md").split("```", 2)[1]
    for name, tf in TIMEFRAMES.items():
        file = partition_key(datetime(2024, 5, 14, 9, 15, tzinfo=IST), tf) + ".parquet"
        line = next((line for line in layout.splitlines() if line.strip().startswith(file)), None)
        assert line is not None, f"{file} ({name}) is not in the layout of docs/cache-format.md"
        assert re.search(rf"(?<![\w]){re.escape(name)}\b", line), (
            f"docs/cache-format.md does not say {name} is kept in {file}"
        )
