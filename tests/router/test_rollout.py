"""Rollout state shared through the database, with its audit trail."""

from __future__ import annotations

import pytest

from feedback.db import create_db_engine, make_session_factory
from feedback.migrate import upgrade
from router.rollout import RolloutStore


@pytest.fixture
def stores(database_url: str):  # type: ignore[no-untyped-def]
    upgrade(database_url)
    engine = create_db_engine(database_url)
    sessions = make_session_factory(engine)
    # two replicas of the service share one database
    yield (
        RolloutStore(sessions, default_percentage=20, default_adapter="demo@v1", cache_s=60),
        RolloutStore(sessions, default_percentage=20, default_adapter="demo@v1", cache_s=0),
    )
    engine.dispose()


def test_default_until_first_change_then_every_replica_agrees(stores) -> None:  # type: ignore[no-untyped-def]
    first, second = stores
    assert first.current().percentage == 20 and first.current().updated_by == "default"
    first.change(percentage=30, adapter="demo@v1", actor="ops", action="set", reason="canary")
    assert second.current().percentage == 30
    assert first.current().percentage == 30  # the writer's own cache is invalidated
    second.change(percentage=0, adapter="demo@v1", actor="oncall", action="rollback")
    assert second.current().percentage == 0
    assert first.current().percentage == 30  # cached for up to cache_s on other replicas
    first.invalidate()
    assert first.current().percentage == 0


def test_every_change_is_audited(stores) -> None:  # type: ignore[no-untyped-def]
    store, _ = stores
    store.change(percentage=30, adapter="demo@v1", actor="ops", action="set", reason="start")
    store.change(percentage=0, adapter="demo@v1", actor="oncall", action="rollback", reason="bad answers")
    events = store.history()
    assert [(e.actor, e.action, e.from_percentage, e.to_percentage) for e in events] == [
        ("oncall", "rollback", 30, 0),
        ("ops", "set", 20, 30),
    ]
    assert events[1].from_adapter == "demo@v1" and events[0].reason == "bad answers"
    with pytest.raises(ValueError):
        store.change(percentage=101, adapter=None, actor="ops", action="set")
    assert len(store.history()) == 2
