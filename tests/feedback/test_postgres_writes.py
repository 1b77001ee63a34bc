"""PostgreSQL's one-statement writes (`feedback.postgres_writes`), on the asyncio connections the service
uses and on SQLAlchemy's: the same outcomes as the portable statements SQLite runs, and a history that
adds up when several writers rate the same answers at once (what the satisfaction metrics rely on)."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from database.engine import DirectConnections
from database.models import Interaction, Rating
from feedback import postgres_writes
from feedback.records import RatingWrite, StoredRating
from feedback.review_queue import list_queue
from feedback.store import apply_ratings, save_interactions
from tests.database import interaction_record

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


@pytest.fixture
def pg(direct: DirectConnections | None) -> DirectConnections:
    """The direct connections (this module runs on PostgreSQL only)."""
    assert direct is not None
    return direct


def _batch() -> list[RatingWrite]:
    """Two ratings of `a` (the second wins), one of `b`, one of an unknown answer."""
    first = RatingWrite("a", 2, "salah")
    return [
        first,
        RatingWrite("b", 4, None),
        RatingWrite("nope", 1, None),
        RatingWrite("a", 5, "sudah benar", first.rated_at + timedelta(seconds=1)),
    ]


def _held(sessions: sessionmaker[Session]) -> dict[str, tuple[int, bool]]:
    """Each rated answer's stars and whether the review queue holds it."""
    with sessions() as session:
        rows = session.execute(select(Rating.interaction_id, Rating.stars).join(Interaction)).all()
    queued = {item.interaction_id for item in list_queue(sessions).items}
    return {key: (stars, key in queued) for key, stars in rows}


async def test_direct_and_sqlalchemy_paths_store_the_same(
    sessions: sessionmaker[Session], pg: DirectConnections
) -> None:
    save_interactions(sessions, [interaction_record("b", "base")])
    async with pg.connection() as connection:
        # "a" is known only to this replica: it comes with the batch
        got = await postgres_writes.apply_ratings(connection, _batch(), [interaction_record("a")])
    assert [(s.interaction_id, s.stars, s.replaced, s.needs_review) if s else None for s in got] == [
        ("a", 2, None, True),
        ("b", 4, None, False),
        None,
        ("a", 5, 2, False),
    ]
    assert got[0] is not None and (got[0].variant, got[0].adapter) == ("tuned", "zantara-demo@v1")
    assert _held(sessions) == {"a": (5, False), "b": (4, False)}
    with sessions() as session:
        rating = session.scalars(select(Rating).where(Rating.interaction_id == "a")).one()
        kept = (rating.comment, rating.updated_at - rating.created_at)
        assert kept == ("sudah benar", timedelta(seconds=1))

    again = apply_ratings(sessions, [RatingWrite("a", 1, None), RatingWrite("b", 4, None)])
    assert [(s.stars, s.replaced, s.needs_review) for s in again if s] == [(1, 5, True), (4, 4, False)]
    assert _held(sessions) == {"a": (1, True), "b": (4, False)}


async def test_a_rating_never_rewrites_its_interaction_row(
    sessions: sessionmaker[Session], pg: DirectConnections
) -> None:
    save_interactions(sessions, [interaction_record("a"), interaction_record("b")])

    def versions() -> dict[str, str]:
        with sessions() as session:
            return dict(session.execute(text("SELECT id, xmin::text FROM interactions")).all())  # type: ignore[arg-type]

    before = versions()
    async with pg.connection() as connection:
        batch = [RatingWrite("a", 4, None), RatingWrite("b", 1, None)]
        await postgres_writes.apply_ratings(connection, batch)
    after = versions()
    assert after == before, "the interaction (a wide row with many indexes) is only read"
    assert _held(sessions) == {"a": (4, False), "b": (1, True)}


async def test_concurrent_writers_of_the_same_answers_keep_a_history_that_adds_up(
    sessions: sessionmaker[Session], pg: DirectConnections
) -> None:
    """Four writers (four replicas' connections) rate the same three answers in random orders. Each
    stored rating reports the stars it replaced; summed over every outcome, stars added minus stars
    replaced must equal what the database holds, and each answer must have been new exactly once."""
    answers = ["a", "b", "c"]
    save_interactions(sessions, [interaction_record(key) for key in answers])
    outcomes: list[StoredRating] = []
    rng = random.Random(7)

    async def writer() -> None:
        async with pg.connection() as connection:
            for _ in range(60):
                order = rng.sample(answers, k=len(answers))
                batch = [RatingWrite(key, rng.randint(1, 5), None) for key in order]
                outcomes.extend(s for s in await postgres_writes.apply_ratings(connection, batch) if s)

    await asyncio.gather(*(writer() for _ in range(4)))
    held = _held(sessions)
    for key in answers:
        mine = [s for s in outcomes if s.interaction_id == key]
        assert sum(s.replaced is None for s in mine) == 1, key
        assert sum(s.stars for s in mine) - sum(s.replaced or 0 for s in mine) == held[key][0], key
