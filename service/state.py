"""What the lifespan builds and the routes reach through dependencies (never module globals)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine as DatabaseEngine
from sqlalchemy.orm import Session, sessionmaker

from router.rollout import RolloutStore
from service.engines.base import Engine
from service.metrics import Metrics
from service.settings import Settings


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
    started: bool = False
    startup_error: str | None = None
    startup: dict[str, float] = field(default_factory=dict)
