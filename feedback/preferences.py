"""The preference signals of the loop, read in one place (read-only): rated answers, reviewers'
corrections and blind A/B verdicts, each with what a preference dataset needs to keep its provenance
(interaction ids, reviewer, the adapter version that produced an answer, the user it was for).

Corrections come from `feedback.review_queue.corrections_after` (the one correction query); this
module adds the interactions they corrected, so a correction's prompt is the conversation as it was.
`training.dataset.preferences_build` turns these signals into KTO and DPO datasets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from database.models import ABJudgment, ABPair, Interaction, Rating, Reviewer
from feedback.records import adapter_key
from feedback.review_queue import corrections_after
from knowledge.corrections import CorrectionRecord

BASE = "base"
"""What an answer's `adapter` reads when the base model produced it."""
_CHUNK = 500
"""Interaction ids looked up per query (far under every database's parameter limit)."""


@dataclass(frozen=True)
class LoggedAnswer:
    """One served answer: the conversation it replied to (chat messages, text content), the answer,
    who it was for, which model produced it and its current rating (None when unrated)."""

    interaction_id: str
    created_at: datetime
    user: str | None
    """The hashed user key, else `key:<hash>` of the API key it went to; None when neither is known."""
    messages: tuple[tuple[str, str], ...]
    """(role, content) of each message, content parts joined into text."""
    answer: str
    adapter: str
    """`NAME@VERSION` of the adapter that answered, or `base`."""
    stars: int | None


@dataclass(frozen=True)
class ABVerdict:
    """One reviewer's verdict on a blind A/B pair: `winner` is `base`, `tuned` or `tie`."""

    judgment_id: int
    pair_id: int
    question: str
    base_model: str
    adapter: str
    base_answer: str
    adapter_answer: str
    winner: str
    reviewer: str
    created_at: datetime


@dataclass(frozen=True)
class PreferenceSignals:
    """Everything a preference dataset is built from, as read at one moment."""

    rated: list[LoggedAnswer]
    """Every rated answer, oldest first."""
    corrections: list[CorrectionRecord]
    """Every correction no retrain rejected, in id order."""
    corrected: dict[str, LoggedAnswer]
    """The answers those corrections corrected, by interaction id (those still stored)."""
    verdicts: list[ABVerdict]
    """Every A/B verdict, ties included, in id order."""


def read_signals(sessions: sessionmaker[Session]) -> PreferenceSignals:
    """Read the rated answers, the usable corrections with their interactions, and the A/B verdicts."""
    corrections = corrections_after(sessions, None)
    return PreferenceSignals(
        rated=rated_answers(sessions),
        corrections=corrections,
        corrected=logged_answers(sessions, {c.interaction_id for c in corrections if c.interaction_id}),
        verdicts=ab_verdicts(sessions),
    )


def rated_answers(sessions: sessionmaker[Session]) -> list[LoggedAnswer]:
    """Every interaction that has a rating, with its stars, oldest first."""
    query = (
        select(Interaction, Rating.stars)
        .join(Rating, Rating.interaction_id == Interaction.id)
        .order_by(Interaction.created_at, Interaction.id)
    )
    with sessions() as session:
        return [_logged(interaction, stars) for interaction, stars in session.execute(query).tuples()]


def logged_answers(sessions: sessionmaker[Session], ids: Iterable[str]) -> dict[str, LoggedAnswer]:
    """The stored interactions with these ids (with their stars, if rated); unknown ids are absent."""
    wanted = sorted(set(ids))
    found: dict[str, LoggedAnswer] = {}
    with sessions() as session:
        for start in range(0, len(wanted), _CHUNK):
            query = (
                select(Interaction, Rating.stars)
                .outerjoin(Rating, Rating.interaction_id == Interaction.id)
                .where(Interaction.id.in_(wanted[start : start + _CHUNK]))
            )
            for interaction, stars in session.execute(query).tuples():
                found[interaction.id] = _logged(interaction, stars)
    return found


def ab_verdicts(sessions: sessionmaker[Session]) -> list[ABVerdict]:
    """Every A/B judgment with its pair's question and answers and the reviewer's name, in id order."""
    query = (
        select(ABJudgment, ABPair, Reviewer.name)
        .join(ABPair, ABPair.id == ABJudgment.pair_id)
        .join(Reviewer, Reviewer.id == ABJudgment.reviewer_id)
        .order_by(ABJudgment.id)
    )
    with sessions() as session:
        return [
            ABVerdict(
                judgment_id=judgment.id,
                pair_id=pair.id,
                question=pair.question,
                base_model=pair.base_model,
                adapter=pair.adapter,
                base_answer=pair.base_answer,
                adapter_answer=pair.adapter_answer,
                winner=judgment.winner,
                reviewer=name,
                created_at=_aware(judgment.created_at),
            )
            for judgment, pair, name in session.execute(query).tuples()
        ]


def message_text(content: Any) -> str:
    """A chat message's content as text (the text parts of a content list joined)."""
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content or "")


def _logged(interaction: Interaction, stars: int | None) -> LoggedAnswer:
    user = interaction.user_hash or (f"key:{interaction.key_hash}" if interaction.key_hash else None)
    return LoggedAnswer(
        interaction_id=interaction.id,
        created_at=_aware(interaction.created_at),
        user=user,
        messages=tuple(
            (str(message.get("role", "")), message_text(message.get("content")))
            for message in interaction.messages
            if isinstance(message, dict)
        ),
        answer=interaction.answer,
        adapter=adapter_key(interaction.adapter_name, interaction.adapter_version) or BASE,
        stars=stars,
    )


def _aware(moment: datetime) -> datetime:
    """SQLite hands timestamps back without a zone; they are UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
