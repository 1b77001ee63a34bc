"""The seed question bank (`knowledge/data/seed/questions.jsonl`): hard questions with golden answers.

One JSON object a line: `id`, `category`, `register`, `question`, `golden_answer`, `sources` (legal
references), `facts` (registry ids the answer relies on) and `variants` (hand-written rephrasings,
a list per register). Loading validates every line and stops at the first problem with its line.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowledge.records import CATEGORIES, REGISTERS
from training.dataset.files import DatasetInputError, read_items

TEXT_FIELDS: tuple[str, ...] = ("id", "category", "register", "question", "golden_answer")


@dataclass(frozen=True)
class SeedQuestion:
    """One seed question with its golden answer and hand-written variants per register."""

    id: str
    category: str
    register: str
    question: str
    golden_answer: str
    sources: tuple[str, ...]
    facts: tuple[str, ...]
    variants: dict[str, tuple[str, ...]]
    line: int


def load_seed_bank(path: Path, fact_ids: set[str] | None = None) -> list[SeedQuestion]:
    """Read and validate the seed bank; `fact_ids`, when given, must contain every fact a seed cites."""
    seeds: list[SeedQuestion] = []
    seen: dict[str, int] = {}
    for item in read_items(path):
        seed = _parse(path, item.line, item.value)
        if seed.id in seen:
            raise DatasetInputError(
                path, item.line, f"duplicate seed id {seed.id!r} (first at line {seen[seed.id]})"
            )
        unknown = [fact for fact in seed.facts if fact_ids is not None and fact not in fact_ids]
        if unknown:
            raise DatasetInputError(
                path, item.line, f"unknown fact id(s) {', '.join(unknown)} (not in the registry)"
            )
        seen[seed.id] = item.line
        seeds.append(seed)
    if not seeds:
        raise DatasetInputError(path, None, "the seed bank is empty")
    return seeds


def category_counts(seeds: list[SeedQuestion]) -> dict[str, int]:
    """How many seed questions each category has, in the canonical category order."""
    counts = Counter(seed.category for seed in seeds)
    return {category: counts[category] for category in CATEGORIES if counts[category]}


def _parse(path: Path, line: int, value: Any) -> SeedQuestion:
    if not isinstance(value, dict):
        raise DatasetInputError(path, line, "each seed question must be a JSON object")
    for name in TEXT_FIELDS:
        if name not in value:
            raise DatasetInputError(path, line, f"missing field '{name}'")
        if not isinstance(value[name], str) or not value[name].strip():
            raise DatasetInputError(path, line, f"field '{name}' must be a non-empty string")
    if value["category"] not in CATEGORIES:
        raise DatasetInputError(
            path, line, f"unknown category {value['category']!r} (expected one of: {', '.join(CATEGORIES)})"
        )
    if value["register"] not in REGISTERS:
        raise DatasetInputError(
            path, line, f"unknown register {value['register']!r} (expected one of: {', '.join(REGISTERS)})"
        )
    return SeedQuestion(
        id=value["id"],
        category=value["category"],
        register=value["register"],
        question=value["question"].strip(),
        golden_answer=value["golden_answer"].strip(),
        sources=_string_list(path, line, value, "sources"),
        facts=_string_list(path, line, value, "facts"),
        variants=_variants(path, line, value.get("variants", {})),
        line=line,
    )


def _string_list(path: Path, line: int, value: dict[str, Any], name: str) -> tuple[str, ...]:
    items = value.get(name, [])
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise DatasetInputError(path, line, f"field '{name}' must be a list of strings")
    return tuple(items)


def _variants(path: Path, line: int, value: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise DatasetInputError(path, line, "field 'variants' must be an object keyed by register")
    variants: dict[str, tuple[str, ...]] = {}
    for register, texts in value.items():
        if register not in REGISTERS:
            raise DatasetInputError(path, line, f"unknown register {register!r} in 'variants'")
        if not isinstance(texts, list) or not all(isinstance(text, str) and text.strip() for text in texts):
            raise DatasetInputError(path, line, f"variants.{register} must be a list of non-empty strings")
        variants[register] = tuple(text.strip() for text in texts)
    return variants
