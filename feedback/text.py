"""Text as the database can store it, the same on SQLite and PostgreSQL.

PostgreSQL's `text` and `jsonb` cannot hold U+0000, and a lone surrogate (U+D800-U+DFFF) is not
UTF-8 at all; a model can emit either (byte-level tokenizers decode a NUL), and one such character
refused its whole batch of writes. Every text the feedback layer stores goes through `storable`:
each unstorable character becomes U+FFFD, in place, so the stored copy keeps the text's length and
shows where the model said something unstorable. The client is always answered with what the model
said; only the stored copy changes.
"""

from __future__ import annotations

import re
from dataclasses import fields, replace
from typing import Any, TypeVar

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""The characters neither database can store as text: NUL and lone surrogates."""
REPLACEMENT = "\ufffd"

D = TypeVar("D")


def storable(text: str) -> str:
    """`text` with every NUL and lone surrogate replaced by U+FFFD (the same object when it has none)."""
    return UNSTORABLE.sub(REPLACEMENT, text)


def storable_or_none(text: str | None) -> str | None:
    """`storable` of an optional text."""
    return None if text is None else storable(text)


def storable_json(value: Any) -> Any:
    """`storable` applied to every string (keys included) of a JSON-like value: chat `messages`,
    sampling `params`. Other values are returned as they are."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable_json(key): storable_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable_json(item) for item in value]
    return value


def storable_record(record: D) -> D:
    """A copy of a dataclass record with `storable_json` applied to every field (the record itself
    when no field holds an unstorable character)."""
    changes = {}
    for field in fields(record):  # type: ignore[arg-type]
        value = getattr(record, field.name)
        clean = storable_json(value)
        if clean != value:
            changes[field.name] = clean
    return replace(record, **changes) if changes else record  # type: ignore[type-var]
