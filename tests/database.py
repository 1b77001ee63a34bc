"""Shared test helpers for the feedback database: one interaction stored, one rating applied, one
interaction read back with its rating, through the same code paths the service writes with."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from database.models import Interaction
from feedback.records import InteractionRecord, RatingWrite, StoredRating, UnknownInteractionError
from feedback.store import apply_ratings, save_interactions

UNREACHABLE_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:1/postgres?connect_timeout=2"
"""A PostgreSQL URL where nothing listens (port 1): every connection is refused."""


def interaction_record(interaction_id: str, variant: str = "tuned") -> InteractionRecord:
    """A short answered interaction with id `interaction_id`, from the tuned adapter `zantara-demo@v1`
    or (any other `variant`) from the base model."""
    return InteractionRecord(
        id=interaction_id,
        user_hash="h",
        model_requested="zantara",
        routed=True,
        variant=variant,
        adapter_name="zantara-demo" if variant == "tuned" else None,
        adapter_version="v1" if variant == "tuned" else None,
        messages=[{"role": "user", "content": "Berapa modal PT PMA?"}],
        answer="Rp10 miliar",
        finish_reason="stop",
        prompt_tokens=12,
        completion_tokens=4,
        latency_s=0.5,
        ttft_s=0.1,
        params={"temperature": 0},
        streamed=False,
    )


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
