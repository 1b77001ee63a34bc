"""Only the API key that received an answer may rate it, on every path a rating takes: the portable
statements (SQLite), PostgreSQL's two statements on both kinds of connection, and the writer's buffer."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from database.engine import DirectConnections
from database.models import Rating
from feedback import postgres_writes
from feedback.records import RatingWrite, StoredRating, UnknownInteractionError
from feedback.store import apply_ratings, save_interactions
from feedback.writer import FeedbackWriter
from tests.database import interaction_record

OWNER, OTHER = "a" * 64, "b" * 64


def _writes() -> list[RatingWrite]:
    """In one batch: the owner rates `mine`, another key re-rates it, an open rating of `open`, and
    two keys rate `open` after it (an answer served while `/v1` was open takes any rating)."""
    first = RatingWrite("mine", 2, "salah", key_hash=OWNER)
    later = [first.rated_at + timedelta(seconds=n) for n in range(1, 5)]
    return [
        first,
        RatingWrite("mine", 1, "bukan punya saya", later[0], key_hash=OTHER),
        RatingWrite("open", 3, None, later[1]),
        RatingWrite("open", 5, None, later[2], key_hash=OTHER),
        RatingWrite("open", 4, None, later[3], key_hash=OWNER),
    ]


def _summary(got: list[StoredRating | None]) -> list[tuple[str, int, int | None] | None]:
    return [(s.interaction_id, s.stars, s.replaced) if s else None for s in got]


EXPECTED = [("mine", 2, None), None, ("open", 3, None), ("open", 5, 3), ("open", 4, 5)]


def _held(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as session:
        return {r.interaction_id: r.stars for r in session.scalars(select(Rating))}


async def test_a_key_cannot_rate_another_keys_answer(
    sessions: sessionmaker[Session], direct: DirectConnections | None
) -> None:
    save_interactions(
        sessions, [replace(interaction_record("mine"), key_hash=OWNER), interaction_record("open")]
    )
    if direct is None:
        got = apply_ratings(sessions, _writes())
    else:
        async with direct.connection() as connection:
            got = await postgres_writes.apply_ratings(connection, _writes())
    assert _summary(got) == EXPECTED
    assert _held(sessions) == {"mine": 2, "open": 4}
    (refused,) = apply_ratings(sessions, [RatingWrite("mine", 5, None, key_hash=OTHER)])
    (anonymous,) = apply_ratings(sessions, [RatingWrite("mine", 5, None)])
    assert refused is None and anonymous is None and _held(sessions)["mine"] == 2


async def test_the_owner_is_checked_when_the_interaction_comes_with_the_ratings(
    sessions: sessionmaker[Session], direct: DirectConnections | None
) -> None:
    """A replay (or a rating of an answer still in memory) brings the interaction along."""
    records = [replace(interaction_record("mine"), key_hash=OWNER), interaction_record("open")]
    if direct is None:
        got = apply_ratings(sessions, _writes(), records)
    else:
        async with direct.connection() as connection:
            got = await postgres_writes.apply_ratings(connection, _writes(), records)
    assert _summary(got) == EXPECTED
    assert _held(sessions) == {"mine": 2, "open": 4}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_answer_in_the_writers_buffer_takes_only_its_owners_rating(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    writer = FeedbackWriter(sessions, tmp_path / "spool.sqlite3")  # not started: the answer stays buffered
    writer.record(replace(interaction_record("mine"), key_hash=OWNER))
    with pytest.raises(UnknownInteractionError):
        await writer.rate(RatingWrite("mine", 1, None, key_hash=OTHER))
    with pytest.raises(UnknownInteractionError):
        await writer.rate(RatingWrite("mine", 1, None))
    assert writer.buffered == 1 and _held(sessions) == {}
    outcome = await writer.rate(RatingWrite("mine", 4, None, key_hash=OWNER))
    assert outcome.stored is not None and outcome.stored.stars == 4
    await writer.close()
    assert _held(sessions) == {"mine": 4}
