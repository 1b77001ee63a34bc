"""Error-correction records: what the model got wrong, the right answer, why, and the lesson.

They come from the feedback database (reviewers fill them in on the review page) or from a file
(`.jsonl` or `.json` array of `{query, model_answer_wrong, correct_answer, why_wrong, lesson,
category}`), and each becomes a training pair: the query with the correct answer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import select

from training.dataset.files import DatasetInputError, read_items
from training.dataset.pii import find_names, scrub
from training.dataset.records import CATEGORIES, Pair
from training.dataset.register import detect_register
from training.dataset.topics import classify

REQUIRED: tuple[str, ...] = ("query", "model_answer_wrong", "correct_answer")
OPTIONAL: tuple[str, ...] = ("why_wrong", "lesson")


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
            },
        )


def load_corrections_file(path: Path) -> list[CorrectionRecord]:
    """Read and validate a corrections file; the first bad record raises with its line."""
    records: list[CorrectionRecord] = []
    for item in read_items(path):
        records.append(_parse(path, item.line, item.value))
    return records


def load_corrections_db(database_url: str) -> list[CorrectionRecord]:
    """Every correction stored by the feedback loop, oldest first, personal data scrubbed: reviewers
    copy real customer chats into them, and training data must not hold names or ID numbers."""
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
                f"database:{row.id}",
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
