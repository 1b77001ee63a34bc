"""Blind A/B evaluation: queue base-vs-adapter answer pairs, hand them to reviewers, summarise verdicts.

Each reviewer sees a pair with the two answers in an order drawn for them and stored (`ABAssignment`),
so a verdict on "A" or "B" maps back to a variant without the page ever naming one. A pair goes to at
most `overlap` distinct reviewers (a judgment, or a showing younger than `lease`, holds a place, as
Argilla's `min_submitted` does), and never twice to the same reviewer.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

import numpy as np
from pydantic import Field
from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from database.models import ABAssignment, ABJudgment, ABPair, utcnow
from feedback.text import storable_or_none

CRITERIA = ("naturalness", "accuracy", "completeness")
"""What a reviewer rates, 1-10, for each of the two answers."""
CHOICES = ("A", "B", "tie")
MAX_PAIR_ID = 2**31 - 1
"""Pair ids are 32-bit integers in the database; larger numbers name no pair."""
_ORDINAL = {"base": 0.0, "tie": 1.0, "tuned": 2.0}


@dataclass(frozen=True)
class NewPair:
    """A question with the base model's and an adapter's answers, to be judged blind."""

    question: str
    category: str | None
    register: str | None
    complexity: str | None
    base_model: str
    adapter: str
    base_answer: str
    adapter_answer: str
    dataset_version: str | None
    source_id: str | None


@dataclass(frozen=True)
class ShownPair:
    """A pair as one reviewer sees it: the answers as A and B, nothing saying which variant is which."""

    pair_id: int
    question: str
    category: str | None
    register: str | None
    complexity: str | None
    answer_a: str
    answer_b: str


@dataclass(frozen=True)
class ABSummary:
    """The verdicts on one adapter's pairs.

    `win_rate` is the share of judgments preferring the adapter with ties counted as half a win,
    `(wins + ties / 2) / judgments`; `win_rate_ci` its 95% percentile bootstrap interval, resampling
    pairs (a pair's judgments move together, as reviewers of one pair are not independent).
    `mean_ratings["base"|"tuned"][criterion]` are 1-10 means. `krippendorff_alpha` is the ordinal
    agreement (base < tie < tuned) between reviewers on the choice, None when no pair has two
    reviewers or when every judgment is the same (alpha is then undefined).
    """

    adapter: str
    judgments: int
    wins: int
    losses: int
    ties: int
    win_rate: float | None
    # a list, not a tuple: Schemathesis 4 misreads a tuple's `prefixItems` schema
    win_rate_ci: Annotated[list[float] | None, Field(min_length=2, max_length=2)]
    mean_ratings: dict[str, dict[str, float]]
    krippendorff_alpha: float | None


class PairNotShownError(LookupError):
    """The reviewer was never shown this pair (unknown id, or not handed to them)."""


class AlreadyJudgedError(ValueError):
    """The reviewer already judged this pair; a verdict is final."""


def queue_pairs(sessions: sessionmaker[Session], pairs: Sequence[NewPair]) -> list[int]:
    """Store pairs for blind review and return their ids, in order."""
    with sessions.begin() as session:
        rows = [
            ABPair(
                created_at=utcnow(), **{key: storable_or_none(value) for key, value in pair.__dict__.items()}
            )
            for pair in pairs
        ]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def _shown(pair: ABPair, adapter_first: bool) -> ShownPair:
    first, second = (
        (pair.adapter_answer, pair.base_answer) if adapter_first else (pair.base_answer, pair.adapter_answer)
    )
    return ShownPair(pair.id, pair.question, pair.category, pair.register, pair.complexity, first, second)


_JUDGED = and_(ABJudgment.pair_id == ABAssignment.pair_id, ABJudgment.reviewer_id == ABAssignment.reviewer_id)
"""Join condition: the judgment that closes an assignment."""


def _open_assignment(session: Session, reviewer_id: int) -> ABAssignment | None:
    return session.scalar(
        select(ABAssignment)
        .outerjoin(ABJudgment, _JUDGED)
        .where(ABAssignment.reviewer_id == reviewer_id, ABJudgment.id.is_(None))
        .order_by(ABAssignment.id)
        .limit(1)
    )


def _free_pair(session: Session, reviewer_id: int, overlap: int, lease: timedelta) -> ABPair | None:
    cutoff = utcnow() - lease
    taken = (
        select(ABAssignment.pair_id, func.count().label("n"))
        .outerjoin(ABJudgment, _JUDGED)
        .where(or_(ABJudgment.id.is_not(None), ABAssignment.created_at > cutoff))
        .group_by(ABAssignment.pair_id)
        .subquery()
    )
    seen = select(ABAssignment.pair_id).where(ABAssignment.reviewer_id == reviewer_id)
    places = func.coalesce(taken.c.n, 0)
    return session.scalar(
        select(ABPair)
        .outerjoin(taken, taken.c.pair_id == ABPair.id)
        .where(ABPair.id.not_in(seen), places < overlap)
        .order_by(places.desc(), ABPair.id)
        .limit(1)
    )


def next_pair(
    sessions: sessionmaker[Session], reviewer_id: int, *, overlap: int, lease: timedelta
) -> ShownPair | None:
    """The pair this reviewer should judge now (the one shown earlier and not yet judged first), or
    None when nothing is left for them. Pairs with judgments already are finished first."""
    for _ in range(3):
        try:
            with sessions.begin() as session:
                assignment = _open_assignment(session, reviewer_id)
                if assignment is not None:
                    pair = session.get_one(ABPair, assignment.pair_id)
                    return _shown(pair, assignment.adapter_first)
                free = _free_pair(session, reviewer_id, overlap, lease)
                if free is None:
                    return None
                adapter_first = secrets.randbelow(2) == 1
                session.add(
                    ABAssignment(
                        pair_id=free.id,
                        reviewer_id=reviewer_id,
                        adapter_first=adapter_first,
                        created_at=utcnow(),
                    )
                )
                return _shown(free, adapter_first)
        except IntegrityError:
            continue
    return None


def submit_judgment(
    sessions: sessionmaker[Session],
    *,
    reviewer_id: int,
    pair_id: int,
    choice: str,
    ratings: Mapping[str, Mapping[str, int]],
) -> str:
    """Store a reviewer's verdict on a pair shown to them; returns the winning variant
    (`base`, `tuned` or `tie`). `ratings[criterion]["A"|"B"]` are 1-10 for the answers as shown."""
    if choice not in CHOICES:
        raise ValueError(f"choice must be one of {CHOICES}")
    for criterion in CRITERIA:
        for side in ("A", "B"):
            if not 1 <= int(ratings[criterion][side]) <= 10:
                raise ValueError(f"{criterion}.{side} must be 1-10")
    if not 1 <= pair_id <= MAX_PAIR_ID:
        raise PairNotShownError(pair_id)
    try:
        with sessions.begin() as session:
            assignment = session.scalar(
                select(ABAssignment).where(
                    ABAssignment.pair_id == pair_id, ABAssignment.reviewer_id == reviewer_id
                )
            )
            if assignment is None:
                raise PairNotShownError(pair_id)
            tuned_side, base_side = ("A", "B") if assignment.adapter_first else ("B", "A")
            winner = {"tie": "tie", tuned_side: "tuned", base_side: "base"}[choice]
            session.add(
                ABJudgment(
                    pair_id=pair_id,
                    reviewer_id=reviewer_id,
                    winner=winner,
                    adapter_first=assignment.adapter_first,
                    created_at=utcnow(),
                    **{f"base_{c}": int(ratings[c][base_side]) for c in CRITERIA},
                    **{f"tuned_{c}": int(ratings[c][tuned_side]) for c in CRITERIA},
                )
            )
            return winner
    except IntegrityError:
        raise AlreadyJudgedError(pair_id) from None


def _bootstrap_ci(per_pair: list[tuple[float, int]], rounds: int = 2000) -> list[float]:
    scores = np.array([score for score, _ in per_pair])
    counts = np.array([count for _, count in per_pair])
    picks = np.random.default_rng(0).integers(0, len(per_pair), size=(rounds, len(per_pair)))
    rates = scores[picks].sum(axis=1) / counts[picks].sum(axis=1)
    low, high = np.percentile(rates, [2.5, 97.5])
    return [float(low), float(high)]


def _alpha(rows: Sequence[ABJudgment]) -> float | None:
    import krippendorff

    by_pair: dict[int, dict[int, float]] = defaultdict(dict)
    for row in rows:
        by_pair[row.pair_id][row.reviewer_id] = _ORDINAL[row.winner]
    shared = {pair: votes for pair, votes in by_pair.items() if len(votes) >= 2}
    values = {value for votes in shared.values() for value in votes.values()}
    if not shared or len(values) < 2:
        return None
    reviewers = sorted({reviewer for votes in shared.values() for reviewer in votes})
    data = np.full((len(reviewers), len(shared)), np.nan)
    for column, votes in enumerate(shared.values()):
        for reviewer, value in votes.items():
            data[reviewers.index(reviewer), column] = value
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal"))


def ab_summary(sessions: sessionmaker[Session], adapter: str) -> ABSummary:
    """Win rate with its interval, mean ratings per variant and reviewer agreement for `adapter`
    (matched exactly as stored in its pairs, e.g. `NAME@VERSION`)."""
    with sessions() as session:
        rows = session.scalars(
            select(ABJudgment)
            .join(ABPair, ABPair.id == ABJudgment.pair_id)
            .where(ABPair.adapter == adapter)
            .order_by(ABJudgment.id)
        ).all()
    wins = sum(row.winner == "tuned" for row in rows)
    losses = sum(row.winner == "base" for row in rows)
    ties = len(rows) - wins - losses
    if not rows:
        return ABSummary(adapter, 0, 0, 0, 0, None, None, {}, None)
    per_pair: dict[int, tuple[float, int]] = {}
    for row in rows:
        score, count = per_pair.get(row.pair_id, (0.0, 0))
        per_pair[row.pair_id] = (score + _ORDINAL[row.winner] / 2, count + 1)
    means = {
        variant: {c: float(np.mean([getattr(row, f"{variant}_{c}") for row in rows])) for c in CRITERIA}
        for variant in ("base", "tuned")
    }
    return ABSummary(
        adapter=adapter,
        judgments=len(rows),
        wins=wins,
        losses=losses,
        ties=ties,
        win_rate=(wins + ties / 2) / len(rows),
        win_rate_ci=_bootstrap_ci(list(per_pair.values())),
        mean_ratings=means,
        krippendorff_alpha=_alpha(rows),
    )
