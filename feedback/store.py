"""Writes of interactions, ratings and dead letters (the service's hot path; reads live beside their
users: `feedback.review_queue`, `feedback.canary_stats`, ...).

Every write commits before it returns, so a caller acknowledges only what is durably stored. The writes
are idempotent so that a replay (from the local spool, after a crash between commit and clean-up) is
harmless: an interaction is inserted only if its id is new, and ratings are applied in their order,
the last one winning. They take batches so that many concurrent callers share one transaction.

The statements here are SQLAlchemy Core, for SQLite; on PostgreSQL the writes are the statements of
`feedback.postgres_writes`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, Table, bindparam, func, insert, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session, sessionmaker

from database.models import DeadLetter, Interaction, Rating, utcnow
from feedback import postgres_writes
from feedback.records import (
    InteractionRecord,
    RatedAnswer,
    RatingBatch,
    RatingWrite,
    StoredRating,
)

INTERACTIONS: Table = Interaction.__table__  # type: ignore[assignment]
RATINGS: Table = Rating.__table__  # type: ignore[assignment]
DEAD_LETTERS: Table = DeadLetter.__table__  # type: ignore[assignment]

_CURRENT = (
    select(
        INTERACTIONS.c.id,
        INTERACTIONS.c.variant,
        RATINGS.c.id.label("rating_id"),
        RATINGS.c.stars,
        INTERACTIONS.c.adapter_name,
        INTERACTIONS.c.adapter_version,
        INTERACTIONS.c.target,
        INTERACTIONS.c.key_hash,
    )
    .outerjoin(RATINGS, RATINGS.c.interaction_id == INTERACTIONS.c.id)
    .where(INTERACTIONS.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(INTERACTIONS.c.id)
)
"""The interactions rated, each with its current rating if any and the key it went to (SQLite lets one
writer at a time in)."""

_CHANGE_RATING = (
    update(RATINGS)
    .where(RATINGS.c.id == bindparam("rating_id"))
    .values(stars=bindparam("new_stars"), comment=bindparam("new_comment"), updated_at=bindparam("rated_at"))
)


def insert_interactions(connection: Connection, records: Sequence[InteractionRecord]) -> None:
    """Insert the interactions whose id is not stored yet, in the transaction open on `connection`
    (one statement, idempotent)."""
    if connection.dialect.name == "postgresql":
        postgres_writes.insert_interactions_on(connection, records)
    elif records:
        rows = [asdict(r) for r in {r.id: r for r in records}.values()]
        connection.execute(sqlite.insert(INTERACTIONS).on_conflict_do_nothing(index_elements=["id"]), rows)


def save_interactions(sessions: sessionmaker[Session], records: Sequence[InteractionRecord]) -> None:
    """Store interactions (committed on return); ids already stored are left as they are."""
    with sessions.begin() as session:
        insert_interactions(session.connection(), records)


def apply_ratings(
    sessions: sessionmaker[Session],
    writes: Sequence[RatingWrite],
    interactions: Sequence[InteractionRecord] = (),
) -> list[StoredRating | None]:
    """Apply ratings in order in one transaction, first inserting `interactions` not stored yet (those
    known only to this replica). Returns, per write, what was stored, or None for an unknown id."""
    batch = RatingBatch.of(writes)
    with sessions.begin() as session:
        connection = session.connection()
        insert_interactions(connection, interactions)
        if connection.dialect.name == "postgresql":
            return batch.outcomes(postgres_writes.upsert_ratings_on(connection, batch))
        return batch.outcomes(_upsert_ratings_portable(connection, batch))


def _upsert_ratings_portable(connection: Connection, batch: RatingBatch) -> dict[str, RatedAnswer]:
    """SQLAlchemy Core, not the ORM: the ORM's bulk machinery cost more CPU than the database."""
    if not batch.latest:
        return {}
    found = connection.execute(_CURRENT, {"ids": sorted({key for key, _ in batch.latest})}).all()
    chosen = batch.chosen({row.id: row.key_hash for row in found})
    existing = {row.id: row.rating_id for row in found if row.rating_id is not None}
    new = [
        {
            "interaction_id": key,
            "stars": row.write.stars,
            "comment": row.write.comment,
            "created_at": row.first_at,
            "updated_at": row.write.rated_at,
        }
        for key, row in chosen.items()
        if key not in existing
    ]
    changed = [
        {
            "rating_id": existing[key],
            "new_stars": row.write.stars,
            "new_comment": row.write.comment,
            "rated_at": row.write.rated_at,
        }
        for key, row in chosen.items()
        if key in existing
    ]
    if new:
        connection.execute(insert(RATINGS), new)
    if changed:
        connection.execute(_CHANGE_RATING, changed)
    return {
        row.id: RatedAnswer(
            row.variant, row.adapter_name, row.adapter_version, row.target, row.stars, row.key_hash
        )
        for row in found
    }


@dataclass(frozen=True)
class DeadLetterRecord:
    """A write the database refused for its data, set aside with the reason (`DeadLetter`)."""

    kind: str
    key: str
    payload: dict[str, Any]
    error: str
    sqlstate: str | None
    source: str
    """`writer` (refused on its way from memory) or `spool` (refused on replay)."""

    def row(self) -> dict[str, Any]:
        """The `dead_letters` row: the payload as JSON text, every character escaped to ASCII (a NUL
        becomes the six characters `\\u0000`), so that whatever the record held can be stored."""
        return asdict(self) | {"payload": json.dumps(self.payload), "created_at": utcnow()}


def save_dead_letters(sessions: sessionmaker[Session], letters: Sequence[DeadLetterRecord]) -> None:
    """Store refused writes in `dead_letters` (committed on return)."""
    if letters:
        with sessions.begin() as session:
            session.execute(insert(DEAD_LETTERS), [letter.row() for letter in letters])


def count_dead_letters(sessions: sessionmaker[Session]) -> int:
    """How many refused writes `dead_letters` holds."""
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(DEAD_LETTERS)) or 0
