"""Rollout state in the database (every replica agrees), a short cache, and audited changes.

The rollout has up to two adapters: the live one (None: the base model) serves everyone, except the
canary's sticky share of users. Every change is an audit event and moves the adapters' registry
statuses in the same transaction (see `feedback.registry`).

Every change is a compare-and-set: the rollout it replaces is read inside the transaction that holds
the row lock (`SELECT ... FOR UPDATE` on PostgreSQL; on SQLite the transaction's first statement is a
write, which takes the database's write lock before the read), and the change's conditions (`Check`s:
an active canary to promote, the version the caller expects) are checked against that read, never
against a cached one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from database.models import RolloutEvent, RolloutState, utcnow
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

    @property
    def active_canary(self) -> str | None:
        """The canary adapter while it receives users, else None."""
        return self.adapter if self.canary_active else None

    def describe(self) -> str:
        """One line for messages: the canary and its share, and the live adapter."""
        canary = (
            f"canary {self.adapter} at {self.percentage:g}%" if self.canary_active else "no active canary"
        )
        return f"{canary}, live {self.live_adapter or 'base model'}"

    def audience(self, key: str) -> str | None:
        """Whom this rollout sends to adapter `key`, in words; None when nobody (it may be unloaded)."""
        if self.live_adapter == key:
            return "every user outside the canary"
        if self.adapter == key and self.percentage > 0:
            return f"{self.percentage:g}% of users"
        return None

    def check_unload(self, key: str) -> None:
        """An adapter that serves users stays loaded: raise `RolloutConflict` (`adapter_in_rollout`)
        while this rollout sends anyone to `key`."""
        audience = self.audience(key)
        if audience is not None:
            raise RolloutConflict(
                f"{key} serves {audience}; roll back or switch the rollout to another adapter first.",
                code="adapter_in_rollout",
            )


class RolloutConflict(Exception):
    """A change refused because the rollout it would replace is not what the change requires (the
    caller's expected version, an active canary, ...): HTTP 409 with `code`."""

    code = "conflict"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code or self.code


class NoCanaryError(RolloutConflict):
    """Promotion asked for while no canary receives users."""

    code = "no_canary"


def check_canary_loaded(percentage: float, wanted: str | None, loaded: str | None, held: list[str]) -> None:
    """A canary that receives users must be an adapter this replica holds: raise `RolloutConflict`
    (`adapter_not_loaded`) when `percentage` is above 0 and `loaded` (the key of `wanted` once loaded,
    None when it could not be) is missing; `held` names the adapters loaded, for the message."""
    if percentage > 0 and loaded is None:
        hint = f"adapter {wanted!r} is not loaded and not registered" if wanted else "no adapter is set"
        raise RolloutConflict(
            f"Cannot send traffic to a canary: {hint}. Loaded: {held}.", code="adapter_not_loaded"
        )


Check = Callable[[Rollout], None]
"""A condition a change puts on the rollout it replaces, read inside the row lock; raises
`RolloutConflict` when the rollout does not meet it."""


def matches(expected: str, key: str | None) -> bool:
    """True when `key` (`NAME@VERSION`) is `expected`: that exact version, or any version of a bare NAME."""
    if key is None:
        return False
    return key == expected if "@" in expected else key.partition("@")[0] == expected


def canary_is(expected: str) -> Check:
    """The active canary must be `expected` (the version the caller saw and means to act on)."""

    def check(current: Rollout) -> None:
        if not current.canary_active or not matches(expected, current.adapter):
            raise RolloutConflict(
                f"expected the canary {expected}, but the rollout now has {current.describe()}"
            )

    return check


def rolls_back(expected: str) -> Check:
    """A rollback must take `expected` off: the active canary, or the live adapter while none is active
    (so two people rolling back one canary at once do not also roll back the live version)."""

    def check(current: Rollout) -> None:
        leaving = current.active_canary or current.live_adapter
        if not matches(expected, leaving):
            raise RolloutConflict(
                f"expected to roll back {expected}, but the rollout now has {current.describe()}"
            )

    return check


def adapter_is(expected: str | None) -> Check:
    """The stored canary adapter (active or not) must still be `expected`: a change prepared from a
    fresh read that keeps the canary must not keep one that another writer replaced meanwhile."""

    def check(current: Rollout) -> None:
        if current.adapter != expected:
            raise RolloutConflict(
                f"the canary changed while this change was prepared: the rollout now has {current.describe()}"
            )

    return check


def unchanged(read: Rollout) -> Check:
    """The rollout must still be exactly the one read before deciding (the guardrail's checks)."""

    def check(current: Rollout) -> None:
        same = (current.percentage, current.adapter, current.live_adapter, current.updated_at)
        if same != (read.percentage, read.adapter, read.live_adapter, read.updated_at):
            raise RolloutConflict(
                f"the rollout changed since it was read ({read.describe()}): it now has {current.describe()}"
            )

    return check


def not_live(key: str | None, percentage: float) -> Check:
    """A canary with a share must not be the live adapter (it already serves everyone else)."""

    def check(current: Rollout) -> None:
        if key is not None and percentage > 0 and key == current.live_adapter:
            raise RolloutConflict(
                f"{key} is already live: it serves every user outside the canary.", code="adapter_is_live"
            )

    return check


@dataclass(frozen=True)
class _Target:
    """What a change sets: the canary, its share, and the live adapter."""

    percentage: float
    adapter: str | None
    live_adapter: str | None


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
            rollout = self._default if row is None else _from_row(row)
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

    def fresh(self) -> Rollout:
        """The rollout read from the database now (the cache is refreshed, never trusted)."""
        self.invalidate()
        return self.current()

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
        expect: Sequence[Check] = (),
        audit_conflict: bool = False,
    ) -> tuple[Rollout, Rollout]:
        """Set the canary and its share (and the live adapter, unless KEEP), record who changed it from
        what to what and why, and move registry statuses; returns (before, after).

        `expect`: conditions on the rollout it replaces, checked inside the row lock (else
        `RolloutConflict`, nothing changed; with `audit_conflict` the refusal is an audit event)."""
        if not 0 <= percentage <= 100:
            raise ValueError(f"percentage must be within 0-100, got {percentage}")

        def plan(_: Session, before: Rollout) -> _Target:
            live = before.live_adapter if isinstance(live_adapter, _Keep) else live_adapter
            return _Target(percentage, adapter, live)

        return self._apply(plan, actor, action, reason, details, expect, audit_conflict)

    def promote(
        self,
        *,
        actor: str,
        action: str = "promote",
        reason: str = "",
        details: dict[str, Any] | None = None,
        expect: Sequence[Check] = (),
        audit_conflict: bool = False,
    ) -> tuple[Rollout, Rollout]:
        """Make the active canary the live adapter for everyone (the previous live version retires);
        `NoCanaryError` when no canary receives users (a rolled-back canary is never promoted)."""

        def plan(_: Session, before: Rollout) -> _Target:
            if before.active_canary is None:
                raise NoCanaryError(
                    f"There is no active canary to promote: the rollout has {before.describe()}."
                )
            return _Target(0, None, before.active_canary)

        return self._apply(plan, actor, action, reason, details, expect, audit_conflict)

    def rollback(
        self,
        *,
        actor: str,
        action: str = "rollback",
        reason: str = "",
        details: dict[str, Any] | None = None,
        expect: Sequence[Check] = (),
        audit_conflict: bool = False,
    ) -> tuple[Rollout, Rollout]:
        """One step back: an active canary stops receiving users (they return to the live adapter or the
        base); with no active canary, the live adapter gives way to the previous live one, or the base."""

        def plan(session: Session, before: Rollout) -> _Target:
            if before.canary_active:
                return _Target(0, before.adapter, before.live_adapter)
            return _Target(0, before.adapter, _previous_live(session, before.live_adapter))

        return self._apply(plan, actor, action, reason, details, expect, audit_conflict)

    def _apply(
        self,
        plan: Callable[[Session, Rollout], _Target],
        actor: str,
        action: str,
        reason: str,
        details: dict[str, Any] | None,
        expect: Sequence[Check],
        audit_conflict: bool,
    ) -> tuple[Rollout, Rollout]:
        """Read the rollout under its row lock, check `expect`, plan the change from that read and write
        it with its audit event, all in one transaction."""
        conflict: RolloutConflict | None = None
        with self._sessions.begin() as session:
            before, row = self._locked(session)
            try:
                for check in expect:
                    check(before)
                target = plan(session, before)
            except RolloutConflict as refused:
                if not audit_conflict:
                    raise
                conflict = refused
                session.add(
                    _event(utcnow(), actor, f"{action}-skipped", before, before, str(refused), details)
                )
            else:
                now = utcnow()
                row.percentage, row.adapter, row.live_adapter = (
                    target.percentage,
                    target.adapter,
                    target.live_adapter,
                )
                row.updated_at, row.updated_by = now, actor
                after = Rollout(target.percentage, target.adapter, now, actor, target.live_adapter)
                session.add(_event(now, actor, action, before, after, reason, details))
                _move_statuses(session, before, after, action)
        self.invalidate()
        if conflict is not None:
            raise conflict
        return before, after

    def _locked(self, session: Session) -> tuple[Rollout, RolloutState]:
        """The stored rollout, row-locked (created from the default first if missing: two first changes
        at once serialise on the row instead of both inserting it)."""
        default = self._default
        created = _insert_if_absent(session, default.percentage, default.adapter, utcnow(), "default")
        row = session.scalars(select(RolloutState).where(RolloutState.id == STATE_ID).with_for_update()).one()
        return (default if created else _from_row(row)), row

    def history(self, limit: int = 50) -> list[RolloutEvent]:
        """The latest audit events, newest first."""
        with self._sessions() as session:
            return list(session.scalars(select(RolloutEvent).order_by(RolloutEvent.id.desc()).limit(limit)))


def _from_row(row: RolloutState) -> Rollout:
    """The stored rollout (SQLite hands timestamps back without their zone: UTC)."""
    updated = row.updated_at
    if updated is not None and updated.tzinfo is None:
        updated = updated.replace(tzinfo=UTC)
    return Rollout(row.percentage, row.adapter, updated, row.updated_by, row.live_adapter)


def _previous_live(session: Session, live: str | None) -> str | None:
    """The adapter that was live when `live` was last promoted (None: the base model)."""
    if live is None:
        return None
    event = session.scalars(
        select(RolloutEvent)
        .where(RolloutEvent.to_live == live, RolloutEvent.action.in_(PROMOTIONS))
        .order_by(RolloutEvent.id.desc())
        .limit(1)
    ).first()
    return event.from_live if event is not None else None


def _event(
    now: datetime,
    actor: str,
    action: str,
    before: Rollout,
    after: Rollout,
    reason: str,
    details: dict[str, Any] | None,
) -> RolloutEvent:
    """The audit event of one change (or of a refused one: `before` and `after` alike)."""
    return RolloutEvent(
        created_at=now,
        actor=actor,
        action=action,
        from_percentage=before.percentage,
        to_percentage=after.percentage,
        from_adapter=before.adapter,
        to_adapter=after.adapter,
        from_live=before.live_adapter,
        to_live=after.live_adapter,
        reason=reason,
        details=details or {},
    )


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
