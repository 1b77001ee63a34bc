"""Quality signals per adapter version over a recent window: how many of its answers reviewers
corrected, and how many distinct users rated them (the service exports both as gauges).

One grouped query over the interactions served since `since` (the `created_at` index bounds it):
per adapter version (`NAME@VERSION`, "" for the base model) the answers served, those with a
correction no retrain rejected, and the distinct users who rated one (a user as the canary guardrail
counts them: `feedback.canary_stats.user_of_interaction`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, distinct, exists, func, select
from sqlalchemy.orm import Session, sessionmaker

from database.models import Correction, Interaction, Rating
from feedback.canary_stats import user_of_interaction
from feedback.records import adapter_key


@dataclass(frozen=True)
class AdapterQuality:
    """One adapter version's answers in the window, how many were corrected, how many users rated."""

    adapter: str
    answers: int
    corrected: int
    raters: int

    @property
    def correction_rate(self) -> float:
        """Share of the answers a reviewer corrected (0 without answers)."""
        return self.corrected / self.answers if self.answers else 0.0


def adapter_quality(sessions: sessionmaker[Session], since: datetime) -> list[AdapterQuality]:
    """Every adapter version (and the base model) that answered since `since`, by adapter key."""
    corrected = exists().where(Correction.interaction_id == Interaction.id, Correction.rejected_at.is_(None))
    query = (
        select(
            Interaction.adapter_name,
            Interaction.adapter_version,
            func.count(Interaction.id),
            func.coalesce(func.sum(case((corrected, 1), else_=0)), 0),
            func.count(distinct(case((Rating.id.is_not(None), user_of_interaction())))),
        )
        .outerjoin(Rating, Rating.interaction_id == Interaction.id)
        .where(Interaction.created_at >= since)
        .group_by(Interaction.adapter_name, Interaction.adapter_version)
    )
    totals: dict[str, AdapterQuality] = {}
    with sessions() as session:
        for name, version, answers, fixed, raters in session.execute(query).tuples():
            key = adapter_key(name, version)
            before = totals.get(key, AdapterQuality(key, 0, 0, 0))
            # a bare name without version and the base model both read as "": summed (raters at most)
            totals[key] = AdapterQuality(
                key,
                before.answers + int(answers),
                before.corrected + int(fixed),
                max(before.raters, int(raters)),
            )
    return sorted(totals.values(), key=lambda quality: quality.adapter)
