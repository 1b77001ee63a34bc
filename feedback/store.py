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

from sqlalchemy import Connection, Table, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from feedback.models import Interaction, Rating, utcnow

REVIEW_THRESHOLD = 3
"""Ratings under this many stars put the interaction in the review queue."""

INTERACTIONS: Table = Interaction.__table__  # type: ignore[assignment]
RATINGS: Table = Rating.__table__  # type: ignore[assignment]

_CURRENT = (
    select(
        INTERACTIONS.c.id,
        INTERACTIONS.c.variant,
        RATINGS.c.id,
        RATINGS.c.stars,
        INTERACTIONS.c.adapter_name,
        INTERACTIONS.c.adapter_version,
        INTERACTIONS.c.target,
    )
    .outerjoin(RATINGS, RATINGS.c.interaction_id == INTERACTIONS.c.id)
    .where(INTERACTIONS.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(INTERACTIONS.c.id)
    .with_for_update(of=INTERACTIONS)
)
"""The interactions rated, each with its current rating if any; their rows locked in id order, so that
replicas rating the same answers at once wait for each other instead of deadlocking."""

_CHANGE_RATING = (
    update(RATINGS)
    .where(RATINGS.c.id == bindparam("rating_id"))
    .values(stars=bindparam("new_stars"), comment=bindparam("new_comment"), updated_at=bindparam("rated_at"))
)
_FLAG_REVIEW = (
    update(INTERACTIONS)
    .where(INTERACTIONS.c.id.in_(bindparam("rated", expanding=True)))
    .values(needs_review=INTERACTIONS.c.id.in_(bindparam("low", expanding=True)))
)
"""Flags the interactions rated under `REVIEW_THRESHOLD` for review and clears the others: one
statement, not one per interaction."""


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
    target: str | None = None
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
    adapter: str = ""
    target: str = ""


def adapter_key(name: str | None, version: str | None) -> str:
    """`NAME@VERSION` of the adapter that answered, "" for the base model (the metrics' label value)."""
    return f"{name}@{version}" if name and version else ""


class UnknownInteractionError(LookupError):
    """No interaction has this id."""


def insert_interactions(connection: Connection, records: Sequence[InteractionRecord]) -> None:
    """Insert the interactions whose id is not stored yet, in the transaction open on `connection`
    (one statement, idempotent)."""
    if not records:
        return
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    rows = [asdict(r) for r in {r.id: r for r in records}.values()]
    connection.execute(insert(INTERACTIONS).on_conflict_do_nothing(index_elements=["id"]), rows)


def save_interactions(sessions: sessionmaker[Session], records: Sequence[InteractionRecord]) -> None:
    """Store interactions (committed on return); ids already stored are left as they are."""
    with sessions.begin() as session:
        insert_interactions(session.connection(), records)


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
        return apply_ratings_on(session.connection(), writes, interactions)


def apply_ratings_on(
    connection: Connection,
    writes: Sequence[RatingWrite],
    interactions: Sequence[InteractionRecord] = (),
) -> list[StoredRating | None]:
    """`apply_ratings` inside the transaction open on `connection` (the caller commits).

    SQLAlchemy Core, not the ORM: this runs once per group-committed batch on the hot path of
    `POST /v1/feedback`, and the ORM's bulk machinery cost more CPU than the database."""
    insert_interactions(connection, interactions)
    ids = sorted({w.interaction_id for w in writes})
    found = connection.execute(_CURRENT, {"ids": ids}).all()
    variants = {row.id: row.variant for row in found}
    served = {row.id: (adapter_key(row.adapter_name, row.adapter_version), row.target or "") for row in found}
    existing = {row.id: (row[2], row.stars) for row in found if row[2] is not None}
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
            StoredRating(key, write.stars, write.comment, variants[key], replaced, needs_review, *served[key])
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
        {
            "rating_id": existing[k][0],
            "new_stars": w.stars,
            "new_comment": w.comment,
            "rated_at": w.rated_at,
        }
        for k, w in latest.items()
        if k in existing
    ]
    if new:
        connection.execute(insert(RATINGS), new)
    if changed:
        connection.execute(_CHANGE_RATING, changed)
    if latest:
        low = [k for k, w in latest.items() if w.stars < REVIEW_THRESHOLD]
        connection.execute(_FLAG_REVIEW, {"rated": list(latest), "low": low})
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
