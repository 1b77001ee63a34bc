"""SQLAlchemy 2.0 models: interactions, ratings, corrections, rollout state and events, adapters.

Every schema change here needs an Alembic migration under `migrations/versions/`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    """Timezone-aware current time; every timestamp we store is UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of every zantara table."""

    type_annotation_map = {dict[str, Any]: JSONType, list[dict[str, Any]]: JSONType}


class Interaction(Base):
    """One chat completion served: what was asked, what was answered, by which variant."""

    __tablename__ = "interactions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    user_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    model_requested: Mapped[str] = mapped_column(String(200))
    routed: Mapped[bool] = mapped_column(Boolean, default=True)
    variant: Mapped[str] = mapped_column(String(16), index=True)
    adapter_name: Mapped[str | None] = mapped_column(String(200))
    adapter_version: Mapped[str | None] = mapped_column(String(64))
    messages: Mapped[list[dict[str, Any]]]
    answer: Mapped[str] = mapped_column(Text)
    finish_reason: Mapped[str] = mapped_column(String(32))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    latency_s: Mapped[float] = mapped_column(Float)
    ttft_s: Mapped[float | None] = mapped_column(Float)
    params: Mapped[dict[str, Any]]
    streamed: Mapped[bool] = mapped_column(Boolean, default=False)
    needs_review: Mapped[bool] = mapped_column(Boolean, default=False, index=True)

    rating: Mapped[Rating | None] = relationship(back_populates="interaction", uselist=False)


class Rating(Base):
    """The current 1-5 star rating of an interaction; rating again replaces it."""

    __tablename__ = "ratings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    interaction_id: Mapped[str] = mapped_column(
        ForeignKey("interactions.id", ondelete="CASCADE"), unique=True, index=True
    )
    stars: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    interaction: Mapped[Interaction] = relationship(back_populates="rating")


class Correction(Base):
    """A reviewer's correction of a wrong answer: the error-correction record training learns from."""

    __tablename__ = "corrections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    interaction_id: Mapped[str | None] = mapped_column(
        ForeignKey("interactions.id", ondelete="SET NULL"), index=True
    )
    query: Mapped[str] = mapped_column(Text)
    model_answer_wrong: Mapped[str] = mapped_column(Text)
    correct_answer: Mapped[str] = mapped_column(Text)
    why_wrong: Mapped[str] = mapped_column(Text, default="")
    lesson: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str | None] = mapped_column(String(32))
    reviewer: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class RolloutState(Base):
    """The single current rollout: which adapter is the tuned variant and its share of users."""

    __tablename__ = "rollout_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    percentage: Mapped[float] = mapped_column(Float)
    adapter: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(200))


class RolloutEvent(Base):
    """Audit trail: every change of the rollout (who, when, from, to, why)."""

    __tablename__ = "rollout_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(32))
    from_percentage: Mapped[float | None] = mapped_column(Float)
    to_percentage: Mapped[float] = mapped_column(Float)
    from_adapter: Mapped[str | None] = mapped_column(String(200))
    to_adapter: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text, default="")


class AdapterVersion(Base):
    """Adapter registry: every trained LoRA adapter version, where it lives and how it scored."""

    __tablename__ = "adapter_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_adapter_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    base_model: Mapped[str] = mapped_column(Text)
    dataset_version: Mapped[str | None] = mapped_column(String(128))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(32), default="registered")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
