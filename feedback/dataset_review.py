"""Human validation of dataset records: submit unvalidated pairs, hand them to reviewers, decide.

A record is keyed by a hash of its question and answer (`record_key`), so the same pair gets the same
id in every build and a verdict never applies to text the reviewers did not see. Each reviewer gives
one verdict per record: `approve`, `edit` (with the corrected text) or `reject`. With `required`
reviews configured (`ZANTARA_DATASET_REVIEWS_REQUIRED`), a record is

- validated when it has at least `required` reviews and more of them keep it (approve or edit) than
  reject it; when any of the keeping reviews is an edit, the most recent edited text wins;
- rejected when at least `required` reviews are in and more of them reject it than keep it;
- pending otherwise (too few reviews, or a tie, which the next reviewer breaks).

Agreement is measured on the three actions as nominal labels: per record, the share of its reviewers
who chose its most common action; overall, Krippendorff's alpha over records with two or more reviews.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

import numpy as np
from sqlalchemy import case, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from database.models import DatasetRecord, DatasetReview, utcnow
from feedback.text import storable

ACTIONS: tuple[str, ...] = ("approve", "edit", "reject")
Action = Literal["approve", "edit", "reject"]
Status = Literal["validated", "rejected", "pending"]
_LABEL = {action: float(index) for index, action in enumerate(ACTIONS)}
_CHUNK = 500
RECORD_ID = re.compile(r"rec-[0-9a-f]{24}")
"""The shape of every record id (`record_key`)."""


class RecordLike(Protocol):
    """What a submitted record needs (a training `Pair` has it all)."""

    @property
    def question(self) -> str: ...

    @property
    def answer(self) -> str: ...

    @property
    def category(self) -> str | None: ...

    @property
    def register(self) -> str | None: ...

    @property
    def source(self) -> str: ...


@dataclass(frozen=True)
class RecordView:
    """A record as a reviewer sees it, with how many reviews it has so far."""

    id: str
    dataset_version: str
    question: str
    answer: str
    category: str | None
    register: str | None
    source: str
    submitted_at: datetime
    reviews: int


@dataclass(frozen=True)
class Verdict:
    """Where one record stands: its status, the text to train on, and the votes behind it."""

    record_id: str
    status: Status
    question: str
    answer: str
    edited: bool
    approvals: int
    edits: int
    rejections: int

    @property
    def reviews(self) -> int:
        """How many reviewers gave a verdict."""
        return self.approvals + self.edits + self.rejections


@dataclass(frozen=True)
class Agreement:
    """How far reviewers agree: per record (two or more reviews) and overall."""

    per_record: dict[str, float]
    mean_share: float | None
    krippendorff_alpha: float | None

    @property
    def records(self) -> int:
        """Records with two or more reviews (the only ones agreement can be measured on)."""
        return len(self.per_record)


@dataclass(frozen=True)
class Summary:
    """Counts of records by status, and the reviewers' agreement."""

    required_reviews: int
    records: int
    validated: int
    edited: int
    rejected: int
    pending: int
    reviews: int
    agreement: Agreement


class UnknownRecordError(LookupError):
    """No dataset record has this id."""


class AlreadyReviewedError(ValueError):
    """This reviewer already gave a verdict on this record; a verdict is final."""


def record_key(question: str, answer: str) -> str:
    """The stable id of a question/answer pair: the same text gives the same id in every build."""
    digest = hashlib.sha256(f"{question}\x00{answer}".encode("utf-8", "surrogatepass")).hexdigest()
    return f"rec-{digest[:24]}"


def submit_records(sessions: sessionmaker[Session], dataset_version: str, pairs: Iterable[RecordLike]) -> int:
    """Store pairs for review as records of `dataset_version`; records already known (same text,
    whatever version submitted them) are left untouched. Returns how many were new."""
    wanted: dict[str, RecordLike] = {}
    for pair in pairs:
        wanted.setdefault(record_key(pair.question, pair.answer), pair)
    for _ in range(3):
        try:
            with sessions.begin() as session:
                keys = list(wanted)
                known: set[str] = set()
                for start in range(0, len(keys), _CHUNK):
                    chunk = keys[start : start + _CHUNK]
                    known.update(session.scalars(select(DatasetRecord.id).where(DatasetRecord.id.in_(chunk))))
                now = utcnow()
                new = [
                    DatasetRecord(
                        id=key,
                        dataset_version=dataset_version,
                        question=storable(pair.question),
                        answer=storable(pair.answer),
                        category=pair.category or None,
                        register=pair.register or None,
                        source=pair.source,
                        submitted_at=now,
                    )
                    for key, pair in wanted.items()
                    if key not in known
                ]
                session.add_all(new)
            return len(new)
        except IntegrityError:
            continue
    raise RuntimeError("records kept being submitted concurrently; try again")


def _view(row: DatasetRecord, reviews: int) -> RecordView:
    return RecordView(
        row.id,
        row.dataset_version,
        row.question,
        row.answer,
        row.category,
        row.register,
        row.source,
        row.submitted_at,
        reviews,
    )


def next_record(
    sessions: sessionmaker[Session], reviewer_id: int, required_reviews: int
) -> RecordView | None:
    """The oldest record this reviewer has not reviewed that is still pending (fewer than
    `required_reviews` verdicts, or a tie), or None when nothing is left for them."""
    rejects = func.sum(case((DatasetReview.action == "reject", 1), else_=0))
    counts = (
        select(DatasetReview.record_id, func.count().label("n"), rejects.label("rejects"))
        .group_by(DatasetReview.record_id)
        .subquery()
    )
    reviews = func.coalesce(counts.c.n, 0)
    rejected = func.coalesce(counts.c.rejects, 0)
    seen = select(DatasetReview.record_id).where(DatasetReview.reviewer_id == reviewer_id)
    with sessions() as session:
        row = session.execute(
            select(DatasetRecord, reviews)
            .outerjoin(counts, counts.c.record_id == DatasetRecord.id)
            .where(DatasetRecord.id.not_in(seen), or_(reviews < required_reviews, reviews == 2 * rejected))
            .order_by(DatasetRecord.submitted_at, DatasetRecord.id)
            .limit(1)
        ).first()
    return None if row is None else _view(row[0], int(row[1]))


def get_record(sessions: sessionmaker[Session], record_id: str) -> RecordView | None:
    """One record with its review count, or None when unknown."""
    if not RECORD_ID.fullmatch(record_id):
        return None
    with sessions() as session:
        row = session.get(DatasetRecord, record_id)
        if row is None:
            return None
        count = session.scalar(select(func.count()).where(DatasetReview.record_id == record_id)) or 0
        return _view(row, count)


def review(
    sessions: sessionmaker[Session],
    record_id: str,
    reviewer_id: int,
    action: str,
    *,
    question: str | None = None,
    answer: str | None = None,
    reason: str = "",
    required_reviews: int = 1,
) -> Verdict:
    """Store one reviewer's verdict on a record and return where the record stands now.

    `edit` needs a new question or answer (a missing one keeps the record's text) that differs from
    the record's; `approve` and `reject` take no text. Raises `UnknownRecordError`,
    `AlreadyReviewedError`, or `ValueError` for a malformed verdict."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}")
    if action != "edit" and (question is not None or answer is not None):
        raise ValueError("only an edit carries a question or an answer")
    if not RECORD_ID.fullmatch(record_id):
        raise UnknownRecordError(record_id)
    try:
        with sessions.begin() as session:
            record = session.get(DatasetRecord, record_id)
            if record is None:
                raise UnknownRecordError(record_id)
            edited_question, edited_answer = None, None
            if action == "edit":
                edited_question = storable((question if question is not None else record.question).strip())
                edited_answer = storable((answer if answer is not None else record.answer).strip())
                if not edited_question or not edited_answer:
                    raise ValueError("an edit needs a non-empty question and answer")
                if (edited_question, edited_answer) == (record.question.strip(), record.answer.strip()):
                    raise ValueError("the edit changes nothing: approve the record instead")
            session.add(
                DatasetReview(
                    record_id=record_id,
                    reviewer_id=reviewer_id,
                    action=action,
                    question=edited_question,
                    answer=edited_answer,
                    reason=storable(reason.strip()),
                    created_at=utcnow(),
                )
            )
    except IntegrityError:
        raise AlreadyReviewedError(record_id) from None
    return verdicts(sessions, required_reviews, [record_id])[record_id]


def _decide(record: DatasetRecord, rows: Sequence[DatasetReview], required: int) -> Verdict:
    votes = Counter(row.action for row in rows)
    keep, rejections = votes["approve"] + votes["edit"], votes["reject"]
    status: Status = "pending"
    if len(rows) >= required and keep != rejections:
        status = "validated" if keep > rejections else "rejected"
    question, answer, edited = record.question, record.answer, False
    edits = [row for row in rows if row.action == "edit"]
    if status == "validated" and edits:
        latest = edits[-1]
        question, answer, edited = latest.question or question, latest.answer or answer, True
    return Verdict(record.id, status, question, answer, edited, votes["approve"], votes["edit"], rejections)


def _reviews_by_record(session: Session, record_ids: Sequence[str] | None) -> dict[str, list[DatasetReview]]:
    query = select(DatasetReview).order_by(DatasetReview.created_at, DatasetReview.id)
    if record_ids is not None:
        query = query.where(DatasetReview.record_id.in_(record_ids))
    grouped: dict[str, list[DatasetReview]] = defaultdict(list)
    for row in session.scalars(query):
        grouped[row.record_id].append(row)
    return grouped


def verdicts(
    sessions: sessionmaker[Session], required_reviews: int = 1, record_ids: Sequence[str] | None = None
) -> dict[str, Verdict]:
    """The verdict on every record (or on `record_ids`), by record id; see the module's rules."""
    with sessions() as session:
        query = select(DatasetRecord)
        if record_ids is not None:
            query = query.where(DatasetRecord.id.in_(record_ids))
        records = list(session.scalars(query))
        grouped = _reviews_by_record(session, record_ids)
    return {record.id: _decide(record, grouped.get(record.id, []), required_reviews) for record in records}


def _alpha(grouped: dict[str, list[DatasetReview]]) -> float | None:
    import krippendorff

    shared = {record: rows for record, rows in grouped.items() if len(rows) >= 2}
    if not shared or len({row.action for rows in shared.values() for row in rows}) < 2:
        return None
    reviewers = sorted({row.reviewer_id for rows in shared.values() for row in rows})
    column = {reviewer: index for index, reviewer in enumerate(reviewers)}
    data = np.full((len(reviewers), len(shared)), np.nan)
    for index, rows in enumerate(shared.values()):
        for row in rows:
            data[column[row.reviewer_id], index] = _LABEL[row.action]
    with np.errstate(all="ignore"):
        alpha = float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))
    return alpha if np.isfinite(alpha) else None


def agreement(sessions: sessionmaker[Session]) -> Agreement:
    """Per record with two or more reviews, the share of reviewers who chose its most common action;
    their mean; and Krippendorff's alpha (nominal) over those records, None when there are none or
    when every verdict is the same action (alpha is then undefined)."""
    with sessions() as session:
        grouped = _reviews_by_record(session, None)
    shares = {
        record: Counter(row.action for row in rows).most_common(1)[0][1] / len(rows)
        for record, rows in grouped.items()
        if len(rows) >= 2
    }
    mean = float(np.mean(list(shares.values()))) if shares else None
    return Agreement(shares, mean, _alpha(grouped))


def summary(sessions: sessionmaker[Session], required_reviews: int) -> Summary:
    """How many records are validated (and of those, edited), rejected and pending; reviewer agreement."""
    decided = verdicts(sessions, required_reviews)
    statuses = Counter(verdict.status for verdict in decided.values())
    return Summary(
        required_reviews=required_reviews,
        records=len(decided),
        validated=statuses["validated"],
        edited=sum(verdict.edited for verdict in decided.values()),
        rejected=statuses["rejected"],
        pending=statuses["pending"],
        reviews=sum(verdict.reviews for verdict in decided.values()),
        agreement=agreement(sessions),
    )
