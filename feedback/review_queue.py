"""The review queue and the corrections it produces.

The queue holds every interaction whose current rating is under `REVIEW_THRESHOLD` stars, or whose
answer contradicts a verified fact of the registry (a critical error found by the background fact
check, `feedback.answer_facts`; rated or not), that no reviewer has corrected or dismissed yet: lowest
stars first (an unrated answer with a critical error before every rated one), then newest first. Each
item says why it is there (`reason`) and lists the figures the check found (`fact_findings`).

A reviewer either corrects an item (the right answer, why the model's was wrong, the lesson: the
error-correction record training learns from) or dismisses it with a reason. Both take a lock on
the interaction's row first (a row lock on PostgreSQL, the write lock on SQLite), so of two reviewers
acting on one item at once exactly one succeeds and the other is told it left the queue.

A correction a retrain could not use (it fails a dataset check) is rejected with the reason
(`reject_corrections`): training no longer reads it, and its interaction is back in the queue showing
the reason and the rejected text until a reviewer corrects it again (or dismisses it).

`corrections_after` is how the retrain pipeline collects "corrections since the last adapter version".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import Field
from sqlalchemy import ColumnElement, exists, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from database.models import Correction, Interaction, Rating, ReviewDismissal, utcnow
from feedback.records import REVIEW_THRESHOLD
from feedback.text import storable as _storable
from knowledge.corrections import DATABASE, CorrectionRecord
from knowledge.records import CATEGORIES

MAX_PAGE = 100
"""The most items one page of the queue holds."""


@dataclass(frozen=True)
class RejectedCorrection:
    """An earlier correction of the item that a retrain left out: what it said and why it was left out."""

    correction_id: int
    correct_answer: str
    why_wrong: str
    lesson: str
    reason: Annotated[str, Field(description="The dataset rule it broke and what was found.")]
    rejected_at: datetime


@dataclass(frozen=True)
class QueueItem:
    """A low-rated interaction, or one whose answer contradicts a verified fact, as the reviewer sees
    it (the review API's item, as it is)."""

    interaction_id: str
    created_at: datetime
    messages: Annotated[list[dict[str, Any]], Field(description="The conversation the answer replied to.")]
    query: Annotated[str, Field(description="Its last user message: the question a correction answers.")]
    answer: str
    variant: Annotated[str, Field(description="`base` or `tuned`.")]
    target: Annotated[
        str | None, Field(description="The router's target: `base`, `live`, `canary` or `pinned`.")
    ]
    adapter: Annotated[
        str | None, Field(description="`NAME@VERSION` of the adapter that answered; null for the base.")
    ]
    stars: Annotated[int | None, Field(description="Its current rating; null when nobody rated it.")]
    comment: str | None
    rejected: Annotated[
        RejectedCorrection | None,
        Field(description="The newest correction of it a retrain left out; null when there is none."),
    ] = None
    reason: Annotated[
        Literal["low_rating", "fact_error"],
        Field(
            description="Why it is in the queue: `fact_error` when its answer contradicts a verified fact "
            "of the registry (rated or not), else `low_rating` (rated under 3 stars)."
        ),
    ] = "low_rating"
    fact_critical: Annotated[
        int, Field(description="Figures of the answer that contradict a verified registry fact.")
    ] = 0
    fact_findings: Annotated[
        list[dict[str, Any]],
        Field(
            description="Every figure the background fact check flagged: `severity` (`critical` or "
            "`warning`), `stated` (the figure), `facts` (id, statement, value, source, verified), "
            "`message`."
        ),
    ] = dataclass_field(default_factory=list)


@dataclass(frozen=True)
class QueuePage:
    """One page of the queue and how many items the whole queue holds."""

    items: list[QueueItem]
    total: int
    limit: int
    offset: int


class UnknownItemError(LookupError):
    """No interaction has this id."""


class NotInQueueError(ValueError):
    """The interaction is not (or no longer) in the queue; `reason` says why: `corrected`,
    `dismissed` or `not_low_rated` (unrated, or rated `REVIEW_THRESHOLD` stars or more, and no
    critical fact error)."""

    def __init__(self, interaction_id: str, reason: str) -> None:
        super().__init__(f"{interaction_id}: {reason}")
        self.interaction_id, self.reason = interaction_id, reason


def last_user_message(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message of a stored conversation ("" when there is none)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
            return str(content or "")
    return ""


def _aware(moment: datetime) -> datetime:
    """SQLite hands timestamps back without a zone; they are UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


_USABLE = Correction.rejected_at.is_(None)
_CORRECTED = exists().where(Correction.interaction_id == Interaction.id, _USABLE)
_DISMISSED = exists().where(ReviewDismissal.interaction_id == Interaction.id)
_FACT_ERROR = Interaction.fact_critical > 0
_IN_QUEUE: tuple[ColumnElement[bool], ...] = (
    or_(Rating.stars < REVIEW_THRESHOLD, _FACT_ERROR),
    ~_CORRECTED,
    ~_DISMISSED,
)


def _item(
    interaction: Interaction, rating: Rating | None, rejected: RejectedCorrection | None = None
) -> QueueItem:
    adapter = (
        f"{interaction.adapter_name}@{interaction.adapter_version}"
        if interaction.adapter_name and interaction.adapter_version
        else interaction.adapter_name
    )
    return QueueItem(
        interaction_id=interaction.id,
        created_at=_aware(interaction.created_at),
        messages=list(interaction.messages),
        query=last_user_message(interaction.messages),
        answer=interaction.answer,
        variant=interaction.variant,
        target=interaction.target,
        adapter=adapter,
        stars=rating.stars if rating is not None else None,
        comment=rating.comment if rating is not None else None,
        rejected=rejected,
        reason="fact_error" if interaction.fact_critical else "low_rating",
        fact_critical=interaction.fact_critical or 0,
        fact_findings=list(interaction.fact_findings or []),
    )


def _rejected(session: Session, interaction_ids: list[str]) -> dict[str, RejectedCorrection]:
    """The newest rejected correction of each of these interactions."""
    rows = session.scalars(
        select(Correction)
        .where(Correction.interaction_id.in_(interaction_ids), Correction.rejected_at.is_not(None))
        .order_by(Correction.id)
    )
    return {
        str(row.interaction_id): RejectedCorrection(
            correction_id=row.id,
            correct_answer=row.correct_answer,
            why_wrong=row.why_wrong or "",
            lesson=row.lesson or "",
            reason=row.rejected_reason or "",
            rejected_at=_aware(row.rejected_at or row.created_at),
        )
        for row in rows
    }


def list_queue(sessions: sessionmaker[Session], *, limit: int = 50, offset: int = 0) -> QueuePage:
    """One page of the queue (lowest stars first, unrated ones with a critical fact error before
    them, then newest first) and the queue's size."""
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise ValueError(f"limit must be 1-{MAX_PAGE} and offset 0 or more")
    joined = (
        select(Interaction, Rating)
        .outerjoin(Rating, Rating.interaction_id == Interaction.id)
        .where(*_IN_QUEUE)
    )
    with sessions() as session:
        total = session.scalar(select(func.count()).select_from(joined.subquery())) or 0
        rows = session.execute(
            joined.order_by(
                func.coalesce(Rating.stars, 0), Interaction.created_at.desc(), Interaction.id.desc()
            )
            .limit(limit)
            .offset(offset)
        ).all()
        rejected = _rejected(session, [interaction.id for interaction, _ in rows])
        items = [_item(interaction, rating, rejected.get(interaction.id)) for interaction, rating in rows]
    return QueuePage(items, total, limit, offset)


def _queue_state(session: Session, interaction_id: str) -> tuple[Interaction, Rating | None]:
    """The interaction and its rating when it is in the queue; raises why not otherwise."""
    interaction = session.get(Interaction, interaction_id)
    if interaction is None:
        raise UnknownItemError(interaction_id)
    if session.scalar(select(exists().where(Correction.interaction_id == interaction_id, _USABLE))):
        raise NotInQueueError(interaction_id, "corrected")
    if session.get(ReviewDismissal, interaction_id) is not None:
        raise NotInQueueError(interaction_id, "dismissed")
    rating = session.scalar(select(Rating).where(Rating.interaction_id == interaction_id))
    low_rated = rating is not None and rating.stars < REVIEW_THRESHOLD
    if not low_rated and not interaction.fact_critical:
        raise NotInQueueError(interaction_id, "not_low_rated")
    return interaction, rating


def get_item(sessions: sessionmaker[Session], interaction_id: str) -> QueueItem:
    """One item of the queue; raises `UnknownItemError` or `NotInQueueError`."""
    with sessions() as session:
        interaction, rating = _queue_state(session, interaction_id)
        return _item(interaction, rating, _rejected(session, [interaction_id]).get(interaction_id))


def _lock(session: Session, interaction_id: str) -> None:
    """Take the interaction's row for this transaction with a write that changes nothing: a row lock
    on PostgreSQL and the database's write lock on SQLite (where `SELECT ... FOR UPDATE` does nothing
    and reads do not start a transaction), so whatever is read after it is what other writers
    committed. Raises `UnknownItemError` when no row has the id."""
    locked = session.execute(
        update(Interaction)
        .where(Interaction.id == interaction_id)
        .values(variant=Interaction.variant)
        .execution_options(synchronize_session=False)
    )
    if locked.rowcount == 0:  # type: ignore[attr-defined]
        raise UnknownItemError(interaction_id)


def _stored(row: Correction) -> CorrectionRecord:
    """A stored correction as the one correction record (a category no longer known reads as none)."""
    return CorrectionRecord(
        query=row.query,
        model_answer_wrong=row.model_answer_wrong,
        correct_answer=row.correct_answer,
        why_wrong=row.why_wrong or "",
        lesson=row.lesson or "",
        category=row.category if row.category in CATEGORIES else None,
        origin=f"{DATABASE}{row.id}",
        check_override=row.check_override,
        interaction_id=row.interaction_id,
        reviewer=row.reviewer or "",
        created_at=_aware(row.created_at),
    )


def correct(
    sessions: sessionmaker[Session],
    *,
    interaction_id: str,
    correct_answer: str,
    why_wrong: str,
    lesson: str,
    reviewer: str,
    classify: Callable[[str], str | None] | None = None,
    check_override: str | None = None,
) -> CorrectionRecord:
    """Store a reviewer's correction of a queued answer; the query is the conversation's last user
    message and `classify(query)` (when given) tells its category; `check_override` is the reviewer's
    reason for keeping it although it fails a dataset check. Raises `UnknownItemError`, or
    `NotInQueueError` when the item was corrected or dismissed meanwhile (or is not low-rated)."""
    with sessions.begin() as session:
        _lock(session, interaction_id)
        interaction, _ = _queue_state(session, interaction_id)
        query = last_user_message(interaction.messages)
        row = Correction(
            interaction_id=interaction_id,
            query=_storable(query),
            model_answer_wrong=interaction.answer,
            correct_answer=_storable(correct_answer),
            why_wrong=_storable(why_wrong),
            lesson=_storable(lesson),
            category=classify(query) if classify is not None else None,
            reviewer=reviewer,
            created_at=utcnow(),
            check_override=_storable(check_override) if check_override is not None else None,
        )
        session.add(row)
        session.flush()
        return _stored(row)


def dismiss(sessions: sessionmaker[Session], *, interaction_id: str, reason: str, reviewer: str) -> None:
    """Take a queued answer out of the queue without a correction, saying why. Raises like `correct`."""
    with sessions.begin() as session:
        _lock(session, interaction_id)
        _queue_state(session, interaction_id)
        session.add(
            ReviewDismissal(
                interaction_id=interaction_id,
                reviewer=reviewer,
                reason=_storable(reason),
                created_at=utcnow(),
            )
        )


def corrections_after(sessions: sessionmaker[Session], after_id: int | None) -> list[CorrectionRecord]:
    """Every correction with an id above `after_id` (all of them for None) that no retrain rejected, in
    id order: the ones a new adapter version has not learned from yet, given its registry entry's
    `last_correction_id`."""
    query = select(Correction).where(_USABLE).order_by(Correction.id)
    if after_id is not None:
        query = query.where(Correction.id > after_id)
    with sessions() as session:
        return [_stored(row) for row in session.scalars(query)]


def reject_corrections(sessions: sessionmaker[Session], reasons: Mapping[int, str]) -> list[int]:
    """Reject corrections a retrain left out, each with its reason (the record and the rule), so that
    training skips them and their items come back to the queue; returns the ids rejected now (one
    already rejected keeps its first reason)."""
    if not reasons:
        return []
    with sessions.begin() as session:
        rows = session.scalars(
            select(Correction)
            .where(Correction.id.in_(list(reasons)), _USABLE)
            .order_by(Correction.id)
            .with_for_update()
        ).all()
        now = utcnow()
        for row in rows:
            row.rejected_reason, row.rejected_at = _storable(reasons[row.id]), now
        return [row.id for row in rows]


def import_corrections(
    sessions: sessionmaker[Session], records: Sequence[CorrectionRecord], reviewer: str
) -> int:
    """Insert corrections read from a file (`zantara dataset corrections import`), leaving out those
    whose query and correct answer are stored already (text made storable, as every correction is);
    returns how many were inserted (committed)."""
    with sessions.begin() as session:
        existing = set(session.execute(select(Correction.query, Correction.correct_answer)).tuples())
        added = 0
        for record in records:
            if (record.query, record.correct_answer) in existing:
                continue
            existing.add((record.query, record.correct_answer))
            session.add(
                Correction(
                    query=_storable(record.query),
                    model_answer_wrong=_storable(record.model_answer_wrong),
                    correct_answer=_storable(record.correct_answer),
                    why_wrong=_storable(record.why_wrong),
                    lesson=_storable(record.lesson),
                    category=record.category,
                    reviewer=reviewer,
                )
            )
            added += 1
        return added
