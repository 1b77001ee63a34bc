"""Shared test helpers for the feedback database: one interaction stored, one rating applied, one
interaction read back with its rating, through the same code paths the service writes with."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from feedback.models import Interaction
from feedback.records import InteractionRecord, RatingWrite, StoredRating, UnknownInteractionError
from feedback.store import apply_ratings, save_interactions


def save_interaction(sessions: sessionmaker[Session], record: InteractionRecord) -> None:
    """Store one interaction (committed on return; idempotent)."""
    save_interactions(sessions, [record])


def rate_interaction(
    sessions: sessionmaker[Session], *, interaction_id: str, stars: int, comment: str | None
) -> StoredRating:
    """Store or replace the rating of an interaction (raises `UnknownInteractionError` for an unknown id)."""
    (stored,) = apply_ratings(sessions, [RatingWrite(interaction_id, stars, comment)])
    if stored is None:
        raise UnknownInteractionError(interaction_id)
    return stored


def get_interaction(sessions: sessionmaker[Session], interaction_id: str) -> Interaction | None:
    """One interaction with its rating loaded, or None."""
    with sessions() as session:
        interaction = session.get(Interaction, interaction_id)
        if interaction is not None:
            _ = interaction.rating
        return interaction
