"""The fact registry (`knowledge/data/facts.yaml`): figures the answers must agree with.

Each fact has a value and unit, the subjects it applies to (and, where a mix-up is likely, the ones it
does not apply to, e.g. an ordinary PT's capital is not a PT PMA's), keywords that signal the fact in
a sentence, its source regulation, when it took effect and was last checked, and whether the team has
verified it or it still waits for confirmation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from knowledge.errors import DatasetInputError
from knowledge.quantities import find_quantities

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
STATUSES: tuple[str, ...] = ("verified", "needs_confirmation")
# Registry unit (lower case, before any "/per" part) -> (unit the checker compares in, factor).
UNITS: dict[str, tuple[str, float]] = {
    "idr": ("IDR", 1),
    "rp": ("IDR", 1),
    "rupiah": ("IDR", 1),
    "usd": ("USD", 1),
    "ratio": ("percent", 100),
    "%": ("percent", 1),
    "percent": ("percent", 1),
    "persen": ("percent", 1),
    "hari": ("day", 1),
    "day": ("day", 1),
    "days": ("day", 1),
    "minggu": ("day", 7),
    "week": ("day", 7),
    "bulan": ("day", 30),
    "month": ("day", 30),
    "months": ("day", 30),
    "tahun": ("day", 365),
    "year": ("day", 365),
    "years": ("day", 365),
    "waktu": ("day", 1),
}
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "description": str,
    "unit": str,
    "source": str,
    "status": str,
    "applies_to": (str, list),
    "keywords": list,
}


@dataclass(frozen=True)
class Fact:
    """One registry entry; `values` holds every figure it accepts, in `unit` (IDR, USD, percent, day)."""

    id: str
    description: str
    values: tuple[float, ...]
    unit: str
    display: str
    applies_to: tuple[str, ...]
    not_applies_to: tuple[str, ...]
    keywords: tuple[str, ...]
    source: str
    effective_date: str
    last_checked: str
    status: str
    notes: str

    @property
    def verified(self) -> bool:
        """True when the team has confirmed the figure against its source."""
        return self.status == "verified"

    @property
    def checkable(self) -> bool:
        """True when the fact has a numeric value in a unit the answer checker compares."""
        return bool(self.values)


def load_facts(path: Path) -> list[Fact]:
    """Read and validate the registry; any problem raises `DatasetInputError` with the entry's line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetInputError(path, None, f"cannot read the fact registry ({exc})") from None
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise DatasetInputError(path, mark.line + 1 if mark else None, f"malformed YAML ({exc})") from None
    finally:
        loader.dispose()
    if isinstance(data, dict) and "facts" in data:
        data = data["facts"]
        node = next(value for key, value in node.value if key.value == "facts")  # type: ignore[union-attr]
    if not isinstance(data, list):
        raise DatasetInputError(path, 1, "the fact registry must be a list of facts (or a 'facts:' list)")
    lines = [item.start_mark.line + 1 for item in node.value]  # type: ignore[union-attr]
    facts = [_parse_fact(path, line, entry) for line, entry in zip(lines, data, strict=True)]
    seen: dict[str, int] = {}
    for line, fact in zip(lines, facts, strict=True):
        if fact.id in seen:
            raise DatasetInputError(
                path, line, f"duplicate fact id {fact.id!r} (first at line {seen[fact.id]})"
            )
        seen[fact.id] = line
    return facts


def _parse_fact(path: Path, line: int, entry: Any) -> Fact:
    if not isinstance(entry, dict):
        raise DatasetInputError(path, line, "each fact must be a mapping")
    for name, kind in REQUIRED.items():
        if name not in entry:
            raise DatasetInputError(path, line, f"fact is missing field '{name}'")
        if not isinstance(entry[name], kind):
            raise DatasetInputError(path, line, f"field '{name}' must be a {_name(kind)}")
    if entry["status"] not in STATUSES:
        raise DatasetInputError(
            path, line, f"unknown status {entry['status']!r} (expected verified or needs_confirmation)"
        )
    if "value" not in entry:
        raise DatasetInputError(path, line, "fact is missing field 'value'")
    unit, values = _values(entry["value"], entry["unit"], str(entry.get("display", "")))
    return Fact(
        id=entry["id"],
        description=entry["description"],
        values=values,
        unit=unit,
        display=str(entry.get("display", entry["value"])),
        applies_to=_strings(path, line, entry, "applies_to"),
        not_applies_to=_strings(path, line, entry, "not_applies_to"),
        keywords=_strings(path, line, entry, "keywords"),
        source=entry["source"],
        effective_date=_date(entry.get("effective_date")),
        last_checked=_date(entry.get("last_checked")),
        status=entry["status"],
        notes=str(entry.get("notes") or ""),
    )


def _values(value: Any, registry_unit: str, display: str) -> tuple[str, tuple[float, ...]]:
    """The figures a fact accepts, converted to the checker's unit; none when it has no comparable number.

    Numbers, lists and mappings of numbers are taken as they are (a list shown as "30 + 20 + 30" also
    accepts its running totals); text such as "2 tahun 6 bulan" is read like answer text.
    """
    unit, factor = UNITS.get(registry_unit.strip().lower().split("/")[0], (registry_unit, 0.0))
    if isinstance(value, str):
        found = find_quantities(value)
        return (found[0].unit, (found[0].low,)) if len(found) == 1 else (unit, ())
    items = list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else [value]
    numbers = [float(item) for item in items if isinstance(item, int | float) and not isinstance(item, bool)]
    if not factor or len(numbers) != len(items):
        return unit, ()
    if isinstance(value, list) and "+" in display:
        numbers += [sum(numbers[: end + 1]) for end in range(1, len(numbers))]
    return unit, tuple(number * factor for number in numbers)


def _strings(path: Path, line: int, entry: dict[str, Any], name: str) -> tuple[str, ...]:
    items = entry.get(name) or []
    if isinstance(items, str):
        return (items,)
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise DatasetInputError(path, line, f"field '{name}' must be a string or a list of strings")
    return tuple(items)


def _date(value: Any) -> str:
    return value.isoformat() if isinstance(value, date) else str(value or "")


def _name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({"str": "string", "list": "list"}[item.__name__] for item in kinds)
