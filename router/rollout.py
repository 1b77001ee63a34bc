"""Rollout state in the database (every replica agrees), a short cache, and audited changes."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from feedback.models import RolloutEvent, RolloutState, utcnow

STATE_ID = 1


@dataclass(frozen=True)
class Rollout:
    """The share of users sent to the tuned variant, and which adapter that variant is."""

    percentage: float
    adapter: str | None
    updated_at: datetime | None
    updated_by: str


class RolloutStore:
    """Reads the rollout with a short per-replica cache; writes it with an audit event."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        default_percentage: float,
        default_adapter: str | None = None,
        cache_s: float = 2.0,
    ) -> None:
        self._sessions = sessions
        self._default = Rollout(default_percentage, default_adapter, None, "default")
        self._cache_s = cache_s
        self._cached: Rollout | None = None
        self._cached_at = 0.0
        self._lock = threading.Lock()

    def set_default_adapter(self, adapter: str | None) -> None:
        """The adapter used while the database holds no rollout yet."""
        self._default = Rollout(self._default.percentage, adapter, None, "default")
        self.invalidate()

    def initialise(self, adapter: str, *, actor: str = "system") -> bool:
        """Record the default share with `adapter` as the first rollout, audited as `initial`.

        Race-safe across replicas starting together: only the one whose insert creates the row
        records the event; the others (and every later start) leave the stored rollout alone.
        Returns whether this call created it.
        """
        now = utcnow()
        with self._sessions.begin() as session:
            created = _insert_if_absent(session, self._default.percentage, adapter, now, actor)
            if created:
                session.add(
                    RolloutEvent(
                        created_at=now,
                        actor=actor,
                        action="initial",
                        from_percentage=None,
                        to_percentage=self._default.percentage,
                        from_adapter=None,
                        to_adapter=adapter,
                        reason="first start without a stored rollout: default share, highest adapter version",
                    )
                )
        self.invalidate()
        return created

    def current(self) -> Rollout:
        """The rollout, from cache when fresh enough, else from the database."""
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached_at < self._cache_s:
                return self._cached
        with self._sessions() as session:
            row = session.get(RolloutState, STATE_ID)
            rollout = (
                self._default
                if row is None
                else Rollout(row.percentage, row.adapter, row.updated_at, row.updated_by)
            )
        with self._lock:
            self._cached, self._cached_at = rollout, time.monotonic()
        return rollout

    def invalidate(self) -> None:
        """Forget the cached rollout (after a change made by this replica)."""
        with self._lock:
            self._cached = None

    def change(
        self, *, percentage: float, adapter: str | None, actor: str, action: str, reason: str = ""
    ) -> tuple[Rollout, Rollout]:
        """Set the rollout and record who changed it from what to what; returns (before, after)."""
        if not 0 <= percentage <= 100:
            raise ValueError(f"percentage must be within 0-100, got {percentage}")
        with self._sessions.begin() as session:
            # Create the row first if it is missing (a no-op when it exists), then lock it: two first
            # changes at once serialise on the row instead of both inserting it.
            default = self._default
            created = _insert_if_absent(session, default.percentage, default.adapter, utcnow(), "default")
            row = session.scalars(
                select(RolloutState).where(RolloutState.id == STATE_ID).with_for_update()
            ).one()
            before = (
                default if created else Rollout(row.percentage, row.adapter, row.updated_at, row.updated_by)
            )
            now = utcnow()
            row.percentage, row.adapter, row.updated_at, row.updated_by = percentage, adapter, now, actor
            session.add(
                RolloutEvent(
                    created_at=now,
                    actor=actor,
                    action=action,
                    from_percentage=before.percentage,
                    to_percentage=percentage,
                    from_adapter=before.adapter,
                    to_adapter=adapter,
                    reason=reason,
                )
            )
        self.invalidate()
        return before, Rollout(percentage, adapter, now, actor)

    def history(self, limit: int = 50) -> list[RolloutEvent]:
        """The latest audit events, newest first."""
        with self._sessions() as session:
            return list(session.scalars(select(RolloutEvent).order_by(RolloutEvent.id.desc()).limit(limit)))


def _insert_if_absent(
    session: Session, percentage: float, adapter: str | None, now: datetime, actor: str
) -> bool:
    """Insert the rollout row unless it exists (`ON CONFLICT DO NOTHING`); True when this inserted it."""
    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"rollout storage supports PostgreSQL and SQLite, not {dialect}")
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement: postgresql.Insert | sqlite.Insert = insert(RolloutState).values(
        id=STATE_ID, percentage=percentage, adapter=adapter, updated_at=now, updated_by=actor
    )
    inserted = statement.on_conflict_do_nothing(index_elements=[RolloutState.id]).returning(RolloutState.id)
    return session.execute(inserted).scalar() is not None
