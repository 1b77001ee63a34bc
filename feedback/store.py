"""Writes and reads of interactions and ratings.

Every write commits before it returns, so the API acknowledges only what is durably stored. Short
database hiccups are retried (tenacity); anything longer propagates to the caller as an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from feedback.models import Interaction, Rating, utcnow

REVIEW_THRESHOLD = 3
"""Ratings under this many stars put the interaction in the review queue."""

transient_retry = retry(
    retry=retry_if_exception_type(OperationalError),
    stop=stop_after_attempt(3),
    wait=wait_exponential(multiplier=0.1, max=1.0),
    reraise=True,
)


@dataclass(frozen=True)
class InteractionRecord:
    """Everything stored about one served chat completion."""

    id: str
    user_hash: str | None
    model_requested: str
    routed: bool
    variant: str
    adapter_name: str | None
    adapter_version: str | None
    messages: list[dict[str, Any]]
    answer: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    ttft_s: float | None
    params: dict[str, Any]
    streamed: bool


@dataclass(frozen=True)
class StoredRating:
    """A rating as acknowledged to the caller."""

    interaction_id: str
    stars: int
    comment: str | None
    variant: str
    replaced: int | None
    needs_review: bool


class UnknownInteractionError(LookupError):
    """No interaction has this id."""


@transient_retry
def save_interaction(sessions: sessionmaker[Session], record: InteractionRecord) -> None:
    """Store one interaction (committed on return)."""
    with sessions.begin() as session:
        session.add(Interaction(created_at=utcnow(), **record.__dict__))


@transient_retry
def rate_interaction(
    sessions: sessionmaker[Session], *, interaction_id: str, stars: int, comment: str | None
) -> StoredRating:
    """Store or replace the rating of an interaction and flag it for review under 3 stars."""
    if not 1 <= stars <= 5:
        raise ValueError(f"rating must be 1-5, got {stars}")
    with sessions.begin() as session:
        interaction = session.get(Interaction, interaction_id, with_for_update=True)
        if interaction is None:
            raise UnknownInteractionError(interaction_id)
        rating = session.scalar(select(Rating).where(Rating.interaction_id == interaction_id))
        replaced = rating.stars if rating is not None else None
        if rating is None:
            session.add(Rating(interaction_id=interaction_id, stars=stars, comment=comment))
        else:
            rating.stars, rating.comment, rating.updated_at = stars, comment, utcnow()
        interaction.needs_review = stars < REVIEW_THRESHOLD
        return StoredRating(
            interaction_id, stars, comment, interaction.variant, replaced, interaction.needs_review
        )


def get_interaction(sessions: sessionmaker[Session], interaction_id: str) -> Interaction | None:
    """One interaction with its rating, or None."""
    with sessions() as session:
        interaction = session.get(Interaction, interaction_id)
        if interaction is not None:
            _ = interaction.rating
        return interaction


def review_queue(sessions: sessionmaker[Session], limit: int = 100) -> list[Interaction]:
    """Interactions flagged for review (rated under 3 stars), newest first."""
    with sessions() as session:
        rows = session.scalars(
            select(Interaction)
            .where(Interaction.needs_review.is_(True))
            .order_by(Interaction.created_at.desc())
            .limit(limit)
        ).all()
        for row in rows:
            _ = row.rating
        return list(rows)
