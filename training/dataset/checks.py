"""The review checklist as automated checks, reported per record with its line number.

Checks (name: what it catches):
- `schema`: not a record we can read, a missing field, a wrong type, an unknown category or register;
- `duplicate`: the same question twice (an error; with different answers it breaks consistency);
- `near_duplicate`: almost the same question in records that are not variations of one seed;
- `register`: the question does not read like the register it is labelled with;
- `tone`: formal answers with casual words, casual answers without natural particles;
- `completeness`: empty, very short or broken-off answers, or answers that skip what was asked about;
- `facts`: figures that contradict the fact registry (critical when the fact is verified);
- `translationese`: phrases that read as word-for-word translations from English;
- `pii`: personal data left in (e-mail, phone, passport, NIK, NPWP, names with ID numbers, addresses);
- `system_prompt`: a system prompt that is not ZANTARA's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from training.dataset.fact_check import FactChecker
from training.dataset.files import read_items
from training.dataset.lexicon import TRANSLATIONESE
from training.dataset.pii import ID_KINDS, find_names, find_pii
from training.dataset.records import Example, SchemaProblem, parse_record
from training.dataset.register import (
    answer_register_problem,
    detect_register,
    question_register_problem,
    words,
)
from training.dataset.similarity import content_words, normalize, similar_pairs
from training.prompts import ZANTARA_SYSTEM_PROMPT

NEAR_DUPLICATE = 0.85
MIN_ANSWER_WORDS = 8
SHORT_ANSWER_WORDS = 25
_BROKEN_OFF = re.compile(
    r"(?:\b(?:dan|atau|yang|untuk|dengan|di|ke|dari|karena|seperti|yaitu|adalah|serta)"
    r"|[,:;(]|\.\.\.|…)\s*$",
    re.IGNORECASE,
)
_TERM = re.compile(r"\b[A-Z][A-Z0-9]{2,}(?:\s+[A-Z]{2,})?\b")
_SAME_TERM = {"KITAS": "ITAS", "KITAP": "ITAP", "WNA": "ASING", "WNI": "INDONESIA", "PMA": "ASING"}
_NAME_WINDOW = 60
_CAPITALISED_NAME = re.compile(r"\b[A-Z][a-z]+(?:[ \t]+[A-Z][a-z]+)+\b")
_NOT_NAME_START = frozenset({"Visa", "Kantor", "Direktorat", "Peraturan", "Undang", "Bapak", "Ibu", "Pasal"})
_PLACEHOLDER = re.compile(r"\[(?:NAMA|EMAIL|TELEPON|NIK|NPWP|PASPOR|ALAMAT)\]")


@dataclass(frozen=True)
class Issue:
    """One finding of the checklist on one record."""

    line: int
    severity: str
    check: str
    message: str
    record_id: str | None = None


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
        issues += _check_one(example, facts)
    issues += _duplicates(examples)
    return sorted(issues, key=lambda issue: (issue.line, issue.severity != "error", issue.check))


def _check_one(example: Example, facts: FactChecker | None) -> list[Issue]:
    record_id = example.meta.get("id") if isinstance(example.meta.get("id"), str) else None

    def issue(severity: str, check: str, message: str) -> Issue:
        return Issue(example.line, severity, check, message, record_id)

    found: list[Issue] = []
    if not example.question.strip():
        return [issue("error", "schema", "the question is empty")]
    if (
        example.system is not None
        and example.system.strip() != ZANTARA_SYSTEM_PROMPT
        and example.shape != "qa"
    ):
        found.append(
            issue("warning", "system_prompt", "the system prompt/instruction is not ZANTARA's prompt")
        )
    declared = example.meta.get("register")
    if isinstance(declared, str):
        problem = question_register_problem(declared, example.question)
        if problem:
            found.append(issue(problem[0], "register", problem[1]))
    register = declared if isinstance(declared, str) else detect_register(example.question)
    problem = answer_register_problem(register, example.answer)
    if problem:
        found.append(issue(problem[0], "tone", problem[1]))
    found += [issue(severity, "completeness", message) for severity, message in _completeness(example)]
    if facts is not None:
        for finding in facts.check(example.question, example.answer):
            found.append(
                issue(
                    "error" if finding.critical else "warning",
                    "facts",
                    ("critical: " if finding.critical else "") + finding.message(),
                )
            )
    text = f"{example.question}\n{example.answer}"
    lowered = text.lower()
    for phrase, origin in TRANSLATIONESE.items():
        if phrase in lowered:
            found.append(
                issue("warning", "translationese", f"'{phrase}' reads like a translation of {origin}")
            )
    personal = dict.fromkeys(_personal_data(example.question) + _personal_data(example.answer))
    found += [issue(severity, "pii", message) for severity, message in personal]
    return found


def _completeness(example: Example) -> list[tuple[str, str]]:
    answer = example.answer.strip()
    count = len(words(answer))
    if count == 0:
        return [("error", "the answer is empty")]
    problems: list[tuple[str, str]] = []
    if count < MIN_ANSWER_WORDS:
        problems.append(("error", f"the answer has only {count} words"))
    elif count < SHORT_ANSWER_WORDS:
        problems.append(
            ("warning", f"short answer ({count} words): does it answer fully, with a tip or follow-up?")
        )
    if _BROKEN_OFF.search(answer):
        problems.append(("error", "the answer breaks off mid-sentence"))
    terms = {term for term in _TERM.findall(example.question) if not _PLACEHOLDER.fullmatch(f"[{term}]")}
    answer_upper = answer.upper()
    if len(terms) >= 2 and not any(
        term in answer_upper or _SAME_TERM.get(term, "\0") in answer_upper for term in terms
    ):
        problems.append(
            (
                "warning",
                f"the answer never mentions {', '.join(sorted(terms))}, which the question asks about",
            )
        )
    return problems


@lru_cache(maxsize=4096)
def _personal_data(text: str) -> tuple[tuple[str, str], ...]:
    spans = [span for span in find_pii(text) if not _PLACEHOLDER.fullmatch(span.text)]
    problems: dict[str, str] = {}
    for span in spans:
        if span.kind == "address":
            problems.setdefault(f"street address left in: {span.text!r}", "warning")
        elif span.kind != "name":
            problems.setdefault(f"{span.kind} left in: {span.text!r}", "error")
    for span in spans:
        if span.kind in ID_KINDS:
            window = text[max(0, span.start - _NAME_WINDOW) : span.start]
            names = [
                name for name in _CAPITALISED_NAME.findall(window) if name.split()[0] not in _NOT_NAME_START
            ]
            names += [name for name in find_names(text) if name in window]
            if names:
                problems.setdefault(f"name with ID number left in: {names[-1]!r}", "error")
    return tuple((severity, message) for message, severity in problems.items())


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
