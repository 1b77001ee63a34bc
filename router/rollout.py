"""Rollout state in the database (every replica agrees), a short cache, and audited changes.

The rollout has up to two adapters: the live one (None: the base model) serves everyone, except the
canary's sticky share of users. Every change is an audit event and moves the adapters' registry
statuses in the same transaction (see `feedback.registry`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from feedback.models import RolloutEvent, RolloutState, utcnow
from feedback.registry import get_version, set_status

STATE_ID = 1
ROLLBACKS = ("rollback", "auto-rollback")
PROMOTIONS = ("promote", "auto-promote")


class _Keep:
    """Marker: leave the live adapter as it is."""


KEEP: Final = _Keep()


@dataclass(frozen=True)
class Rollout:
    """The canary (`adapter`) and its share of users (`percentage`), and the live adapter that serves
    everyone else (`live_adapter`; None: the base model)."""

    percentage: float
    adapter: str | None
    updated_at: datetime | None
    updated_by: str
    live_adapter: str | None = None

    @property
    def canary_active(self) -> bool:
        """True when a canary adapter receives users."""
        return self.adapter is not None and self.percentage > 0


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
                started = Rollout(self._default.percentage, adapter, now, actor)
                _move_statuses(session, Rollout(0.0, None, None, "nobody"), started, "initial")
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
        if (cached := self.cached()) is not None:
            return cached
        with self._sessions() as session:
            row = session.get(RolloutState, STATE_ID)
            rollout = (
                self._default
                if row is None
                else Rollout(row.percentage, row.adapter, row.updated_at, row.updated_by, row.live_adapter)
            )
        with self._lock:
            self._cached, self._cached_at = rollout, time.monotonic()
        return rollout

    def cached(self) -> Rollout | None:
        """The rollout while the cache is fresh, else None; never reads the database."""
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached_at < self._cache_s:
                return self._cached
        return None

    def invalidate(self) -> None:
        """Forget the cached rollout (after a change made by this replica)."""
        with self._lock:
            self._cached = None

    def change(
        self,
        *,
        percentage: float,
        adapter: str | None,
        actor: str,
        action: str,
        reason: str = "",
        live_adapter: str | None | _Keep = KEEP,
        details: dict[str, Any] | None = None,
    ) -> tuple[Rollout, Rollout]:
        """Set the canary and its share (and the live adapter, unless KEEP), record who changed it from
        what to what and why, and move registry statuses; returns (before, after)."""
        if not 0 <= percentage <= 100:
            raise ValueError(f"percentage must be within 0-100, got {percentage}")
        with self._sessions.begin() as session:
            before, row = self._locked(session)
            live = before.live_adapter if isinstance(live_adapter, _Keep) else live_adapter
            now = utcnow()
            row.percentage, row.adapter, row.live_adapter = percentage, adapter, live
            row.updated_at, row.updated_by = now, actor
            after = Rollout(percentage, adapter, now, actor, live)
            session.add(
                RolloutEvent(
                    created_at=now,
                    actor=actor,
                    action=action,
                    from_percentage=before.percentage,
                    to_percentage=percentage,
                    from_adapter=before.adapter,
                    to_adapter=adapter,
                    from_live=before.live_adapter,
                    to_live=live,
                    reason=reason,
                    details=details or {},
                )
            )
            _move_statuses(session, before, after, action)
        self.invalidate()
        return before, after

    def promote(
        self, *, actor: str, action: str = "promote", reason: str = "", details: dict[str, Any] | None = None
    ) -> tuple[Rollout, Rollout]:
        """Make the canary the live adapter for everyone (the previous live version retires)."""
        current = self._read_fresh()
        if current.adapter is None:
            raise NoCanaryError("there is no canary to promote")
        return self.change(
            percentage=0,
            adapter=None,
            live_adapter=current.adapter,
            actor=actor,
            action=action,
            reason=reason,
            details=details,
        )

    def rollback(
        self, *, actor: str, action: str = "rollback", reason: str = "", details: dict[str, Any] | None = None
    ) -> tuple[Rollout, Rollout]:
        """One step back: an active canary stops receiving users (they return to the live adapter or the
        base); with no active canary, the live adapter gives way to the previous live one, or the base."""
        current = self._read_fresh()
        if current.canary_active:
            return self.change(
                percentage=0,
                adapter=current.adapter,
                actor=actor,
                action=action,
                reason=reason,
                details=details,
            )
        return self.change(
            percentage=0,
            adapter=current.adapter,
            live_adapter=self.previous_live(current.live_adapter),
            actor=actor,
            action=action,
            reason=reason,
            details=details,
        )

    def previous_live(self, live: str | None) -> str | None:
        """The adapter that was live when `live` was last promoted (None: the base model); a rollback
        that restored `live` does not count, so repeated rollbacks walk back through the promotions."""
        if live is None:
            return None
        with self._sessions() as session:
            event = session.scalars(
                select(RolloutEvent)
                .where(RolloutEvent.to_live == live, RolloutEvent.action.in_(PROMOTIONS))
                .order_by(RolloutEvent.id.desc())
                .limit(1)
            ).first()
            return event.from_live if event is not None else None

    def _read_fresh(self) -> Rollout:
        self.invalidate()
        return self.current()

    def _locked(self, session: Session) -> tuple[Rollout, RolloutState]:
        """The stored rollout, row-locked (created from the default first if missing: two first changes
        at once serialise on the row instead of both inserting it)."""
        default = self._default
        created = _insert_if_absent(session, default.percentage, default.adapter, utcnow(), "default")
        row = session.scalars(select(RolloutState).where(RolloutState.id == STATE_ID).with_for_update()).one()
        before = (
            default
            if created
            else Rollout(row.percentage, row.adapter, row.updated_at, row.updated_by, row.live_adapter)
        )
        return before, row

    def history(self, limit: int = 50) -> list[RolloutEvent]:
        """The latest audit events, newest first."""
        with self._sessions() as session:
            return list(session.scalars(select(RolloutEvent).order_by(RolloutEvent.id.desc()).limit(limit)))


class NoCanaryError(LookupError):
    """Promotion asked for while no canary is set."""


def _move_statuses(session: Session, before: Rollout, after: Rollout, action: str) -> None:
    """Registry statuses that follow from a rollout change (versions the registry does not know, such
    as adapters loaded by hand from a path, are left alone)."""
    changes: dict[str, str] = {}
    if before.live_adapter and before.live_adapter != after.live_adapter:
        changes[before.live_adapter] = "rejected" if action in ROLLBACKS else "retired"
    left_canary = before.adapter if before.canary_active else None
    if left_canary and not (after.canary_active and after.adapter == left_canary):
        changes[left_canary] = "rejected" if action in ROLLBACKS else "candidate"
    if after.canary_active and after.adapter:
        changes[after.adapter] = "canary"
    if after.live_adapter:
        changes[after.live_adapter] = "live"
    for key, status in changes.items():
        entry = get_version(session, key)
        if entry is not None and entry.status != status:
            set_status(session, key, status)


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
