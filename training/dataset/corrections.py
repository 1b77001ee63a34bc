"""Error-correction records: what the model got wrong, the right answer, why, and the lesson.

They come from the feedback database (reviewers fill them in on the review page) or from a file
(`.jsonl` or `.json` array of `{query, model_answer_wrong, correct_answer, why_wrong, lesson,
category}`), and each becomes a training pair: the query with the correct answer.

The record type and its checklist are `knowledge/corrections.py`'s (the review API checks a correction
with them when it is saved); this module reads and stores them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from knowledge.corrections import CorrectionRecord
from knowledge.records import CATEGORIES
from training.dataset.files import DatasetInputError, read_items

REQUIRED: tuple[str, ...] = ("query", "model_answer_wrong", "correct_answer")
OPTIONAL: tuple[str, ...] = ("why_wrong", "lesson")


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
    from database.engine import create_db_engine, make_session_factory
    from feedback.review_queue import corrections_after

    engine = create_db_engine(database_url)
    try:
        return [record.scrubbed() for record in corrections_after(make_session_factory(engine), None)]
    finally:
        engine.dispose()


def store_corrections(database_url: str, records: list[CorrectionRecord], reviewer: str) -> int:
    """Insert the records not yet in the database (same query and correct answer); returns how many
    (the review queue, owner of the corrections table, writes them)."""
    from database.engine import create_db_engine, make_session_factory
    from feedback.review_queue import import_corrections

    engine = create_db_engine(database_url)
    try:
        return import_corrections(make_session_factory(engine), records, reviewer)
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
        query=value["query"],
        model_answer_wrong=value["model_answer_wrong"],
        correct_answer=value["correct_answer"],
        why_wrong=value.get("why_wrong", ""),
        lesson=value.get("lesson", ""),
        category=category,
        origin=f"{path.name}:{line}",
    )
