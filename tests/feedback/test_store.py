"""Migrations, interactions and ratings on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, select

from database.engine import create_db_engine, make_session_factory
from database.migrate import current_revision, upgrade
from database.models import Rating
from feedback.records import UnknownInteractionError
from feedback.review_queue import list_queue
from tests.database import interaction_record, rate_interaction, save_interaction


@pytest.fixture
def sessions(database_url: str):  # type: ignore[no-untyped-def]
    upgrade(database_url)
    engine = create_db_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def test_migrations_create_every_table_and_are_idempotent(database_url: str) -> None:
    upgrade(database_url)
    upgrade(database_url)
    assert current_revision(database_url) is not None
    engine = create_db_engine(database_url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {
        "interactions",
        "ratings",
        "corrections",
        "rollout_state",
        "rollout_events",
        "adapter_versions",
        "alembic_version",
    } <= tables


def test_rating_is_stored_replaced_and_flags_review(sessions) -> None:  # type: ignore[no-untyped-def]
    save_interaction(sessions, interaction_record("a"))
    save_interaction(sessions, interaction_record("b", "base"))
    first = rate_interaction(sessions, interaction_id="a", stars=2, comment="salah modal")
    assert first.replaced is None and first.needs_review and first.variant == "tuned"
    assert [i.interaction_id for i in list_queue(sessions).items] == ["a"]
    again = rate_interaction(sessions, interaction_id="a", stars=5, comment=None)
    assert again.replaced == 2 and not again.needs_review
    assert list_queue(sessions).items == []
    with sessions() as session:
        ratings = session.scalars(select(Rating)).all()
        assert [(r.interaction_id, r.stars, r.comment) for r in ratings] == [("a", 5, None)]


def test_unknown_interaction_and_bad_stars_change_nothing(sessions) -> None:  # type: ignore[no-untyped-def]
    save_interaction(sessions, interaction_record("a"))
    rate_interaction(sessions, interaction_id="a", stars=4, comment="ok")
    with pytest.raises(UnknownInteractionError):
        rate_interaction(sessions, interaction_id="nope", stars=1, comment=None)
    for stars in (0, 6, -1):
        with pytest.raises(ValueError):
            rate_interaction(sessions, interaction_id="a", stars=stars, comment=None)
    with sessions() as session:
        assert session.scalars(select(Rating.stars)).all() == [4]
