"""The feedback writer with a database that goes away: nothing acknowledged is lost, nothing doubles,
the last rating wins, and what waits survives a restart (the spool is a real fsynced SQLite file)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker

from database.engine import DirectConnections, make_session_factory
from database.models import Interaction, Rating
from feedback.records import RatingWrite, StoredRating, UnknownInteractionError
from feedback.spool import Entry, Spool
from feedback.writer import FeedbackWriter
from tests.database import UNREACHABLE_DATABASE_URL, interaction_record


@pytest.fixture
def unreachable() -> Iterator[sessionmaker[Session]]:
    """Sessions on a PostgreSQL port where nothing listens (port 1): every connection is refused."""
    engine = create_engine(UNREACHABLE_DATABASE_URL)
    yield make_session_factory(engine)
    engine.dispose()


class Counted:
    """Collects the ratings the writer reports as committed (what the metrics count)."""

    def __init__(self) -> None:
        self.stored: list[StoredRating] = []

    def __call__(self, stored: StoredRating) -> None:
        self.stored.append(stored)


@pytest.fixture
async def writer(sessions: sessionmaker[Session], tmp_path: Path) -> AsyncIterator[FeedbackWriter]:
    """A writer committing in worker threads through `sessions` (whose bind a test can swap for an
    unreachable one)."""
    writer = FeedbackWriter(sessions, tmp_path / "spool.sqlite3", retry_s=0.05)
    await writer.start()
    yield writer
    await writer.close()


def _stored(sessions: sessionmaker[Session]) -> tuple[list[str], dict[str, int]]:
    with sessions() as session:
        ids = sorted(session.scalars(select(Interaction.id)))
        ratings = {r.interaction_id: r.stars for r in session.scalars(select(Rating))}
    return ids, ratings


async def _until(writer: FeedbackWriter, done: Callable[[], bool]) -> None:
    """Let the writer's background task work until `done()` (fail after 30 s)."""
    for _ in range(3000):
        if done():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"writer did not get there: {writer.status()}")


async def _drain(writer: FeedbackWriter) -> None:
    await _until(
        writer, lambda: not writer.buffered and not any(writer.spooled().values()) and writer.database_up
    )


async def test_a_buffered_interaction_can_be_rated_at_once(
    writer: FeedbackWriter, sessions: sessionmaker[Session]
) -> None:
    writer.record(interaction_record("a"))
    outcome = await writer.rate(RatingWrite("a", 2, "salah"))
    assert outcome.stored is not None and outcome.stored.variant == "tuned" and outcome.needs_review
    again = await writer.rate(RatingWrite("a", 4, None))
    assert again.stored is not None and again.stored.replaced == 2
    assert _stored(sessions) == (["a"], {"a": 4})
    with pytest.raises(UnknownInteractionError):
        await writer.rate(RatingWrite("nobody", 3, None))


async def test_outage_spools_in_order_and_replays_once(
    sessions: sessionmaker[Session], unreachable: sessionmaker[Session], tmp_path: Path
) -> None:
    good_bind = sessions.kw["bind"]
    sessions.configure(bind=unreachable.kw["bind"])
    counted = Counted()
    writer = FeedbackWriter(sessions, tmp_path / "spool.sqlite3", retry_s=0.05, on_rating=counted)
    await writer.start()
    writer.record(interaction_record("a"))
    writer.record(interaction_record("b", "base"))
    first = await writer.rate(RatingWrite("a", 1, None))
    second = await writer.rate(RatingWrite("a", 5, "better"))
    third = await writer.rate(RatingWrite("b", 3, None))
    unknown = await writer.rate(RatingWrite("elsewhere", 4, None))
    assert [o.queued for o in (first, second, third, unknown)] == [True] * 4
    assert (first.variant, unknown.variant) == ("tuned", None)
    assert not writer.database_up and writer.spooled()["rating"] == 4
    # each interaction may be spooled twice (by its rating and by the background writer, which can both
    # find it still buffered): replay is idempotent
    assert writer.spooled()["interaction"] in (2, 3, 4)

    sessions.configure(bind=good_bind)
    await _until(writer, lambda: writer.spooled() == {"interaction": 0, "rating": 1})
    assert _stored(sessions) == (["a", "b"], {"a": 5, "b": 3})
    # applied in order, each once: a=1 then a=5 replacing it, b=3; the orphan waits for its answer
    assert [(s.interaction_id, s.stars, s.replaced) for s in counted.stored] == [
        ("a", 1, None),
        ("a", 5, 1),
        ("b", 3, None),
    ]
    await writer.close(timeout_s=0.5)


async def test_spooled_writes_survive_a_restart(
    sessions: sessionmaker[Session],
    direct: DirectConnections | None,
    unreachable: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool.sqlite3"
    down = FeedbackWriter(unreachable, spool, retry_s=0.05)
    await down.start()
    down.record(interaction_record("kept"))
    down.record(interaction_record("rated"))
    await down.rate(RatingWrite("rated", 2, None))
    await down.close(timeout_s=0.2)

    up = FeedbackWriter(sessions, spool, retry_s=0.05, direct=direct)
    assert up.spooled()["rating"] == 1 and up.spooled()["interaction"] >= 2
    await up.start()
    await _drain(up)
    await up.close()
    assert _stored(sessions) == (["kept", "rated"], {"rated": 2})


async def test_a_rating_waits_behind_an_earlier_spooled_one(
    writer: FeedbackWriter, sessions: sessionmaker[Session], unreachable: sessionmaker[Session]
) -> None:
    writer.record(interaction_record("a"))
    await _drain(writer)
    good_bind = sessions.kw["bind"]
    sessions.configure(bind=unreachable.kw["bind"])
    assert (await writer.rate(RatingWrite("a", 1, None))).queued
    sessions.configure(bind=good_bind)
    writer._db_up = True  # the database is back but the spool is not replayed yet
    later = await writer.rate(RatingWrite("a", 5, None))
    assert later.queued, "a direct write now would be overwritten by the older spooled one"
    await _drain(writer)
    assert _stored(sessions) == (["a"], {"a": 5})


async def test_an_orphan_rating_is_dropped_after_its_ttl(
    sessions: sessionmaker[Session], unreachable: sessionmaker[Session], tmp_path: Path
) -> None:
    spool = tmp_path / "spool.sqlite3"
    dropped: list[str] = []
    down = FeedbackWriter(unreachable, spool, retry_s=0.05)
    await down.start()
    await down.rate(RatingWrite("never-served", 4, None))
    await down.close(timeout_s=0.2)
    up = FeedbackWriter(sessions, spool, retry_s=0.05, orphan_ttl_s=0, on_drop=dropped.append)
    await up.start()
    await _drain(up)
    await up.close()
    assert dropped == ["rating"] and _stored(sessions) == ([], {})


async def test_closing_flushes_the_buffer_to_the_database(
    sessions: sessionmaker[Session], direct: DirectConnections | None, tmp_path: Path
) -> None:
    writer = FeedbackWriter(sessions, tmp_path / "spool.sqlite3", retry_s=60, direct=direct)
    await writer.start()
    for name in ("x", "y", "z"):
        writer.record(interaction_record(name))
    await writer.close()
    assert _stored(sessions) == (["x", "y", "z"], {})


def test_the_spool_knows_which_answers_wait_across_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite3")
    spool.append([Entry("interaction", "a", {}), Entry("rating", "a", {}), Entry("rating", "b", {})])
    assert (spool.holds("a"), spool.holds("b"), spool.holds("c")) == (True, True, False)
    first = spool.ready(10)
    spool.settle([e for e in first if e.key == "b"], [], defer_s=5)
    assert (spool.holds("a"), spool.holds("b")) == (True, False)
    spool.close()
    again = Spool(tmp_path / "spool.sqlite3")
    assert (again.holds("a"), again.holds("b")) == (True, False)
    assert again.counts() == {"interaction": 1, "rating": 1}
    again.settle(again.ready(10), [], defer_s=5)
    assert not again.holds("a") and again.pending == 0
    again.close()


async def test_left_memory_returns_once_the_interaction_is_stored(
    writer: FeedbackWriter, sessions: sessionmaker[Session]
) -> None:
    writer.record(interaction_record("waited"))
    assert writer.buffered == 1
    assert await writer.left_memory("waited", timeout_s=10)
    assert _stored(sessions)[0] == ["waited"], "stored in the database when the wait ends"
    assert await writer.left_memory("waited", timeout_s=0.01), "already gone: no wait"


async def test_left_memory_gives_up_after_its_timeout(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    idle = FeedbackWriter(sessions, tmp_path / "spool.sqlite3")  # not started: nothing leaves memory
    idle.record(interaction_record("stuck"))
    assert not await idle.left_memory("stuck", timeout_s=0.05)
