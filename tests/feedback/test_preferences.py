"""The preference signals read on SQLite and PostgreSQL: rated answers (with who they were for and
which model answered), the usable corrections with the answers they corrected, A/B verdicts with the
reviewer's name; reading changes nothing."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from database.models import Correction, Interaction, Rating, utcnow
from feedback.ab import NewPair, next_pair, queue_pairs, submit_judgment
from feedback.preferences import BASE, logged_answers, read_signals
from feedback.records import InteractionRecord, RatingWrite
from feedback.review_queue import correct, reject_corrections
from feedback.reviewers import add_reviewer
from feedback.store import apply_ratings, save_interactions
from tests.database import interaction_record, rate_interaction

NOW = utcnow()


def record(
    key: str, minutes_ago: int, *, user: str | None, key_hash: str | None = None, tuned: bool = True
) -> InteractionRecord:
    """An answered interaction with a content-parts user message, by `zantara@v2` unless not `tuned`."""
    return replace(
        interaction_record(key, "tuned" if tuned else "base"),
        user_hash=user,
        adapter_name="zantara" if tuned else None,
        adapter_version="v2" if tuned else None,
        messages=[
            {"role": "system", "content": "Kamu ZANTARA."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Berapa tarif "},
                    {"type": "text", "text": f"PPN? ({key})"},
                ],
            },
        ],
        answer=f"answer {key}",
        prompt_tokens=10,
        completion_tokens=5,
        latency_s=0.1,
        ttft_s=None,
        params={},
        key_hash=key_hash,
        created_at=NOW - timedelta(minutes=minutes_ago),
    )


def counts(sessions: sessionmaker[Session]) -> tuple[int, ...]:
    with sessions() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(table)) or 0
            for table in (Interaction, Rating, Correction)
        )


def test_signals_are_read_with_their_provenance_and_nothing_written(sessions: sessionmaker[Session]) -> None:
    save_interactions(
        sessions,
        [
            record("a", 5, user="u-a"),
            record("b", 4, user=None, key_hash="k1", tuned=False),
            record("c", 3, user=None),
            record("d", 2, user="u-d"),
            record("unrated", 1, user="u-x"),
        ],
    )
    for key, stars in (("a", 5), ("c", 2), ("d", 2)):
        rate_interaction(sessions, interaction_id=key, stars=stars, comment=None)
    apply_ratings(sessions, [RatingWrite("b", 1, None, key_hash="k1")])
    for key in ("c", "d"):
        correct(
            sessions,
            interaction_id=key,
            correct_answer=f"fixed {key}",
            why_wrong="",
            lesson="",
            reviewer="rina",
        )
    reject_corrections(sessions, {2: "fails a check"})
    [pair_id] = queue_pairs(
        sessions, [NewPair("Q?", None, None, None, "base-m", "zantara@v2", "b", "t", None, None)]
    )
    reviewer = add_reviewer(sessions, "ana")[0].id
    shown = next_pair(sessions, reviewer, overlap=2, lease=timedelta(minutes=5))
    assert shown is not None
    ratings = {c: {"A": 5, "B": 5} for c in ("naturalness", "accuracy", "completeness")}
    submit_judgment(sessions, reviewer_id=reviewer, pair_id=pair_id, choice="tie", ratings=ratings)
    before = counts(sessions)

    signals = read_signals(sessions)

    assert [answer.interaction_id for answer in signals.rated] == ["a", "b", "c", "d"]
    a, b, c, _ = signals.rated
    assert (a.user, a.adapter, a.stars) == ("u-a", "zantara@v2", 5)
    assert (b.user, b.adapter, b.stars) == ("key:k1", BASE, 1)
    assert c.user is None
    assert a.messages == (("system", "Kamu ZANTARA."), ("user", "Berapa tarif PPN? (a)"))
    assert [correction.interaction_id for correction in signals.corrections] == ["c"], (
        "a rejected one is not read"
    )
    assert set(signals.corrected) == {"c"} and signals.corrected["c"].answer == "answer c"
    [verdict] = signals.verdicts
    assert (verdict.winner, verdict.reviewer, verdict.adapter, verdict.base_model) == (
        "tie",
        "ana",
        "zantara@v2",
        "base-m",
    )
    assert counts(sessions) == before
    assert set(logged_answers(sessions, ["unrated", "missing"])) == {"unrated"}
    assert logged_answers(sessions, ["unrated"])["unrated"].stars is None
