"""Served answers checked against the fact registry by the feedback writer (issue 22, part 3), on
SQLite and PostgreSQL: critical errors and warnings stored with the interaction, each answer counted
once whichever path checks it (the background batch, a rating that comes first, a replay of the spool),
and the review queue holding answers with a critical error whether rated or not."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker

from database.engine import DirectConnections, make_session_factory
from database.models import Interaction
from feedback.answer_facts import AnswerFacts
from feedback.records import InteractionRecord, RatingWrite
from feedback.review_queue import NotInQueueError, correct, dismiss, get_item, list_queue
from feedback.store import save_interactions
from feedback.writer import FeedbackWriter
from knowledge.paths import FACTS_FILE
from tests.database import UNREACHABLE_DATABASE_URL, interaction_record, rate_interaction

QUESTION = "Berapa tarif PPN umum sekarang?"
CRITICAL = "Tarif PPN umum adalah 20%."
WARNING = "Masa berlaku ITAS investor adalah 5 tahun."
RIGHT = "Tarif PPN umum adalah 11% untuk barang dan jasa kena pajak pada umumnya."


@pytest.fixture(scope="module")
def facts() -> AnswerFacts:
    return AnswerFacts.from_path(FACTS_FILE)


def _answer(key: str, answer: str) -> InteractionRecord:
    return replace(interaction_record(key), messages=[{"role": "user", "content": QUESTION}], answer=answer)


def _columns(sessions: sessionmaker[Session]) -> dict[str, tuple[int | None, int | None]]:
    with sessions() as session:
        return {i.id: (i.fact_critical, i.fact_warnings) for i in session.scalars(select(Interaction))}


async def _until(done: object, what: str) -> None:
    for _ in range(1500):
        if done():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError(what)


def test_a_contradicted_verified_fact_is_critical_and_an_unconfirmed_one_a_warning(
    facts: AnswerFacts,
) -> None:
    checked = facts.check(_answer("a", f"{CRITICAL} {WARNING}"))
    assert (checked.fact_critical, checked.fact_warnings) == (1, 1)
    assert checked.fact_findings is not None
    critical, warning = sorted(checked.fact_findings, key=lambda f: f["severity"])
    assert critical["severity"] == "critical" and critical["stated"] == "20%"
    assert "ppn_rate_general" in {fact["id"] for fact in critical["facts"]}
    assert warning["severity"] == "warning" and warning["stated"] == "5 tahun"
    assert not any(fact["verified"] for fact in warning["facts"])
    clean = facts.check(_answer("b", RIGHT))
    assert (clean.fact_critical, clean.fact_warnings, clean.fact_findings) == (0, 0, [])
    assert not interaction_record("c").fact_checked and clean.fact_checked
    assert facts.checker._answers == {}, "a served answer is not remembered"


async def test_the_writer_stores_each_answer_checked_and_counts_it_once(
    sessions: sessionmaker[Session], direct: DirectConnections | None, tmp_path: Path, facts: AnswerFacts
) -> None:
    counted: list[str] = []
    writer = FeedbackWriter(
        sessions,
        tmp_path / "spool.sqlite3",
        retry_s=0.05,
        direct=direct,
        check_facts=facts.check,
        on_checked=lambda record: counted.append(record.id),
    )
    # not started yet: "rated" waits in the buffer unchecked when its rating comes, and is checked then
    writer.record(_answer("rated", CRITICAL))
    outcome = await writer.rate(RatingWrite("rated", 4, None))
    assert outcome.stored is not None
    writer.record(_answer("wrong", f"{CRITICAL} {WARNING}"))
    writer.record(_answer("right", RIGHT))
    await writer.start()
    await _until(lambda: not writer.buffered, "the batch was never written")
    await writer.close()
    assert _columns(sessions) == {"rated": (1, 0), "wrong": (1, 1), "right": (0, 0)}
    assert sorted(counted) == ["rated", "right", "wrong"]


async def test_an_answer_spooled_unchecked_is_checked_on_replay(
    sessions: sessionmaker[Session], direct: DirectConnections | None, tmp_path: Path, facts: AnswerFacts
) -> None:
    spool = tmp_path / "spool.sqlite3"
    engine = create_engine(UNREACHABLE_DATABASE_URL)
    down = FeedbackWriter(make_session_factory(engine), spool, retry_s=0.05)  # an older version: no check
    await down.start()
    down.record(_answer("spooled", CRITICAL))
    await down.close(timeout_s=0.2)
    engine.dispose()
    counted: list[str] = []
    up = FeedbackWriter(
        sessions,
        spool,
        retry_s=0.05,
        direct=direct,
        check_facts=facts.check,
        on_checked=lambda record: counted.append(record.id),
    )
    assert up.spooled()["interaction"] == 1
    await up.start()
    await _until(lambda: not any(up.spooled().values()), "the spool was never replayed")
    await up.close()
    assert _columns(sessions) == {"spooled": (1, 0)} and counted == ["spooled"]


async def test_a_failing_check_never_loses_an_answer(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    def broken(record: InteractionRecord) -> InteractionRecord:
        raise RuntimeError("a bug in the checker")

    writer = FeedbackWriter(sessions, tmp_path / "spool.sqlite3", retry_s=0.05, check_facts=broken)
    await writer.start()
    writer.record(_answer("kept", CRITICAL))
    await _until(lambda: not writer.buffered, "the answer was never written")
    await writer.close()
    assert _columns(sessions) == {"kept": (None, None)}


def test_an_answer_with_a_critical_error_is_queued_without_a_rating(
    sessions: sessionmaker[Session], facts: AnswerFacts
) -> None:
    save_interactions(
        sessions,
        [
            facts.check(_answer("unrated-wrong", CRITICAL)),
            facts.check(_answer("warned-only", WARNING)),
            facts.check(_answer("rated-wrong", CRITICAL)),
            facts.check(_answer("low", RIGHT)),
            _answer("unchecked", CRITICAL),
        ],
    )
    rate_interaction(sessions, interaction_id="rated-wrong", stars=5, comment=None)
    rate_interaction(sessions, interaction_id="low", stars=1, comment="kurang")
    page = list_queue(sessions)
    assert [item.interaction_id for item in page.items] == ["unrated-wrong", "low", "rated-wrong"]
    assert page.total == 3
    unrated, low, rated = page.items
    assert (unrated.stars, unrated.reason, unrated.fact_critical) == (None, "fact_error", 1)
    assert (low.stars, low.reason, low.fact_critical, low.fact_findings) == (1, "low_rating", 0, [])
    assert (rated.stars, rated.reason) == (5, "fact_error"), "a good rating does not hide a wrong figure"
    assert unrated.fact_findings[0]["stated"] == "20%"
    for key in ("warned-only", "unchecked"):
        with pytest.raises(NotInQueueError):
            get_item(sessions, key)
    assert get_item(sessions, "unrated-wrong").comment is None
    stored = correct(
        sessions,
        interaction_id="unrated-wrong",
        correct_answer=RIGHT,
        why_wrong="Tarif salah.",
        lesson="PPN umum 11%.",
        reviewer="ana",
    )
    assert stored.model_answer_wrong == CRITICAL and stored.query == QUESTION
    dismiss(sessions, interaction_id="rated-wrong", reason="Angka dikutip dari pertanyaan.", reviewer="ana")
    assert [item.interaction_id for item in list_queue(sessions).items] == ["low"]
