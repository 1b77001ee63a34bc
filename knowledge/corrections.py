"""A reviewer's correction of a model answer: what the model got wrong, the right answer, why, and the
lesson; the training pair it becomes, and the checklist it must pass.

`check_correction` runs the review checklist on that pair as a dataset build does, so the review API
can refuse (or let a reviewer override) a correction the retrain would otherwise have to leave out. A
reviewer's override covers every check but `NOT_OVERRIDABLE` ones: personal data, a verified fact
contradicted, a record that cannot be read.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime

from knowledge.checklist import Issue, check_example
from knowledge.fact_check import FactChecker
from knowledge.pii import find_names, scrub
from knowledge.prompts import ZANTARA_SYSTEM_PROMPT
from knowledge.records import Example, Pair
from knowledge.register import detect_register
from knowledge.topics import classify

NOT_OVERRIDABLE = frozenset({"schema", "facts", "pii"})
"""Checks a reviewer's override cannot cover."""
DATABASE = "database:"
"""How the origin of a correction read from the feedback database starts (`database:<id>`)."""


@dataclass(frozen=True, kw_only=True)
class CorrectionRecord:
    """One reviewed mistake of the model, with where it was read from: the one record type of a
    correction, whether read from the feedback database, from a file, or being checked on the review page."""

    query: str
    model_answer_wrong: str
    correct_answer: str
    why_wrong: str = ""
    lesson: str = ""
    category: str | None = None
    origin: str
    """`database:<id>` for a stored correction, `<file>:<line>` for one read from a file."""
    check_override: str | None = None
    """The reviewer's reason for keeping it although it fails a dataset check."""
    interaction_id: str | None = None
    """The answer it corrects (stored corrections made on the review page)."""
    reviewer: str | None = None
    created_at: datetime | None = None

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
    return [issue for issue in check_example(example, facts) if issue.severity == "error"]
