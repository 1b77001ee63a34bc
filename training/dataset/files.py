"""Reading record files with line numbers, and atomic writes.

Every reader reports problems as `DatasetInputError` naming the file and the line, so a user can
open the file at the right place. Every writer goes through a temporary path in the same folder and
an `os.replace`, so a crash or an error never leaves a half-written file or folder behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowledge.errors import DatasetInputError


@dataclass(frozen=True)
class LineItem:
    """One JSON value read from a file, with the 1-based line where it starts."""

    line: int
    value: Any


def read_items(path: Path) -> list[LineItem]:
    """Read a `.jsonl` file (one value a line) or a `.json` array, keeping each item's line number."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetInputError(path, None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetInputError(path, None, f"cannot read the file ({exc})") from None
    if path.suffix == ".json":
        return _json_array_items(path, text)
    if path.suffix == ".jsonl":
        return _jsonl_items(path, text)
    raise DatasetInputError(path, None, "unsupported file type: use a .json array or a .jsonl file")


def _jsonl_items(path: Path, text: str) -> list[LineItem]:
    items: list[LineItem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(LineItem(number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise DatasetInputError(path, number, f"malformed JSON ({exc.msg}, column {exc.colno})") from None
    return items


def _json_array_items(path: Path, text: str) -> list[LineItem]:
    decoder = json.JSONDecoder()
    position = _skip_space(text, 0)
    if position >= len(text) or text[position] != "[":
        raise DatasetInputError(path, _line_of(text, position), "a .json dataset file must hold one array")
    position = _skip_space(text, position + 1)
    items: list[LineItem] = []
    if position < len(text) and text[position] == "]":
        return items
    while True:
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise DatasetInputError(
                path, exc.lineno, f"malformed JSON ({exc.msg}, column {exc.colno})"
            ) from None
        items.append(LineItem(_line_of(text, position), value))
        position = _skip_space(text, end)
        if position < len(text) and text[position] == ",":
            position = _skip_space(text, position + 1)
            continue
        if position < len(text) and text[position] == "]":
            if text[_skip_space(text, position + 1) :].strip():
                raise DatasetInputError(path, _line_of(text, position), "unexpected text after the array")
            return items
        raise DatasetInputError(path, _line_of(text, position), "malformed JSON (expected ',' or ']')")


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _line_of(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success rename it onto `target`, else remove it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def atomic_dir(target: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; on success it becomes `target` in one rename.

    An existing `target` is kept unless `replace` is true; then it is swapped out only after the new
    folder is complete.
    """
    if target.exists() and not replace:
        raise FileExistsError(f"{target} already exists (use --force to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield temporary
        if target.exists():
            retired = target.with_name(f".{target.name}.old")
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(target, retired)
            os.replace(temporary, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(temporary, target)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def write_jsonl(path: Path, rows: Iterable[Any]) -> None:
    """Write one compact JSON value a line (UTF-8, non-ASCII kept), atomically."""
    with atomic_path(path) as temporary, temporary.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_json(path: Path, value: Any) -> None:
    """Write one indented JSON value (UTF-8, non-ASCII kept), atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(value, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
