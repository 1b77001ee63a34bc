"""The numbers the canary guardrail judges, read from the database over the canary period.

Two arms are compared over the same period: the canary (interactions the router sent to the canary
adapter) and the control (the live adapter's interactions, or the base model's while no adapter is
live). Pinned requests (a model named explicitly) belong to neither arm. Per arm:

- ratings: each **user's latest rating counts once** (a user: the hash of the request's user key, else
  the hash of the API key that received the answer, else the answer itself), so one client rating
  many answers weighs as one user; also how many ratings there are in all;
- requests, failed generations (`finish_reason == "error"`) and the distinct users served;
- answers whose figures the background fact check has read (`fact_critical` set), and those among
  them with a critical error (a figure contradicting a verified registry fact);
- latency per output token (`latency_s / completion_tokens` of every answer with tokens that did not
  fail): its median and 90th percentile, so answer length does not count and one slow answer does not
  decide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, String, and_, case, distinct, func, literal, or_, select
from sqlalchemy.orm import Session

from database.models import Interaction, Rating, RolloutEvent

STARS = (1, 2, 3, 4, 5)
USER_RULE = (
    "each user's latest rating counts once per arm (a user: the hash of the request's user key, else "
    "of its API key, else the answer itself)"
)


@dataclass(frozen=True)
class ArmStats:
    """One arm of the comparison: `target` is the router's target (`canary`, `live` or `base`)."""

    target: str
    adapter: str | None
    stars: tuple[int, ...]
    """How many users' latest ratings have 1, 2, 3, 4 and 5 stars (one per user)."""
    ratings: int
    """Every current rating of the arm's answers (a user who rated many answers counts many times)."""
    requests: int
    errors: int
    served_users: int
    """Distinct users the arm answered."""
    timed: int
    """Answers whose latency per output token counts (tokens generated, not failed)."""
    median_s_per_token: float | None
    p90_s_per_token: float | None
    fact_checked: int = 0
    """Answers whose figures the background fact check has read."""
    fact_critical: int = 0
    """Of those, answers with at least one critical fact error (a contradicted verified fact)."""

    @property
    def rated(self) -> int:
        """Distinct users who rated (each with their latest rating)."""
        return sum(self.stars)

    @property
    def users_ratings(self) -> list[int]:
        """Each rating user's latest stars (lowest first): the sample the rating test compares."""
        return [star for star, count in zip(STARS, self.stars, strict=True) for _ in range(count)]

    @property
    def mean(self) -> float | None:
        """Mean of the users' latest stars, None without ratings."""
        return sum(s * c for s, c in zip(STARS, self.stars, strict=True)) / self.rated if self.rated else None

    @property
    def error_rate(self) -> float | None:
        """Share of requests whose generation failed, None without requests."""
        return self.errors / self.requests if self.requests else None

    @property
    def fact_error_rate(self) -> float | None:
        """Share of fact-checked answers with a critical fact error, None without checked answers."""
        return self.fact_critical / self.fact_checked if self.fact_checked else None


@dataclass(frozen=True)
class CanaryStats:
    """Both arms over `since`..`until`, and the canary's ratings since its share last changed."""

    since: datetime
    until: datetime
    canary: ArmStats
    control: ArmStats
    fresh_canary_ratings: int
    """Canary ratings on interactions served since `step_since` (at the current share)."""
    fresh_canary_users: int
    """Distinct users behind `fresh_canary_ratings`."""


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
    fresh, fresh_users = session.execute(
        select(func.count(Rating.id), func.count(distinct(user_of_interaction())))
        .join(Interaction, Rating.interaction_id == Interaction.id)
        .where(_arm("canary", canary, step_since, until), Rating.created_at <= until)
    ).one()
    return CanaryStats(
        since=since,
        until=until,
        canary=_read_arm(session, "canary", canary, canary_arm, until),
        control=_read_arm(session, "live" if live else "base", live, control_arm, until),
        fresh_canary_ratings=int(fresh or 0),
        fresh_canary_users=int(fresh_users or 0),
    )


def user_of_interaction() -> ColumnElement[str]:
    """Whom an interaction counts for: its user key's hash, else its API key's hash, else itself."""
    return func.coalesce(
        literal("u:", String) + Interaction.user_hash,
        literal("k:", String) + Interaction.key_hash,
        literal("i:", String) + Interaction.id,
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
    newest_first = (Rating.updated_at.desc(), Rating.id.desc())
    rated = (
        select(
            Rating.stars.label("stars"),
            func.row_number().over(partition_by=user_of_interaction(), order_by=newest_first).label("newest"),
        )
        .join(Interaction, Rating.interaction_id == Interaction.id)
        .where(arm, Rating.created_at <= until)
        .subquery()
    )
    by_star = {
        int(stars): (int(latest), int(every))
        for stars, latest, every in session.execute(
            select(rated.c.stars, func.sum(case((rated.c.newest == 1, 1), else_=0)), func.count()).group_by(
                rated.c.stars
            )
        ).tuples()
    }
    requests, errors, users, checked, critical = session.execute(
        select(
            func.count(Interaction.id),
            func.coalesce(func.sum(case((Interaction.finish_reason == "error", 1), else_=0)), 0),
            func.count(distinct(user_of_interaction())),
            func.count(Interaction.fact_critical),
            func.coalesce(func.sum(case((Interaction.fact_critical > 0, 1), else_=0)), 0),
        ).where(arm)
    ).one()
    timed, median, p90 = _s_per_token(session, arm)
    return ArmStats(
        target=target,
        adapter=adapter,
        stars=tuple(by_star.get(star, (0, 0))[0] for star in STARS),
        ratings=sum(every for _, every in by_star.values()),
        requests=int(requests),
        errors=int(errors),
        served_users=int(users),
        timed=timed,
        median_s_per_token=median,
        p90_s_per_token=p90,
        fact_checked=int(checked),
        fact_critical=int(critical),
    )


def _s_per_token(session: Session, arm: ColumnElement[bool]) -> tuple[int, float | None, float | None]:
    """(answers timed, median, 90th percentile) of the arm's seconds per output token (nearest rank)."""
    timed = and_(arm, Interaction.completion_tokens > 0, Interaction.finish_reason != "error")
    per_token = Interaction.latency_s / Interaction.completion_tokens
    count = int(session.scalar(select(func.count(Interaction.id)).where(timed)) or 0)

    def quantile(q: float) -> float | None:
        if count == 0:
            return None
        rank = max(math.ceil(q * count), 1)
        value = session.scalar(select(per_token).where(timed).order_by(per_token).offset(rank - 1).limit(1))
        return None if value is None else float(value)

    return count, quantile(0.5), quantile(0.9)


def _aware(moment: datetime) -> datetime:
    """SQLite hands timestamps back without a zone; they are UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
