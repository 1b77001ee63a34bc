"""SQLAlchemy 2.0 models: interactions, ratings, corrections, rollout state and events, adapters,
reviewers and blind A/B judgments.

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
    """One chat completion served: what was asked, what was answered, by which variant (`base` or
    `tuned`) and which of the router's targets (`base`, `live`, `canary`; `pinned` when the request
    named its model)."""

    __tablename__ = "interactions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    user_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    model_requested: Mapped[str] = mapped_column(String(200))
    routed: Mapped[bool] = mapped_column(Boolean, default=True)
    variant: Mapped[str] = mapped_column(String(16), index=True)
    target: Mapped[str | None] = mapped_column(String(16), index=True)
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
    key_hash: Mapped[str | None] = mapped_column(String(64))
    """Hash of the API key that received the answer (None when `/v1` is open): only it may rate."""
    fact_critical: Mapped[int | None] = mapped_column(Integer, index=True)
    """Figures of the answer that contradict a verified fact of the registry (a critical error: the
    answer is in the review queue); None until the background check has read it."""
    fact_warnings: Mapped[int | None] = mapped_column(Integer)
    """Figures that disagree only with registry facts still waiting for confirmation; None until checked."""
    fact_findings: Mapped[list[dict[str, Any]] | None]
    """Each such figure: severity, the figure as written, the facts and their values (JSON)."""

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
    check_override: Mapped[str | None] = mapped_column(Text)
    """The reviewer's reason for saving a correction that fails a dataset check (None: it passed)."""
    rejected_reason: Mapped[str | None] = mapped_column(Text)
    """Why a retrain left this correction out (the record and the rule); None while it is usable."""
    rejected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DeadLetter(Base):
    """A write the database refused for its data (PostgreSQL class 22, an integrity error), kept with
    the error instead of blocking the writes behind it. `payload` is the record as JSON text."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(64), index=True)
    payload: Mapped[str] = mapped_column(Text)
    error: Mapped[str] = mapped_column(Text)
    sqlstate: Mapped[str | None] = mapped_column(String(5))
    source: Mapped[str] = mapped_column(String(16))


class RolloutState(Base):
    """The single current rollout: the canary adapter (`adapter`) and its share of users, and the live
    adapter (`live_adapter`, None for the base model) that serves everyone else."""

    __tablename__ = "rollout_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    percentage: Mapped[float] = mapped_column(Float)
    adapter: Mapped[str | None] = mapped_column(String(200))
    live_adapter: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(200))


class RolloutEvent(Base):
    """Audit trail: every change of the rollout (who, when, from, to, why; `details` holds the numbers
    behind an automatic decision). `*_adapter` is the canary, `*_live` the live adapter."""

    __tablename__ = "rollout_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(32))
    from_percentage: Mapped[float | None] = mapped_column(Float)
    to_percentage: Mapped[float] = mapped_column(Float)
    from_adapter: Mapped[str | None] = mapped_column(String(200))
    to_adapter: Mapped[str | None] = mapped_column(String(200))
    from_live: Mapped[str | None] = mapped_column(String(200))
    to_live: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class AdapterVersion(Base):
    """Adapter registry: every trained LoRA adapter version, where it lives, where it came from (dataset,
    parent version), how it scored (metrics, gate report), who made it and its lifecycle status:
    `candidate`, `rejected`, `canary`, `live` or `retired` (see `feedback.registry`)."""

    __tablename__ = "adapter_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_adapter_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    base_model: Mapped[str] = mapped_column(Text)
    dataset_version: Mapped[str | None] = mapped_column(String(128))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(32), default="candidate")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    parent_version: Mapped[str | None] = mapped_column(String(64))
    gate_report: Mapped[dict[str, Any]] = mapped_column(default=dict)
    report_path: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    last_correction_id: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Reviewer(Base):
    """A named person who judges answers on the review pages; only a hash of their token is stored."""

    __tablename__ = "reviewers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ReviewerSession(Base):
    """A signed-in browser: the sha256 of its random session id (the cookie), its reviewer, its expiry."""

    __tablename__ = "reviewer_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("reviewers.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class ABPair(Base):
    """A blind A/B item: one question with the base model's and an adapter's answers, and which is which."""

    __tablename__ = "ab_pairs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    question: Mapped[str] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(64))
    register: Mapped[str | None] = mapped_column(String(32))
    complexity: Mapped[str | None] = mapped_column(String(32))
    base_model: Mapped[str] = mapped_column(String(200))
    adapter: Mapped[str] = mapped_column(String(200), index=True)
    base_answer: Mapped[str] = mapped_column(Text)
    adapter_answer: Mapped[str] = mapped_column(Text)
    dataset_version: Mapped[str | None] = mapped_column(String(128))
    source_id: Mapped[str | None] = mapped_column(String(200))


class ABAssignment(Base):
    """A pair shown to a reviewer, with the order it was shown in (whether the adapter's answer was A)."""

    __tablename__ = "ab_assignments"
    __table_args__ = (UniqueConstraint("pair_id", "reviewer_id", name="uq_ab_assignment_pair_reviewer"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("ab_pairs.id", ondelete="CASCADE"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("reviewers.id", ondelete="CASCADE"), index=True)
    adapter_first: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ABJudgment(Base):
    """One reviewer's verdict on a pair: which variant won (`base`, `tuned` or `tie`) and 1-10 ratings
    of each variant's answer, stored by variant so no later step needs the display order."""

    __tablename__ = "ab_judgments"
    __table_args__ = (UniqueConstraint("pair_id", "reviewer_id", name="uq_ab_judgment_pair_reviewer"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("ab_pairs.id", ondelete="CASCADE"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("reviewers.id", ondelete="CASCADE"), index=True)
    winner: Mapped[str] = mapped_column(String(8))
    adapter_first: Mapped[bool] = mapped_column(Boolean)
    base_naturalness: Mapped[int] = mapped_column(Integer)
    base_accuracy: Mapped[int] = mapped_column(Integer)
    base_completeness: Mapped[int] = mapped_column(Integer)
    tuned_naturalness: Mapped[int] = mapped_column(Integer)
    tuned_accuracy: Mapped[int] = mapped_column(Integer)
    tuned_completeness: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReviewDismissal(Base):
    """A low-rated answer a reviewer looked at and judged not worth correcting (and why)."""

    __tablename__ = "review_dismissals"

    interaction_id: Mapped[str] = mapped_column(
        ForeignKey("interactions.id", ondelete="CASCADE"), primary_key=True
    )
    reviewer: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DatasetRecord(Base):
    """A dataset pair waiting for (or having had) human validation: a variation, synthetic or imported
    pair, keyed by its stable record id, as submitted from a built dataset version."""

    __tablename__ = "dataset_records"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    dataset_version: Mapped[str] = mapped_column(String(128), index=True)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(64))
    register: Mapped[str | None] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(32))
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DatasetReview(Base):
    """One reviewer's verdict on a dataset record: `approve`, `edit` (with the edited text) or `reject`."""

    __tablename__ = "dataset_reviews"
    __table_args__ = (UniqueConstraint("record_id", "reviewer_id", name="uq_dataset_review_record_reviewer"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    record_id: Mapped[str] = mapped_column(ForeignKey("dataset_records.id", ondelete="CASCADE"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("reviewers.id", ondelete="CASCADE"), index=True)
    action: Mapped[str] = mapped_column(String(16))
    question: Mapped[str | None] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Lease(Base):
    """A named, expiring lock held by one process (the canary guardrail's replica, one retrain run)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RetrainRun(Base):
    """One `zantara retrain` run: the step it reached and what each step produced, so a crashed run
    resumes where it stopped instead of starting over."""

    __tablename__ = "retrain_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(32), default="running")
    step: Mapped[str] = mapped_column(String(32), default="start")
    adapter_name: Mapped[str] = mapped_column(String(200))
    parent_version: Mapped[str | None] = mapped_column(String(64))
    adapter_version: Mapped[str | None] = mapped_column(String(64))
    dataset_version: Mapped[str | None] = mapped_column(String(128))
    from_scratch: Mapped[bool] = mapped_column(Boolean, default=False)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
