"""The review checklist over a dataset file, reported per record with its line number: each record's
own checks (`knowledge/checklist.py`: schema, register, tone, completeness, facts, translationese,
pii, system prompt) and the checks across records:

- `schema`: not a record we can read, a missing field, a wrong type, an unknown category or register;
- `duplicate`: the same question twice (an error; with different answers it breaks consistency);
- `near_duplicate`: almost the same question in records that are not variations of one seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from knowledge.checklist import Issue, check_example
from knowledge.fact_check import FactChecker
from knowledge.records import Example, SchemaProblem, parse_record
from training.dataset.files import read_items
from training.dataset.similarity import content_words, normalize, similar_pairs

NEAR_DUPLICATE = 0.85


@dataclass
class Report:
    """All findings for one file (or one in-memory set of records)."""

    source: str
    records: int
    issues: list[Issue] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        """Findings that make the file unfit for training."""
        return [issue for issue in self.issues if issue.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        """Findings a reviewer should look at, which do not block training."""
        return [issue for issue in self.issues if issue.severity == "warning"]

    def to_json(self) -> dict[str, Any]:
        """The report for tools: counts, then errors and warnings as separate lists."""
        by_check: dict[str, int] = {}
        for issue in self.issues:
            by_check[issue.check] = by_check.get(issue.check, 0) + 1
        return {
            "file": self.source,
            "records": self.records,
            "summary": {"errors": len(self.errors), "warnings": len(self.warnings), "by_check": by_check},
            "errors": [asdict(issue) for issue in self.errors],
            "warnings": [asdict(issue) for issue in self.warnings],
        }


def check_file(path: Path, facts: FactChecker | None) -> Report:
    """Run the checklist on a `.json` array or `.jsonl` file (raises `DatasetInputError` if unreadable)."""
    items = read_items(path)
    parsed = [parse_record(item.line, item.value) for item in items]
    return Report(str(path), len(items), check_records(parsed, facts))


def check_records(records: Sequence[Example | SchemaProblem], facts: FactChecker | None) -> list[Issue]:
    """Every finding for `records`, sorted by line, errors before warnings on the same line."""
    issues = [
        Issue(item.line, "error", "schema", item.message)
        for item in records
        if isinstance(item, SchemaProblem)
    ]
    examples = [item for item in records if isinstance(item, Example)]
    for example in examples:
        issues += check_example(example, facts)
    issues += _duplicates(examples)
    return sorted(issues, key=lambda issue: (issue.line, issue.severity != "error", issue.check))


def _duplicates(examples: list[Example]) -> list[Issue]:
    issues: list[Issue] = []
    first: dict[str, Example] = {}
    for example in examples:
        key = normalize(example.question)
        if not key:
            continue
        if key in first:
            earlier = first[key]
            if normalize(earlier.answer) == normalize(example.answer):
                message = f"duplicate of line {earlier.line}"
            else:
                message = f"same question as line {earlier.line} with a different answer (inconsistent)"
            issues.append(Issue(example.line, "error", "duplicate", message, _id(example)))
        else:
            first[key] = example
    unique = list(first.values())
    sets = [content_words(example.question) for example in unique]
    for i, j, score in similar_pairs(sets, NEAR_DUPLICATE):
        one, other = unique[i], unique[j]
        seed = one.meta.get("seed_id")
        if seed is not None and seed == other.meta.get("seed_id"):
            continue
        later, earlier = (other, one) if other.line > one.line else (one, other)
        same = normalize(one.answer) == normalize(other.answer)
        detail = "same answer" if same else "different answer: check they agree"
        issues.append(
            Issue(
                later.line,
                "warning",
                "near_duplicate",
                f"near-duplicate of line {earlier.line} ({score:.0%} same words, {detail})",
                _id(later),
            )
        )
    return issues


def _id(example: Example) -> str | None:
    value = example.meta.get("id")
    return value if isinstance(value, str) else None
