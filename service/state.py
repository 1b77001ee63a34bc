"""What the lifespan builds and the routes reach through dependencies (never module globals)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine as DatabaseEngine
from sqlalchemy.orm import Session, sessionmaker

from database.engine import DirectConnections
from feedback.answer_facts import AnswerFacts
from feedback.records import InteractionRecord
from feedback.writer import FeedbackWriter
from knowledge.errors import DatasetInputError
from router.rollout import Rollout, RolloutStore
from service.engines.base import Engine
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ServiceState:
    """The live objects of one running service."""

    settings: Settings
    metrics: Metrics
    database: DatabaseEngine
    sessions: sessionmaker[Session]
    rollout: RolloutStore
    engine: Engine
    base_model_id: str
    feedback: FeedbackWriter
    started: bool = False
    startup_error: str | None = None
    startup: dict[str, float] = field(default_factory=dict)
    last_rollout: Rollout | None = None
    """The rollout last read from the database: routing keeps using it while the database is down."""
    loading: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while a version is hot-loaded, so concurrent requests for it load it once."""


def feedback_writer(
    settings: Settings,
    sessions: sessionmaker[Session],
    metrics: Metrics,
    direct: DirectConnections | None = None,
) -> FeedbackWriter:
    """The interaction/rating writer, spooling under `var_dir/spool/`, counted in `metrics`; its writes
    go through `direct` when there are such connections (PostgreSQL)."""
    writer = FeedbackWriter(
        sessions,
        settings.var_dir / "spool" / "feedback.sqlite3",
        buffer_limit=settings.interaction_buffer_size,
        retry_s=settings.spool_retry_s,
        orphan_ttl_s=settings.spool_orphan_ttl_s,
        spool_max_bytes=settings.spool_max_bytes,
        on_rating=metrics.count_rating,
        on_drop=lambda kind: metrics.feedback_dropped.labels(kind).inc(),
        direct=direct,
        max_tries=settings.spool_max_tries,
        on_dead_letter=lambda kind: metrics.feedback_dead_letters.labels(kind).inc(),
        check_facts=answer_fact_check(settings),
        on_checked=metrics.count_fact_check,
    )
    metrics.watch_feedback(writer)
    return writer


def answer_fact_check(settings: Settings) -> Callable[[InteractionRecord], InteractionRecord] | None:
    """The background check of served answers against the fact registry (`ZANTARA_FACTS_PATH`); None
    when `ZANTARA_FACT_CHECK_ENABLED` is off, or the registry cannot be read (logged: serving goes on)."""
    if not settings.fact_check_enabled:
        return None
    try:
        return AnswerFacts.from_path(settings.facts_path).check
    except DatasetInputError as error:
        log.error("answers are not checked against the fact registry %s: %s", settings.facts_path, error)
        return None
