"""Writes the settings table of docs/settings.md from `service.settings.Settings`, so it cannot drift.

    .venv/bin/python docs/generate_settings.py           # rewrite docs/settings.md
    .venv/bin/python docs/generate_settings.py --check   # exit 1 when docs/settings.md is out of date

Everything above the marker line is hand-written prose and is kept as it is; everything below it is
generated: one table row per field of `Settings.model_fields`, in the class's order. Secrets (fields
with `repr=False`) never show a value: `(generated)` when the service generates one in development
(it has an `ensure_<field>` method), else `(none)`.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

from annotated_types import Ge, Gt, Le, Lt
from pydantic import AliasChoices, AliasPath
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "settings.md"
MARKER = (
    "<!-- Generated below this line by docs/generate_settings.py from service/settings.py: "
    "edit the class, then run the script. Prose goes above it. -->"
)
DEFAULT_PROSE = "# Settings\n"


def settings_class() -> type[Any]:
    """`service.settings.Settings`, importable whether or not the project is installed."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from service.settings import Settings

    return Settings


def _code(text: str) -> str:
    return f"`{text}`"


def _cell(text: str) -> str:
    """One table cell: a single line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def variable_names(name: str, field: FieldInfo, prefix: str) -> list[str]:
    """The environment variables a field is read from, the main one first."""
    alias = field.validation_alias
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasChoices):
        names = [choice for choice in alias.choices if isinstance(choice, str)]
        names += [str(choice.path[0]) for choice in alias.choices if isinstance(choice, AliasPath)]
        if names:
            return names
    if isinstance(alias, AliasPath):
        return [str(alias.path[0])]
    return [f"{prefix}{(field.alias or name).upper()}"]


def _value(value: Any) -> str:
    """A default as someone would write it in the environment."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return _code(str(value).lower())
    if isinstance(value, Enum):
        return _code(str(value.value))
    if isinstance(value, Path):
        path = value
        if path.is_relative_to(REPO):
            path = path.relative_to(REPO)
        return _code(path.as_posix())
    if isinstance(value, str):
        return _code(value) if value else '`""` (empty)'
    if isinstance(value, list | tuple | dict | set):
        return _code(repr(value)) if value else _code("[]" if not isinstance(value, dict) else "{}")
    return _code(str(value))


def default_text(settings: type[Any], name: str, field: FieldInfo) -> str:
    """The default column: the value, `(none)`/`(generated)` for secrets, `computed` for factories."""
    if field.repr is False:
        return "(generated)" if callable(getattr(settings, f"ensure_{name}", None)) else "(none)"
    if field.default_factory is not None:
        if field.default_factory_takes_validated_data:
            return "computed"
        produced = field.default_factory()  # type: ignore[call-arg]
        if type(produced) in (list, dict) and not produced:
            return _code(repr(produced))
        return "computed"
    if field.default is PydanticUndefined:
        return "(required)"
    return _value(field.default)


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(_code(str(arg)) for arg in args)
    if origin in (typing.Union, types.UnionType):
        inner = " or ".join(_type_name(arg) for arg in args)
        return f"{inner}, optional" if type(None) in typing.get_args(annotation) else inner
    if origin in (list, set, tuple):
        inner = _type_name(args[0]) if args else "text"
        return "comma-separated " + (
            "integers" if inner == "integer" else "numbers" if inner == "number" else inner
        )
    if isinstance(annotation, type):
        return {"Path": "path", "str": "text", "int": "integer", "float": "number", "bool": "true/false"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def values_text(field: FieldInfo) -> str:
    """The values column: the type and its bounds."""
    parts = [_type_name(field.annotation)]
    for bound in field.metadata:
        for kind, attribute, symbol in ((Ge, "ge", ">="), (Gt, "gt", ">"), (Le, "le", "<="), (Lt, "lt", "<")):
            if isinstance(bound, kind):
                parts.append(f"{symbol} {getattr(bound, attribute)}")
    return ", ".join(parts)


def table(settings: type[Any]) -> str:
    """The generated part of the page."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    fields: dict[str, FieldInfo] = settings.model_fields
    lines = [
        f"{len(fields)} settings, in the order of `{settings.__module__}.{settings.__qualname__}`. "
        "Secrets never show a value here.",
        "",
        "| variable | default | values | description |",
        "|---|---|---|---|",
    ]
    for name, field in fields.items():
        names = variable_names(name, field, prefix)
        variable = _code(names[0])
        if names[1:]:
            variable += " (also " + ", ".join(_code(other) for other in names[1:]) + ")"
        row = [variable, default_text(settings, name, field), values_text(field), field.description or ""]
        lines.append("| " + " | ".join(_cell(cell) for cell in row) + " |")
    return "\n".join(lines) + "\n"


def prose_of(page: str | None) -> str:
    """The hand-written part of an existing page (everything above the marker)."""
    if page is None or MARKER not in page:
        return DEFAULT_PROSE
    return page.split(MARKER, 1)[0].rstrip("\n") + "\n"


def render(page: str | None, settings: type[Any] | None = None) -> str:
    """The whole page: `page`'s prose, the marker, the table generated from `settings`."""
    return f"{prose_of(page)}\n{MARKER}\n\n{table(settings or settings_class())}"


def missing_descriptions(settings: type[Any] | None = None) -> list[str]:
    """Fields with no `description` (their row has an empty last cell)."""
    fields: dict[str, FieldInfo] = (settings or settings_class()).model_fields
    return [name for name, field in fields.items() if not field.description]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 when the page is out of date")
    parser.add_argument("--output", type=Path, default=PAGE, help="the page (default: docs/settings.md)")
    args = parser.parse_args(argv)
    page: Path = args.output
    current = page.read_text(encoding="utf-8") if page.is_file() else None
    wanted = render(current)
    if args.check:
        if current == wanted:
            return 0
        diff = difflib.unified_diff(
            (current or "").splitlines(keepends=True),
            wanted.splitlines(keepends=True),
            str(page),
            "generated",
        )
        sys.stdout.writelines(diff)
        print(f"{page} is out of date: run .venv/bin/python docs/generate_settings.py", file=sys.stderr)
        return 1
    if current != wanted:
        page.write_text(wanted, encoding="utf-8")
        print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
