"""The numbers the canary guardrail judges, read from the database over the canary period.

Two arms are compared over the same period: the canary (interactions the router sent to the canary
adapter) and the control (the live adapter's interactions, or the base model's while no adapter is
live). Per arm: the current star ratings (counted per star), requests, failed generations
(`finish_reason == "error"`) and the p99 latency. Pinned requests (a model named explicitly) belong
to neither arm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.orm import Session

from feedback.models import Interaction, Rating, RolloutEvent

STARS = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class ArmStats:
    """One arm of the comparison: `target` is the router's target (`canary`, `live` or `base`)."""

    target: str
    adapter: str | None
    stars: tuple[int, ...]
    """How many current ratings have 1, 2, 3, 4 and 5 stars."""
    requests: int
    errors: int
    p99_latency_s: float | None

    @property
    def rated(self) -> int:
        """Number of rated interactions."""
        return sum(self.stars)

    @property
    def ratings(self) -> list[int]:
        """Every current rating, as a list of stars (lowest first)."""
        return [star for star, count in zip(STARS, self.stars, strict=True) for _ in range(count)]

    @property
    def mean(self) -> float | None:
        """Mean stars, None without ratings."""
        return sum(s * c for s, c in zip(STARS, self.stars, strict=True)) / self.rated if self.rated else None

    @property
    def error_rate(self) -> float | None:
        """Share of requests whose generation failed, None without requests."""
        return self.errors / self.requests if self.requests else None


@dataclass(frozen=True)
class CanaryStats:
    """Both arms over `since`..`until`, and the canary's ratings since its share last changed."""

    since: datetime
    until: datetime
    canary: ArmStats
    control: ArmStats
    fresh_canary_ratings: int
    """Canary ratings on interactions served since `step_since` (at the current share)."""


def canary_period(
    session: Session, canary: str, *, changed_at: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """(since, step_since) of the current canary: when its period began, and when its share last
    changed (`changed_at`, the rollout's `updated_at`).

    The period begins with the latest rollout event that gave `canary` a share while it had none
    (first set, or set again after a rollback); steps of its share do not start a new period. Without
    such an event (a rollout stored without its audit trail) it begins at `changed_at`, else `now`.
    """
    started = session.scalars(
        select(RolloutEvent.created_at)
        .where(RolloutEvent.to_adapter == canary, RolloutEvent.to_percentage > 0)
        .where(
            or_(
                RolloutEvent.from_adapter.is_(None),
                RolloutEvent.from_adapter != canary,
                RolloutEvent.from_percentage.is_(None),
                RolloutEvent.from_percentage <= 0,
            )
        )
        .order_by(RolloutEvent.id.desc())
        .limit(1)
    ).first()
    changed = _aware(changed_at) if changed_at is not None else None
    since = _aware(started) if started is not None else changed or now
    return since, max(changed or since, since)


def collect(
    session: Session,
    *,
    canary: str,
    live: str | None,
    since: datetime,
    until: datetime,
    step_since: datetime,
) -> CanaryStats:
    """Read both arms over interactions created in `since`..`until` (ratings given up to `until`).

    `canary` and `live` are `NAME@VERSION` (a bare `NAME` matches every version of it); the control
    arm is the live adapter's when `live` is set, else the base model's.
    """
    canary_arm = _arm("canary", canary, since, until)
    control_arm = _arm("live", live, since, until) if live else _arm("base", None, since, until)
    fresh = session.scalar(
        select(func.count(Rating.id))
        .join(Interaction, Rating.interaction_id == Interaction.id)
        .where(_arm("canary", canary, step_since, until), Rating.created_at <= until)
    )
    return CanaryStats(
        since=since,
        until=until,
        canary=_read_arm(session, "canary", canary, canary_arm, until),
        control=_read_arm(session, "live" if live else "base", live, control_arm, until),
        fresh_canary_ratings=int(fresh or 0),
    )


def _arm(target: str, adapter: str | None, since: datetime, until: datetime) -> ColumnElement[bool]:
    """The interactions of one arm served in `since`..`until`."""
    conditions = [
        Interaction.target == target,
        Interaction.created_at >= since,
        Interaction.created_at <= until,
    ]
    if adapter is not None:
        name, _, version = adapter.partition("@")
        conditions.append(Interaction.adapter_name == name)
        if version:
            conditions.append(Interaction.adapter_version == version)
    return and_(*conditions)


def _read_arm(
    session: Session, target: str, adapter: str | None, arm: ColumnElement[bool], until: datetime
) -> ArmStats:
    by_star = dict(
        session.execute(
            select(Rating.stars, func.count(Rating.id))
            .join(Interaction, Rating.interaction_id == Interaction.id)
            .where(arm, Rating.created_at <= until)
            .group_by(Rating.stars)
        )
        .tuples()
        .all()
    )
    requests, errors = session.execute(
        select(
            func.count(Interaction.id),
            func.coalesce(func.sum(case((Interaction.finish_reason == "error", 1), else_=0)), 0),
        ).where(arm)
    ).one()
    return ArmStats(
        target=target,
        adapter=adapter,
        stars=tuple(int(by_star.get(star, 0)) for star in STARS),
        requests=int(requests),
        errors=int(errors),
        p99_latency_s=_p99(session, arm, int(requests)),
    )


def _p99(session: Session, arm: ColumnElement[bool], requests: int) -> float | None:
    """Nearest-rank 99th percentile of the arm's latencies (the value at rank ceil(0.99 n))."""
    if requests == 0:
        return None
    from_top = requests - math.ceil(0.99 * requests)
    return session.scalar(
        select(Interaction.latency_s)
        .where(arm)
        .order_by(Interaction.latency_s.desc())
        .offset(from_top)
        .limit(1)
    )


def _aware(moment: datetime) -> datetime:
    """SQLite hands timestamps back without a zone; they are UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
