"""Writes and reads of interactions and ratings.

Every write commits before it returns, so a caller acknowledges only what is durably stored. The writes
are idempotent so that a replay (from the local spool, after a crash between commit and clean-up) is
harmless: an interaction is inserted only if its id is new, and ratings are applied in their order,
the last one winning. They take batches so that many concurrent callers share one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from feedback.models import Interaction, Rating, utcnow

REVIEW_THRESHOLD = 3
"""Ratings under this many stars put the interaction in the review queue."""


@dataclass(frozen=True)
class InteractionRecord:
    """Everything stored about one served chat completion."""

    id: str
    user_hash: str | None
    model_requested: str
    routed: bool
    variant: str
    adapter_name: str | None
    adapter_version: str | None
    messages: list[dict[str, Any]]
    answer: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    ttft_s: float | None
    params: dict[str, Any]
    streamed: bool
    created_at: datetime = field(default_factory=utcnow)

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (for the spool)."""
        return asdict(self) | {"created_at": self.created_at.isoformat()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InteractionRecord:
        """The record `to_json` wrote."""
        return cls(**(data | {"created_at": datetime.fromisoformat(data["created_at"])}))


@dataclass(frozen=True)
class RatingWrite:
    """A rating to store: the latest one for an interaction replaces any earlier one."""

    interaction_id: str
    stars: int
    comment: str | None
    rated_at: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        if not 1 <= self.stars <= 5:
            raise ValueError(f"rating must be 1-5, got {self.stars}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (for the spool)."""
        return asdict(self) | {"rated_at": self.rated_at.isoformat()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RatingWrite:
        """The write `to_json` wrote."""
        return cls(**(data | {"rated_at": datetime.fromisoformat(data["rated_at"])}))


@dataclass(frozen=True)
class StoredRating:
    """A rating as committed."""

    interaction_id: str
    stars: int
    comment: str | None
    variant: str
    replaced: int | None
    needs_review: bool


class UnknownInteractionError(LookupError):
    """No interaction has this id."""


def _insert_new(session: Session, records: Sequence[InteractionRecord]) -> None:
    """Insert the interactions whose id is not stored yet (one statement, idempotent)."""
    if not records:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    rows = [asdict(r) for r in {r.id: r for r in records}.values()]
    session.execute(insert(Interaction).on_conflict_do_nothing(index_elements=["id"]), rows)


def save_interactions(sessions: sessionmaker[Session], records: Sequence[InteractionRecord]) -> None:
    """Store interactions (committed on return); ids already stored are left as they are."""
    with sessions.begin() as session:
        _insert_new(session, records)


def save_interaction(sessions: sessionmaker[Session], record: InteractionRecord) -> None:
    """Store one interaction (committed on return; idempotent)."""
    save_interactions(sessions, [record])


def apply_ratings(
    sessions: sessionmaker[Session],
    writes: Sequence[RatingWrite],
    interactions: Sequence[InteractionRecord] = (),
) -> list[StoredRating | None]:
    """Apply ratings in order in one transaction, first inserting `interactions` not stored yet (those
    known only to this replica). Returns, per write, what was stored, or None for an unknown id."""
    with sessions.begin() as session:
        _insert_new(session, interactions)
        ids = sorted({w.interaction_id for w in writes})
        variants: dict[str, str] = dict(
            session.execute(
                select(Interaction.id, Interaction.variant)
                .where(Interaction.id.in_(ids))
                .order_by(Interaction.id)
                .with_for_update()
            ).all()
        )
        existing = {
            key: (rating_id, stars)
            for rating_id, key, stars in session.execute(
                select(Rating.id, Rating.interaction_id, Rating.stars).where(Rating.interaction_id.in_(ids))
            )
        }
        stars_now = {key: stars for key, (_, stars) in existing.items()}
        latest: dict[str, RatingWrite] = {}
        first_at: dict[str, datetime] = {}
        results: list[StoredRating | None] = []
        for write in writes:
            key = write.interaction_id
            if key not in variants:
                results.append(None)
                continue
            replaced = stars_now.get(key)
            stars_now[key] = write.stars
            latest[key] = write
            first_at.setdefault(key, write.rated_at)
            needs_review = write.stars < REVIEW_THRESHOLD
            results.append(
                StoredRating(key, write.stars, write.comment, variants[key], replaced, needs_review)
            )
        new = [
            {
                "interaction_id": k,
                "stars": w.stars,
                "comment": w.comment,
                "created_at": first_at[k],
                "updated_at": w.rated_at,
            }
            for k, w in latest.items()
            if k not in existing
        ]
        changed = [
            {"id": existing[k][0], "stars": w.stars, "comment": w.comment, "updated_at": w.rated_at}
            for k, w in latest.items()
            if k in existing
        ]
        if new:
            session.execute(insert(Rating), new)
        if changed:
            session.execute(update(Rating), changed)
        if latest:
            session.execute(
                update(Interaction),
                [{"id": k, "needs_review": w.stars < REVIEW_THRESHOLD} for k, w in latest.items()],
            )
        return results


def rate_interaction(
    sessions: sessionmaker[Session], *, interaction_id: str, stars: int, comment: str | None
) -> StoredRating:
    """Store or replace the rating of an interaction and flag it for review under 3 stars."""
    (stored,) = apply_ratings(sessions, [RatingWrite(interaction_id, stars, comment)])
    if stored is None:
        raise UnknownInteractionError(interaction_id)
    return stored


def get_interaction(sessions: sessionmaker[Session], interaction_id: str) -> Interaction | None:
    """One interaction with its rating, or None."""
    with sessions() as session:
        interaction = session.get(Interaction, interaction_id)
        if interaction is not None:
            _ = interaction.rating
        return interaction


def review_queue(sessions: sessionmaker[Session], limit: int = 100) -> list[Interaction]:
    """Interactions flagged for review (rated under 3 stars), newest first."""
    with sessions() as session:
        rows = session.scalars(
            select(Interaction)
            .where(Interaction.needs_review.is_(True))
            .order_by(Interaction.created_at.desc())
            .limit(limit)
        ).all()
        for row in rows:
            _ = row.rating
        return list(rows)
