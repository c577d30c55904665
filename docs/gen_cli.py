"""Write docs/cli.md, the CLI reference, from the typer app itself (so it cannot drift).

    python3 -m uv run --frozen python docs/gen_cli.py

`tests/test_docs.py` renders it again in memory and fails when the committed file differs.
Nothing here is imported by `mde` itself: the CLI's start-up stays as fast as before.
"""

from __future__ import annotations

import inspect
import re
import sys
from enum import Enum
from pathlib import Path
from typing import Any

import typer

OUT = Path(__file__).resolve().parent / "cli.md"
REGENERATE = "python3 -m uv run --frozen python docs/gen_cli.py"


def _text(help_text: str | None) -> str:
    """Help text as plain Markdown: typer's rich escapes (`\\[refresh]`) undone, one paragraph per blank line."""
    return inspect.cleandoc(help_text or "").replace("\\[", "[").strip()


def _help(help_text: str | None) -> str:
    """A command's help: `Example:  mde ...` paragraphs become code blocks."""
    return re.sub(r"(?m)^Example:\s+(.*)$", lambda m: f"Example:\n\n```\n{m.group(1)}\n```", _text(help_text))


def _is_argument(param: Any) -> bool:
    return param.param_type_name == "argument"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|") or " "


def _type(param: Any) -> str:
    kind = param.type
    if hasattr(kind, "choices"):
        return " \\| ".join(str(getattr(c, "value", c)) for c in kind.choices)
    if getattr(param, "is_flag", False) and not getattr(param, "count", False):
        return "flag"
    name = {"str": "TEXT", "text": "TEXT", "int": "INTEGER", "integer": "INTEGER", "float": "FLOAT",
            "bool": "BOOLEAN", "boolean": "BOOLEAN", "path": "PATH", "file": "FILE"}.get(getattr(kind, "name", "") or "", (getattr(kind, "name", "") or "VALUE").upper())
    if getattr(param, "multiple", False) or param.nargs == -1:
        name += " ..."
    return name


def _default(param: Any) -> str:
    if getattr(param, "show_default", None) is False:
        return "-"
    value: Any = param.default
    if getattr(param, "is_flag", False) and not value:
        return "-"
    if value is None or callable(value) or value == () or value == []:
        return "-"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, (list, tuple)):
        return ", ".join(f"`{getattr(v, 'value', v)}`" for v in value)
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    return f"`{value}`"


def _names(param: Any) -> str:
    if _is_argument(param):
        return f"`{param.human_readable_name}`" + (" (required)" if param.required else "")
    names = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
    return names + (" (required)" if param.required else "")


def _params(params: list[Any]) -> list[str]:
    shown = [p for p in params if not getattr(p, "hidden", False) and (p.opts or _is_argument(p))]
    if not shown:
        return []
    lines = ["| argument / option | type | default | help |", "|---|---|---|---|"]
    for p in shown:
        lines.append(f"| {_names(p)} | {_type(p)} | {_default(p)} | {_cell(_text(getattr(p, 'help', None)))} |")
    return lines


def render() -> str:
    from mde.cli import app

    root = typer.main.get_command(app)
    root_ctx = root.context_class(root, info_name="mde")
    out = [
        "# CLI reference",
        "",
        f"<!-- Generated from the typer app by docs/gen_cli.py; do not edit. Regenerate: {REGENERATE} -->",
        "",
        "Every command prints errors as one line, `error: ...`, and exits with a documented code",
        "([exit codes](exit-codes.md)). `mde COMMAND --help` prints the same text on the terminal.",
        "",
        "## mde",
        "",
        "```",
        root.get_usage(root_ctx),
        "```",
        "",
        _text(root.help),
        "",
        "Global options (before the command; `-v` and `-q` also after it):",
        "",
        *_params(root.params),
        "",
        "Commands: " + ", ".join(f"[`{n}`](#mde-{n})" for n, c in root.commands.items() if not c.hidden) + ".",
        "",
    ]
    for name, cmd in root.commands.items():
        if cmd.hidden:
            continue
        ctx = cmd.context_class(cmd, info_name=name, parent=root_ctx)
        out += [f"## mde {name}", "", "```", cmd.get_usage(ctx), "```", ""]
        if cmd.help:
            out += [_help(cmd.help), ""]
        table = _params(cmd.params)
        if table:
            out += [*table, ""]
    return "\n".join(line.rstrip() for line in "\n".join(out).split("\n")).rstrip("\n") + "\n"


def main() -> int:
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
