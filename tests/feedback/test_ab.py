"""Blind A/B queue and summary on SQLite and PostgreSQL: overlap, never twice, order kept, statistics."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import krippendorff
import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from database.engine import create_db_engine, make_session_factory
from database.migrate import upgrade
from database.models import ABJudgment
from feedback.ab import (
    AlreadyJudgedError,
    NewPair,
    PairNotShownError,
    ShownPair,
    ab_summary,
    next_pair,
    queue_pairs,
    submit_judgment,
)
from feedback.reviewers import add_reviewer

ADAPTER = "zantara-demo@v1"
LEASE = timedelta(minutes=30)


def pair(n: int, adapter: str = ADAPTER) -> NewPair:
    """A pair whose answers say which variant wrote them (the tests need to know; reviewers do not)."""
    return NewPair(
        question=f"Pertanyaan {n}?",
        category="company",
        register="casual",
        complexity="simple",
        base_model="zantara-demo-base",
        adapter=adapter,
        base_answer=f"base answer {n}",
        adapter_answer=f"tuned answer {n}",
        dataset_version="ds-1",
        source_id=f"q{n}",
    )


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade(database_url)
    engine = create_db_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def reviewer(sessions: sessionmaker[Session], name: str) -> int:
    return add_reviewer(sessions, name)[0].id


def ratings(a: int, b: int) -> dict[str, dict[str, int]]:
    return {c: {"A": a, "B": b} for c in ("naturalness", "accuracy", "completeness")}


def side_of(shown: ShownPair, variant: str) -> str:
    return "A" if shown.answer_a.startswith(variant) else "B"


def judge(sessions: sessionmaker[Session], reviewer_id: int, winner: str, overlap: int = 3) -> ShownPair:
    """Take the reviewer's next pair and prefer `winner` (`tuned`, `base` or `tie`)."""
    shown = next_pair(sessions, reviewer_id, overlap=overlap, lease=LEASE)
    assert shown is not None
    choice = "tie" if winner == "tie" else side_of(shown, winner)
    tuned = side_of(shown, "tuned")
    scores = ratings(9, 4) if tuned == "A" else ratings(4, 9)
    submit_judgment(sessions, reviewer_id=reviewer_id, pair_id=shown.pair_id, choice=choice, ratings=scores)
    return shown


def test_overlap_caps_reviewers_and_nobody_sees_a_pair_twice(sessions: sessionmaker[Session]) -> None:
    (pair_id,) = queue_pairs(sessions, [pair(1)])
    ana, budi, citra = (reviewer(sessions, name) for name in ("ana", "budi", "citra"))

    first = next_pair(sessions, ana, overlap=2, lease=LEASE)
    assert first is not None and first.pair_id == pair_id
    assert next_pair(sessions, ana, overlap=2, lease=LEASE) == first, (
        "the same pair, same order, until judged"
    )
    submit_judgment(sessions, reviewer_id=ana, pair_id=pair_id, choice="A", ratings=ratings(8, 5))
    assert next_pair(sessions, ana, overlap=2, lease=LEASE) is None, "never the same pair twice"
    with pytest.raises(AlreadyJudgedError):
        submit_judgment(sessions, reviewer_id=ana, pair_id=pair_id, choice="B", ratings=ratings(8, 5))

    assert next_pair(sessions, budi, overlap=2, lease=LEASE) is not None
    assert next_pair(sessions, citra, overlap=2, lease=LEASE) is None, (
        "budi's open showing holds the 2nd place"
    )
    with pytest.raises(PairNotShownError):
        submit_judgment(sessions, reviewer_id=citra, pair_id=pair_id, choice="A", ratings=ratings(8, 5))
    assert next_pair(sessions, citra, overlap=2, lease=timedelta(0)) is not None, (
        "an expired showing frees it"
    )


def test_pairs_with_judgments_are_finished_first(sessions: sessionmaker[Session]) -> None:
    ids = queue_pairs(sessions, [pair(1), pair(2)])
    ana, budi = reviewer(sessions, "ana"), reviewer(sessions, "budi")
    shown = next_pair(sessions, budi, overlap=2, lease=LEASE)
    assert shown is not None and shown.pair_id == ids[0]
    submit_judgment(sessions, reviewer_id=budi, pair_id=ids[0], choice="tie", ratings=ratings(5, 5))
    assert next_pair(sessions, budi, overlap=2, lease=LEASE).pair_id == ids[1]  # type: ignore[union-attr]
    assert next_pair(sessions, ana, overlap=2, lease=LEASE).pair_id == ids[0]  # type: ignore[union-attr]


def test_choice_maps_back_to_the_variant_whatever_the_order(sessions: sessionmaker[Session]) -> None:
    queue_pairs(sessions, [pair(n) for n in range(12)])
    ana = reviewer(sessions, "ana")
    orders = set()
    for _ in range(12):
        shown = judge(sessions, ana, "tuned")
        orders.add(side_of(shown, "tuned"))
    assert orders == {"A", "B"}, "the order is drawn per showing (2^-11 chance of a false failure)"
    with sessions() as session:
        rows = session.scalars(select(ABJudgment)).all()
    assert {row.winner for row in rows} == {"tuned"}
    assert {(row.tuned_accuracy, row.base_accuracy) for row in rows} == {(9, 4)}


def test_summary_win_rate_ties_half_interval_ratings_and_agreement(sessions: sessionmaker[Session]) -> None:
    queue_pairs(sessions, [pair(n) for n in range(4)] + [pair(9, adapter="other@v1")])
    ana, budi = reviewer(sessions, "ana"), reviewer(sessions, "budi")
    verdicts = {ana: ["tuned", "tuned", "base", "tie"], budi: ["tuned", "tie", "base", "tie"]}
    for person, winners in verdicts.items():
        for winner in winners:
            judge(sessions, person, winner)

    summary = ab_summary(sessions, ADAPTER)
    assert (summary.judgments, summary.wins, summary.losses, summary.ties) == (8, 3, 2, 3)
    assert summary.win_rate == pytest.approx((3 + 1.5) / 8)
    assert summary.win_rate_ci is not None and summary.win_rate is not None
    low, high = summary.win_rate_ci
    assert 0 <= low <= summary.win_rate <= high <= 1 and high - low > 0.05
    assert summary.mean_ratings["tuned"]["naturalness"] == pytest.approx(9)
    assert summary.mean_ratings["base"]["completeness"] == pytest.approx(4)
    order = {"base": 0, "tie": 1, "tuned": 2}
    expected = krippendorff.alpha(
        reliability_data=np.array([[order[w] for w in verdicts[ana]], [order[w] for w in verdicts[budi]]]),
        level_of_measurement="ordinal",
    )
    assert summary.krippendorff_alpha == pytest.approx(expected)
    assert 0 < expected < 1

    assert ab_summary(sessions, "other@v1").judgments == 0
    assert ab_summary(sessions, "other@v1").win_rate is None


def test_agreement_needs_two_reviewers_on_a_pair(sessions: sessionmaker[Session]) -> None:
    queue_pairs(sessions, [pair(n) for n in range(3)])
    ana = reviewer(sessions, "ana")
    for winner in ("tuned", "base", "tie"):
        judge(sessions, ana, winner)
    summary = ab_summary(sessions, ADAPTER)
    assert summary.judgments == 3 and summary.krippendorff_alpha is None


def test_model_output_with_nul_characters_is_stored(sessions: sessionmaker[Session]) -> None:
    planted = NewPair(**{**pair(1).__dict__, "adapter_answer": "modal\x00 Rp 10 miliar"})
    (pair_id,) = queue_pairs(sessions, [planted])
    shown = next_pair(sessions, reviewer(sessions, "ana"), overlap=1, lease=LEASE)
    assert shown is not None and shown.pair_id == pair_id
    assert "modal\ufffd Rp 10 miliar" in (shown.answer_a, shown.answer_b)


def test_migration_matches_the_models_and_downgrades(database_url: str) -> None:
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from database.migrate import alembic_config, current_revision
    from database.models import Base

    upgrade(database_url)
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        engine.dispose()
    command.downgrade(alembic_config(database_url), "0001")
    assert current_revision(database_url) == "0001"
    upgrade(database_url)
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    assert current_revision(database_url) == head
