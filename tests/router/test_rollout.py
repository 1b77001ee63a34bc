"""Rollout state shared through the database, with its audit trail."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import event

from database.engine import create_db_engine, make_session_factory
from database.migrate import upgrade
from router.rollout import Rollout, RolloutConflict, RolloutStore, check_canary_loaded


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


def test_the_cached_rollout_is_offered_only_while_fresh(stores) -> None:  # type: ignore[no-untyped-def]
    """`cached()` never reads the database: chat routing runs on the event loop with it, and goes to a
    worker thread only when it is None."""
    caching, uncached = stores
    assert caching.cached() is None and uncached.cached() is None
    read = caching.current()
    assert caching.cached() == read and uncached.current() == read and uncached.cached() is None
    caching.invalidate()
    assert caching.cached() is None


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


def _race(calls: list[Callable[[], object]]) -> list[object]:
    """Run `calls` in threads started together; returns their results (or the exceptions they raised)."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], object]) -> object:
        start.wait()
        try:
            return call()
        except Exception as error:  # noqa: BLE001 - the test asserts on it
            return error

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_two_first_changes_at_once_both_succeed(database_url: str) -> None:
    upgrade(database_url)
    engine = create_db_engine(database_url)
    sessions = make_session_factory(engine)
    replicas = [
        RolloutStore(sessions, default_percentage=20, default_adapter="demo@v1", cache_s=0) for _ in range(2)
    ]
    # Hold each transaction right after it reads the rollout row until the other has read it too (or a
    # second has passed, when the other is already waiting for this one's lock): the window in which two
    # first changes used to find no row and both insert it.
    both_read = threading.Barrier(2)

    @event.listens_for(engine, "after_cursor_execute")
    def _hold(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and "rollout_state" in statement:
            with contextlib.suppress(threading.BrokenBarrierError):
                both_read.wait(timeout=1)

    results = _race(
        [
            lambda: replicas[0].change(percentage=30, adapter="demo@v1", actor="ana", action="set"),
            lambda: replicas[1].change(percentage=40, adapter="demo@v1", actor="budi", action="set"),
        ]
    )
    event.remove(engine, "after_cursor_execute", _hold)
    assert not [r for r in results if isinstance(r, Exception)], results
    events = replicas[0].history()
    assert sorted((e.actor, e.to_percentage) for e in events) == [("ana", 30), ("budi", 40)]
    assert events[-1].from_percentage == 20 and events[0].from_percentage == events[-1].to_percentage
    final = replicas[0].current()
    assert (final.updated_by, final.percentage) == (events[0].actor, events[0].to_percentage)
    engine.dispose()


def test_the_initial_rollout_is_recorded_once_however_many_replicas_start(database_url: str) -> None:
    upgrade(database_url)
    engine = create_db_engine(database_url)
    replicas = [
        RolloutStore(make_session_factory(engine), default_percentage=20, cache_s=0) for _ in range(4)
    ]
    created = _race([functools.partial(store.initialise, "demo@v2") for store in replicas])
    assert sorted(created, key=str) == [False, False, False, True], created
    (initial,) = replicas[0].history()
    assert (initial.actor, initial.action, initial.from_percentage, initial.to_percentage) == (
        "system",
        "initial",
        None,
        20,
    )
    assert initial.to_adapter == "demo@v2"
    replicas[1].change(percentage=50, adapter="demo@v2", actor="ops", action="set")
    assert replicas[2].initialise("demo@v3") is False  # a later start leaves the stored rollout alone
    current = replicas[3].current()
    assert (current.percentage, current.adapter, current.updated_by) == (50, "demo@v2", "ops")
    assert [e.action for e in replicas[0].history()] == ["set", "initial"]
    engine.dispose()


def _statuses(sessions, *keys: str) -> list[str]:  # type: ignore[no-untyped-def]
    from feedback.registry import get_version

    with sessions() as session:
        return [entry.status if (entry := get_version(session, key)) else "?" for key in keys]


@pytest.fixture
def registry_store(database_url: str):  # type: ignore[no-untyped-def]
    from feedback.registry import record_version

    upgrade(database_url)
    engine = create_db_engine(database_url)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        for version in ("v1", "v2", "v3"):
            record_version(session, name="z", version=version, path=f"/a/{version}", base_model="b")
    yield RolloutStore(sessions, default_percentage=20, cache_s=60), sessions
    engine.dispose()


def test_promote_and_rollback_walk_the_lifecycle(registry_store) -> None:  # type: ignore[no-untyped-def]
    from router.rollout import NoCanaryError

    store, sessions = registry_store
    with pytest.raises(NoCanaryError):
        store.promote(actor="ops")
    store.change(percentage=20, adapter="z@v1", actor="ops", action="set")
    assert _statuses(sessions, "z@v1") == ["canary"]
    _, after = store.promote(actor="ops", reason="good ratings")
    assert (after.live_adapter, after.adapter, after.percentage) == ("z@v1", None, 0)
    store.change(percentage=20, adapter="z@v2", actor="ops", action="set")
    store.promote(actor="guardrail", action="auto-promote", details={"p_value": 0.001})
    assert _statuses(sessions, "z@v1", "z@v2") == ["retired", "live"]
    store.change(percentage=30, adapter="z@v3", actor="ops", action="set")
    _, back = store.rollback(actor="guardrail", action="auto-rollback", details={"samples": [40, 41]})
    assert (back.live_adapter, back.canary_active) == ("z@v2", False)
    assert _statuses(sessions, "z@v3") == ["rejected"]
    _, older = store.rollback(actor="oncall", reason="v2 is worse than we thought")
    assert older.live_adapter == "z@v1" and _statuses(sessions, "z@v1", "z@v2") == ["live", "rejected"]
    _, base = store.rollback(actor="oncall")
    assert base.live_adapter is None and _statuses(sessions, "z@v1") == ["rejected"]
    events = store.history()
    assert [e.action for e in events][:4] == ["rollback", "rollback", "auto-rollback", "set"]
    automatic = next(e for e in events if e.action == "auto-rollback")
    assert automatic.details == {"samples": [40, 41]} and automatic.from_adapter == "z@v3"
    assert (events[0].from_live, events[0].to_live) == ("z@v1", None)


def test_promote_after_a_rollback_is_refused_and_nothing_goes_live(registry_store) -> None:  # type: ignore[no-untyped-def]
    """Found live: 50% -> rollback -> promote made the rolled-back version live for everyone."""
    from router.rollout import NoCanaryError

    store, sessions = registry_store
    store.change(percentage=50, adapter="z@v1", actor="ops", action="set")
    store.rollback(actor="oncall", reason="bad answers")
    with pytest.raises(NoCanaryError):
        store.promote(actor="ops")
    current = store.current()
    assert (current.live_adapter, current.canary_active) == (None, False)
    assert _statuses(sessions, "z@v1") == ["rejected"]
    assert [e.action for e in store.history()] == ["rollback", "set"]


def test_a_stale_expected_version_is_refused_inside_the_lock(registry_store) -> None:  # type: ignore[no-untyped-def]
    from router.rollout import RolloutConflict, canary_is

    store, sessions = registry_store
    store.change(percentage=20, adapter="z@v1", actor="ana", action="set")
    other = RolloutStore(sessions, default_percentage=20, cache_s=60)
    other.change(percentage=20, adapter="z@v2", actor="budi", action="set")  # ana's view is now stale
    for refused in (
        lambda: store.promote(actor="ana", expect=[canary_is("z@v1")]),
        lambda: store.rollback(actor="ana", expect=[canary_is("z@v1")]),
        lambda: store.change(
            percentage=50, adapter="z@v1", actor="ana", action="set", expect=[canary_is("z@v1")]
        ),
    ):
        with pytest.raises(RolloutConflict) as conflict:
            refused()
        assert conflict.value.code == "conflict" and "z@v2" in str(conflict.value)
    current = other.current()
    assert (current.adapter, current.percentage, current.live_adapter) == ("z@v2", 20, None)
    _, promoted = store.promote(actor="ana", expect=[canary_is("z@v2")])
    assert promoted.live_adapter == "z@v2"
    assert [e.action for e in store.history()] == ["promote", "set", "set"]


def test_an_adapter_that_serves_users_cannot_be_unloaded() -> None:
    rollout = Rollout(percentage=20, adapter="z@v2", updated_at=None, updated_by="ops", live_adapter="z@v1")
    for key, audience in (("z@v2", "20% of users"), ("z@v1", "every user outside the canary")):
        with pytest.raises(RolloutConflict, match=audience) as refused:
            rollout.check_unload(key)
        assert refused.value.code == "adapter_in_rollout"
    rollout.check_unload("z@v0")  # nobody's: may go
    Rollout(percentage=0, adapter="z@v2", updated_at=None, updated_by="ops").check_unload("z@v2")


def test_a_canary_with_users_must_be_loaded() -> None:
    with pytest.raises(RolloutConflict, match="'z@v9' is not loaded") as refused:
        check_canary_loaded(10, "z@v9", None, ["z@v1"])
    assert refused.value.code == "adapter_not_loaded"
    with pytest.raises(RolloutConflict, match="no adapter is set"):
        check_canary_loaded(10, None, None, [])
    check_canary_loaded(10, "z@v1", "z@v1", ["z@v1"])
    check_canary_loaded(0, "z@v9", None, [])  # no users: nothing to serve
