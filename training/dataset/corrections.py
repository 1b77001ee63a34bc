"""Error-correction records: what the model got wrong, the right answer, why, and the lesson.

They come from the feedback database (reviewers fill them in on the review page) or from a file
(`.jsonl` or `.json` array of `{query, model_answer_wrong, correct_answer, why_wrong, lesson,
category}`), and each becomes a training pair: the query with the correct answer.

`check_correction` runs the dataset checklist on that pair as a build does, so the review API can
refuse (or let a reviewer override) a correction the retrain would otherwise have to leave out. A
reviewer's override covers every check but `NOT_OVERRIDABLE` ones: personal data, a verified fact
contradicted, a record that cannot be read.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import select

from training.dataset.checks import Issue, check_records
from training.dataset.fact_check import FactChecker
from training.dataset.files import DatasetInputError, read_items
from training.dataset.pii import find_names, scrub
from training.dataset.records import CATEGORIES, Example, Pair
from training.dataset.register import detect_register
from training.dataset.topics import classify
from training.prompts import ZANTARA_SYSTEM_PROMPT

REQUIRED: tuple[str, ...] = ("query", "model_answer_wrong", "correct_answer")
OPTIONAL: tuple[str, ...] = ("why_wrong", "lesson")
NOT_OVERRIDABLE = frozenset({"schema", "facts", "pii"})
"""Checks a reviewer's override cannot cover."""
DATABASE = "database:"
"""How the origin of a correction read from the feedback database starts (`database:<id>`)."""


@dataclass(frozen=True)
class CorrectionRecord:
    """One reviewed mistake of the model, with where it was read from."""

    query: str
    model_answer_wrong: str
    correct_answer: str
    why_wrong: str
    lesson: str
    category: str | None
    origin: str
    check_override: str | None = None
    """The reviewer's reason for keeping it although it fails a dataset check."""

    @property
    def database_id(self) -> int | None:
        """The correction's id in the feedback database (None when it was read from a file)."""
        return int(self.origin[len(DATABASE) :]) if self.origin.startswith(DATABASE) else None

    def scrubbed(self) -> CorrectionRecord:
        """The record with personal data replaced by placeholders in every text field; a name found in
        one field (the query's "nama saya ...") is replaced in the others too."""
        fields = (self.query, self.model_answer_wrong, self.correct_answer, self.why_wrong, self.lesson)
        names = [name for text in fields for name in find_names(text)]
        query, wrong, correct, why, lesson = (scrub(text, names) for text in fields)
        return replace(
            self, query=query, model_answer_wrong=wrong, correct_answer=correct, why_wrong=why, lesson=lesson
        )

    def to_pair(self) -> Pair | None:
        """The training pair (query -> correct answer); None when no category can be told."""
        category = self.category or classify(self.query)
        if category is None:
            return None
        digest = hashlib.sha256(f"{self.query}\n{self.correct_answer}".encode()).hexdigest()[:10]
        override = {"check_override": self.check_override} if self.check_override else {}
        return Pair(
            id=f"correction-{digest}",
            question=self.query.strip(),
            answer=self.correct_answer.strip(),
            category=category,
            register=detect_register(self.query),
            source="correction",
            validated=True,
            extra={
                "why_wrong": self.why_wrong,
                "lesson": self.lesson,
                "model_answer_wrong": self.model_answer_wrong,
                "origin": self.origin,
                **override,
            },
        )


def overridable(issue: Issue) -> bool:
    """Whether a reviewer's override may keep a correction that has this finding."""
    return issue.check not in NOT_OVERRIDABLE


def check_correction(record: CorrectionRecord, facts: FactChecker | None) -> list[Issue]:
    """The errors the dataset checklist finds on the pair this correction becomes, personal data
    scrubbed first as the build does (none when no category can be told: the build skips it)."""
    pair = record.scrubbed().to_pair()
    if pair is None:
        return []
    example = Example(1, "chat", pair.question, pair.answer, ZANTARA_SYSTEM_PROMPT, pair.meta())
    return [issue for issue in check_records([example], facts) if issue.severity == "error"]


def load_corrections_file(path: Path) -> list[CorrectionRecord]:
    """Read and validate a corrections file; the first bad record raises with its line."""
    records: list[CorrectionRecord] = []
    for item in read_items(path):
        records.append(_parse(path, item.line, item.value))
    return records


def load_corrections_db(database_url: str) -> list[CorrectionRecord]:
    """Every correction stored by the feedback loop that no retrain rejected, oldest first, personal
    data scrubbed: reviewers copy real customer chats into them, and training data must not hold names
    or ID numbers."""
    from feedback.db import create_db_engine, make_session_factory
    from feedback.review_queue import corrections_after

    engine = create_db_engine(database_url)
    try:
        return [
            CorrectionRecord(
                row.query,
                row.model_answer_wrong,
                row.correct_answer,
                row.why_wrong,
                row.lesson,
                row.category if row.category in CATEGORIES else None,
                f"{DATABASE}{row.id}",
                row.check_override,
            ).scrubbed()
            for row in corrections_after(make_session_factory(engine), None)
        ]
    finally:
        engine.dispose()


def store_corrections(database_url: str, records: list[CorrectionRecord], reviewer: str) -> int:
    """Insert the records not yet in the database (same query and correct answer); returns how many."""
    from feedback.db import create_db_engine, make_session_factory
    from feedback.models import Correction

    engine = create_db_engine(database_url)
    try:
        with make_session_factory(engine)() as session, session.begin():
            existing = {
                (query, answer)
                for query, answer in session.execute(select(Correction.query, Correction.correct_answer))
            }
            added = 0
            for record in records:
                if (record.query, record.correct_answer) in existing:
                    continue
                existing.add((record.query, record.correct_answer))
                session.add(
                    Correction(
                        query=record.query,
                        model_answer_wrong=record.model_answer_wrong,
                        correct_answer=record.correct_answer,
                        why_wrong=record.why_wrong,
                        lesson=record.lesson,
                        category=record.category,
                        reviewer=reviewer,
                    )
                )
                added += 1
            return added
    finally:
        engine.dispose()


def _parse(path: Path, line: int, value: Any) -> CorrectionRecord:
    if not isinstance(value, dict):
        raise DatasetInputError(path, line, "each correction must be a JSON object")
    for name in REQUIRED:
        if name not in value:
            raise DatasetInputError(path, line, f"missing field '{name}'")
        if not isinstance(value[name], str) or not value[name].strip():
            raise DatasetInputError(path, line, f"field '{name}' must be a non-empty string")
    for name in OPTIONAL:
        if not isinstance(value.get(name, ""), str):
            raise DatasetInputError(path, line, f"field '{name}' must be a string")
    category = value.get("category")
    if category is not None and category not in CATEGORIES:
        raise DatasetInputError(
            path, line, f"unknown category {category!r} (expected one of: {', '.join(CATEGORIES)})"
        )
    return CorrectionRecord(
        value["query"],
        value["model_answer_wrong"],
        value["correct_answer"],
        value.get("why_wrong", ""),
        value.get("lesson", ""),
        category,
        f"{path.name}:{line}",
    )
