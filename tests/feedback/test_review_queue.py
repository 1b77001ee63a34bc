"""The review queue on SQLite and PostgreSQL: what is in it and in which order, correcting and
dismissing take items out (once: concurrent reviewers get one winner), corrections for retraining."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import partial

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from database.engine import create_db_engine, make_session_factory
from database.migrate import upgrade
from database.models import Correction, ReviewDismissal, utcnow
from feedback.records import InteractionRecord
from feedback.review_queue import (
    NotInQueueError,
    UnknownItemError,
    correct,
    corrections_after,
    dismiss,
    get_item,
    list_queue,
    reject_corrections,
)
from feedback.store import save_interactions
from knowledge.corrections import CorrectionRecord
from knowledge.topics import classify
from tests.database import rate_interaction

NOW = utcnow()


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade(database_url)
    engine = create_db_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def record(key: str, minutes_ago: int = 0, *, question: str = "", tuned: bool = True) -> InteractionRecord:
    """An interaction answered `minutes_ago`, by the canary adapter unless `tuned` is False."""
    return InteractionRecord(
        id=key,
        user_hash="u-" + key,
        model_requested="zantara",
        routed=True,
        variant="tuned" if tuned else "base",
        adapter_name="zantara-demo" if tuned else None,
        adapter_version="v2" if tuned else None,
        messages=[
            {"role": "system", "content": "Kamu ZANTARA."},
            {"role": "user", "content": "Halo"},
            {"role": "assistant", "content": "Halo, ada yang bisa dibantu?"},
            {"role": "user", "content": question or f"Berapa tarif PPN sekarang? ({key})"},
        ],
        answer=f"answer {key}",
        finish_reason="stop",
        prompt_tokens=10,
        completion_tokens=5,
        latency_s=0.1,
        ttft_s=None,
        params={},
        streamed=False,
        target="canary" if tuned else "base",
        created_at=NOW - timedelta(minutes=minutes_ago),
    )


def plant(sessions: sessionmaker[Session], ratings: dict[str, int | None], **kwargs: object) -> None:
    """Store one interaction per key (the first is the oldest) rated as given (None: unrated)."""
    records = [record(key, len(ratings) - n, **kwargs) for n, key in enumerate(ratings)]  # type: ignore[arg-type]
    save_interactions(sessions, records)
    for key, stars in ratings.items():
        if stars is not None:
            rate_interaction(sessions, interaction_id=key, stars=stars, comment=f"comment {key}")


def queued(sessions: sessionmaker[Session]) -> list[str]:
    return [item.interaction_id for item in list_queue(sessions, limit=100).items]


def fix(sessions: sessionmaker[Session], key: str, reviewer: str = "ana") -> CorrectionRecord:
    return correct(
        sessions,
        interaction_id=key,
        correct_answer="Tarif PPN umum 11%.",
        why_wrong="Angkanya salah.",
        lesson="Cek tarif PPN di registry.",
        reviewer=reviewer,
        classify=classify,
    )


def test_queue_holds_low_ratings_lowest_then_newest_with_everything_a_reviewer_needs(
    sessions: sessionmaker[Session],
) -> None:
    plant(sessions, {"old2": 2, "old1": 1, "new1": 1, "new2": 2, "three": 3, "five": 5, "unrated": None})
    assert queued(sessions) == ["new1", "old1", "new2", "old2"]

    page = list_queue(sessions, limit=2, offset=1)
    assert [item.interaction_id for item in page.items] == ["old1", "new2"]
    assert page.total == 4 and (page.limit, page.offset) == (2, 1)
    assert list_queue(sessions, limit=10, offset=4).items == []

    item = get_item(sessions, "new1")
    assert (item.stars, item.comment, item.variant, item.target) == (1, "comment new1", "tuned", "canary")
    assert item.adapter == "zantara-demo@v2" and item.answer == "answer new1"
    assert [m["role"] for m in item.messages] == ["system", "user", "assistant", "user"]
    assert item.query == "Berapa tarif PPN sekarang? (new1)"
    assert abs((item.created_at - (NOW - timedelta(minutes=5))).total_seconds()) < 1
    with pytest.raises(ValueError):
        list_queue(sessions, limit=0)


def test_base_model_answers_have_no_adapter(sessions: sessionmaker[Session]) -> None:
    plant(sessions, {"b": 1}, tuned=False)
    (item,) = list_queue(sessions).items
    assert item.adapter is None and item.variant == "base" and item.target == "base"


def test_correct_and_dismiss_take_items_out_once(sessions: sessionmaker[Session]) -> None:
    plant(sessions, {"a": 1, "b": 2, "c": 1, "high": 4})
    stored = fix(sessions, "a")
    assert stored.interaction_id == "a" and stored.reviewer == "ana" and stored.category == "tax"
    assert stored.query == "Berapa tarif PPN sekarang? (a)" and stored.model_answer_wrong == "answer a"
    assert queued(sessions) == ["c", "b"]

    dismiss(sessions, interaction_id="b", reason="Jawabannya sudah benar.", reviewer="budi")
    assert queued(sessions) == ["c"]
    with sessions() as session:
        kept = session.get_one(ReviewDismissal, "b")
        assert (kept.reviewer, kept.reason) == ("budi", "Jawabannya sudah benar.")

    for act, key, reason in (
        (lambda: fix(sessions, "a", "budi"), "a", "corrected"),
        (lambda: dismiss(sessions, interaction_id="a", reason="x", reviewer="budi"), "a", "corrected"),
        (lambda: fix(sessions, "b"), "b", "dismissed"),
        (lambda: dismiss(sessions, interaction_id="b", reason="x", reviewer="ana"), "b", "dismissed"),
        (lambda: fix(sessions, "high"), "high", "not_low_rated"),
    ):
        with pytest.raises(NotInQueueError) as refused:
            act()
        assert (refused.value.interaction_id, refused.value.reason) == (key, reason)
    with pytest.raises(UnknownItemError):
        fix(sessions, "nope")
    with pytest.raises(UnknownItemError):
        dismiss(sessions, interaction_id="nope", reason="x", reviewer="ana")
    with pytest.raises(NotInQueueError):
        get_item(sessions, "a")
    assert [c.interaction_id for c in corrections_after(sessions, None)] == ["a"]


def test_rerating_moves_items_in_and_out_but_never_revives_a_handled_one(
    sessions: sessionmaker[Session],
) -> None:
    plant(sessions, {"a": 1, "b": 2, "c": 5})
    rate_interaction(sessions, interaction_id="a", stars=4, comment="ternyata oke")
    rate_interaction(sessions, interaction_id="c", stars=2, comment=None)
    assert queued(sessions) == ["c", "b"]
    rate_interaction(sessions, interaction_id="a", stars=1, comment="salah lagi")
    assert queued(sessions) == ["a", "c", "b"] and get_item(sessions, "a").comment == "salah lagi"

    fix(sessions, "a")
    dismiss(sessions, interaction_id="b", reason="spam", reviewer="ana")
    rate_interaction(sessions, interaction_id="a", stars=1, comment=None)
    rate_interaction(sessions, interaction_id="b", stars=1, comment=None)
    assert queued(sessions) == ["c"]


def race(actions: list[Callable[[], object]]) -> tuple[list[object], list[Exception]]:
    """Run the actions at the same moment on their own threads; (results, errors)."""
    barrier = threading.Barrier(len(actions))
    results: list[object] = []
    errors: list[Exception] = []

    def run(action: Callable[[], object]) -> None:
        barrier.wait()
        try:
            results.append(action())
        except Exception as error:  # noqa: BLE001 - collected for the assertions
            errors.append(error)

    threads = [threading.Thread(target=run, args=(action,)) for action in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results, errors


def test_concurrent_reviewers_one_wins_the_others_are_refused(sessions: sessionmaker[Session]) -> None:
    keys = [f"r{n}" for n in range(6)]
    plant(sessions, dict.fromkeys(keys, 1))
    for n, key in enumerate(keys):
        actions: list[Callable[[], object]] = [
            partial(fix, sessions, key, who) for who in ("ana", "budi", "citra")
        ]
        if n % 2:
            actions.append(partial(dismiss, sessions, interaction_id=key, reason="dup", reviewer="dedi"))
        results, errors = race(actions)
        assert len(results) == 1, (key, results, errors)
        assert len(errors) == len(actions) - 1
        assert all(isinstance(error, NotInQueueError) for error in errors), errors
    with sessions() as session:
        corrections = session.scalar(select(func.count()).select_from(Correction))
        dismissals = session.scalar(select(func.count()).select_from(ReviewDismissal))
    assert (corrections or 0) + (dismissals or 0) == len(keys)
    assert queued(sessions) == []


def test_corrections_after_gives_what_a_new_version_has_not_learned(sessions: sessionmaker[Session]) -> None:
    assert corrections_after(sessions, None) == []
    plant(sessions, {"a": 1, "b": 1, "c": 2})
    first = fix(sessions, "b")
    second = correct(
        sessions,
        interaction_id="a",
        correct_answer="Jawaban\x00benar",
        why_wrong="",
        lesson="",
        reviewer="budi",
    )
    assert second.category is None and second.correct_answer == "Jawaban\ufffdbenar"
    third = fix(sessions, "c", "citra")
    assert [c.database_id for c in corrections_after(sessions, None)] == [
        first.database_id,
        second.database_id,
        third.database_id,
    ]
    assert (first.database_id or 0) < (second.database_id or 0) < (third.database_id or 0)
    assert corrections_after(sessions, first.database_id) == [second, third]
    assert corrections_after(sessions, third.database_id) == []
    (stored,) = corrections_after(sessions, second.database_id)
    assert stored.reviewer == "citra" and stored.lesson == "Cek tarif PPN di registry."
    assert stored.created_at is not None and stored.created_at.tzinfo is not None


def test_a_rejected_correction_sends_its_item_back_with_the_reason_until_a_new_one_replaces_it(
    sessions: sessionmaker[Session],
) -> None:
    """A retrain that leaves a correction out rejects it: training no longer reads it, its item is
    back in the queue showing the reason and the rejected text; a new correction takes its place."""
    plant(sessions, {"a": 1, "b": 1})
    first = fix(sessions, "a")
    kept = correct(
        sessions,
        interaction_id="b",
        correct_answer="Tarif PPN umum 11%.",
        why_wrong="w",
        lesson="l",
        reviewer="ana",
        check_override="Jawaban singkat sudah cukup.",
    )
    assert kept.check_override == "Jawaban singkat sudah cukup." and first.check_override is None
    assert queued(sessions) == []

    reason = "retrain run #3: tone: formal question answered with casual words: banget"
    assert first.database_id is not None
    assert reject_corrections(sessions, {first.database_id: reason}) == [first.database_id]
    assert reject_corrections(sessions, {first.database_id: "again"}) == [], "rejected once"
    assert [c.database_id for c in corrections_after(sessions, None)] == [kept.database_id]
    assert queued(sessions) == ["a"]
    (item,) = list_queue(sessions).items
    assert item.rejected is not None and get_item(sessions, "a").rejected == item.rejected
    assert (item.rejected.correction_id, item.rejected.reason) == (first.database_id, reason)
    assert item.rejected.correct_answer == first.correct_answer and item.rejected.lesson == first.lesson
    assert item.rejected.rejected_at.tzinfo is not None

    again = fix(sessions, "a", "budi")
    assert queued(sessions) == []
    assert [c.database_id for c in corrections_after(sessions, None)] == [kept.database_id, again.database_id]
