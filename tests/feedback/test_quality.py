"""Correction rate and distinct raters per adapter version over a window (issue 22, part 3), on
SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from database.models import utcnow
from feedback.quality import AdapterQuality, adapter_quality
from feedback.review_queue import correct, corrections_after, reject_corrections
from feedback.store import save_interactions
from tests.database import interaction_record, rate_interaction


def test_correction_rate_and_raters_per_adapter_version(sessions: sessionmaker[Session]) -> None:
    now = utcnow()
    save_interactions(
        sessions,
        [
            replace(interaction_record("a1"), user_hash="ana"),
            replace(interaction_record("a2"), user_hash="ana"),
            replace(interaction_record("a3"), user_hash="budi"),
            replace(interaction_record("a4"), user_hash=None),
            replace(interaction_record("b1"), user_hash="ana", adapter_version="v2"),
            replace(interaction_record("b2"), user_hash="cici", adapter_version="v2"),
            replace(interaction_record("base", "base"), user_hash="dodi"),
            replace(interaction_record("old"), user_hash="eka", created_at=now - timedelta(days=30)),
        ],
    )
    # raters of v1: ana (twice), budi, and the answer a4 itself (no user key, no API key)
    for key, stars in (("a1", 1), ("a2", 2), ("a3", 4), ("a4", 1), ("b1", 5), ("old", 1)):
        rate_interaction(sessions, interaction_id=key, stars=stars, comment=None)
    for key in ("a1", "a2", "a4"):
        correct(
            sessions,
            interaction_id=key,
            correct_answer="Rp10 miliar.",
            why_wrong="x",
            lesson="y",
            reviewer="r",
        )
    (rejected,) = [c.database_id for c in corrections_after(sessions, None) if c.interaction_id == "a4"]
    assert rejected is not None
    reject_corrections(sessions, {rejected: "tone: too short"})  # a rejected correction does not count
    got = adapter_quality(sessions, now - timedelta(days=7))
    assert got == [
        AdapterQuality("", answers=1, corrected=0, raters=0),
        AdapterQuality("zantara-demo@v1", answers=4, corrected=2, raters=3),
        AdapterQuality("zantara-demo@v2", answers=2, corrected=0, raters=1),
    ]
    assert got[1].correction_rate == 0.5 and got[0].correction_rate == 0.0
