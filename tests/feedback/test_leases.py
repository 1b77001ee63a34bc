"""Database leases: one holder at a time, renewals, expiry, release, and races between holders."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from database.engine import create_db_engine, make_session_factory
from database.migrate import upgrade
from database.models import Lease, utcnow
from feedback.leases import acquire, release


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade(database_url)
    engine = create_db_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def _stored(sessions: sessionmaker[Session], name: str) -> Lease | None:
    with sessions() as session:
        return session.scalars(select(Lease).where(Lease.name == name)).first()


def _expire(sessions: sessionmaker[Session], name: str) -> None:
    with sessions.begin() as session:
        session.execute(
            update(Lease).where(Lease.name == name).values(expires_at=utcnow() - timedelta(seconds=1))
        )


def _race(sessions: sessionmaker[Session], holders: list[str], ttl_s: float) -> dict[str, bool]:
    """Every holder asks for the same lease at the same moment, each in its own thread."""
    start = threading.Barrier(len(holders))

    def take(holder: str) -> bool:
        start.wait()
        return acquire(sessions, "race", holder, ttl_s)

    with ThreadPoolExecutor(len(holders)) as pool:
        return dict(zip(holders, pool.map(take, holders), strict=True))


def test_one_holder_at_a_time_renewals_and_release(sessions: sessionmaker[Session]) -> None:
    assert acquire(sessions, "guardrail", "replica-a", 60)
    first = _stored(sessions, "guardrail")
    assert first is not None and first.holder == "replica-a"
    assert not acquire(sessions, "guardrail", "replica-b", 60)
    time.sleep(0.01)
    assert acquire(sessions, "guardrail", "replica-a", 60)  # renewal
    renewed = _stored(sessions, "guardrail")
    assert renewed is not None and renewed.holder == "replica-a"
    assert renewed.acquired_at == first.acquired_at and renewed.expires_at > first.expires_at
    assert acquire(sessions, "retrain", "replica-b", 60)  # another name is another lease
    release(sessions, "guardrail", "replica-b")  # not b's lease: nothing happens
    assert not acquire(sessions, "guardrail", "replica-b", 60)
    release(sessions, "guardrail", "replica-a")
    assert _stored(sessions, "guardrail") is None
    assert acquire(sessions, "guardrail", "replica-b", 60)
    with pytest.raises(ValueError):
        acquire(sessions, "guardrail", "replica-b", 0)


def test_an_expired_lease_passes_to_the_next_holder(sessions: sessionmaker[Session]) -> None:
    assert acquire(sessions, "guardrail", "replica-a", 0.3)
    assert not acquire(sessions, "guardrail", "replica-b", 60)
    time.sleep(0.4)
    assert acquire(sessions, "guardrail", "replica-b", 60)
    taken = _stored(sessions, "guardrail")
    assert taken is not None and taken.holder == "replica-b"
    assert not acquire(sessions, "guardrail", "replica-a", 60)  # the old holder cannot renew any more


def test_holders_racing_for_a_new_lease_exactly_one_wins(sessions: sessionmaker[Session]) -> None:
    for _ in range(5):
        with sessions.begin() as session:
            session.execute(delete(Lease))
        won = _race(sessions, [f"replica-{i}" for i in range(6)], 60)
        winners = [holder for holder, got in won.items() if got]
        assert len(winners) == 1, won
        stored = _stored(sessions, "race")
        assert stored is not None and stored.holder == winners[0]


def test_holders_racing_for_an_expired_lease_exactly_one_wins(sessions: sessionmaker[Session]) -> None:
    assert acquire(sessions, "race", "dead-replica", 60)
    for _ in range(5):
        _expire(sessions, "race")
        won = _race(sessions, [f"replica-{i}" for i in range(6)], 60)
        winners = [holder for holder, got in won.items() if got]
        assert len(winners) == 1, won
        stored = _stored(sessions, "race")
        assert stored is not None and stored.holder == winners[0]
