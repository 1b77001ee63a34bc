"""What the service writes about interactions and ratings, and what a batch of ratings does.

These are plain values, shared by every path that stores them: the portable SQLAlchemy Core statements
(`feedback.store`), PostgreSQL's single-statement writes (`feedback.postgres_writes`) and the local spool
(`feedback.spool`, through `to_json`/`from_json`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from feedback.models import utcnow

REVIEW_THRESHOLD = 3
"""Ratings under this many stars put the interaction in the review queue."""


@dataclass(frozen=True)
class InteractionRecord:
    """Everything stored about one served chat completion."""

    id: str
    user_hash: str | None
    model_requested: str
    routed: bool
    variant: str
    adapter_name: str | None
    adapter_version: str | None
    messages: list[dict[str, Any]]
    answer: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    ttft_s: float | None
    params: dict[str, Any]
    streamed: bool
    target: str | None = None
    created_at: datetime = field(default_factory=utcnow)

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (for the spool)."""
        return asdict(self) | {"created_at": self.created_at.isoformat()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InteractionRecord:
        """The record `to_json` wrote."""
        return cls(**(data | {"created_at": datetime.fromisoformat(data["created_at"])}))


@dataclass(frozen=True)
class RatingWrite:
    """A rating to store: the latest one for an interaction replaces any earlier one."""

    interaction_id: str
    stars: int
    comment: str | None
    rated_at: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        if not 1 <= self.stars <= 5:
            raise ValueError(f"rating must be 1-5, got {self.stars}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (for the spool)."""
        return asdict(self) | {"rated_at": self.rated_at.isoformat()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RatingWrite:
        """The write `to_json` wrote."""
        return cls(**(data | {"rated_at": datetime.fromisoformat(data["rated_at"])}))


@dataclass(frozen=True)
class StoredRating:
    """A rating as committed."""

    interaction_id: str
    stars: int
    comment: str | None
    variant: str
    replaced: int | None
    needs_review: bool
    adapter: str = ""
    target: str = ""


def adapter_key(name: str | None, version: str | None) -> str:
    """`NAME@VERSION` of the adapter that answered, "" for the base model (the metrics' label value)."""
    return f"{name}@{version}" if name and version else ""


class UnknownInteractionError(LookupError):
    """No interaction has this id."""


@dataclass(frozen=True)
class RatedAnswer:
    """What a rating needs of the interaction it rates, and the stars that interaction had before."""

    variant: str
    adapter_name: str | None
    adapter_version: str | None
    target: str | None
    previous: int | None


@dataclass(frozen=True)
class RatingBatch:
    """Ratings applied together, in order: only the last one per answer is written (it wins), with the
    time of the first as the rating's creation time."""

    writes: Sequence[RatingWrite]
    latest: dict[str, RatingWrite]
    first_at: dict[str, datetime]

    @classmethod
    def of(cls, writes: Sequence[RatingWrite]) -> RatingBatch:
        """The batch of `writes`, in their order."""
        latest: dict[str, RatingWrite] = {}
        first_at: dict[str, datetime] = {}
        for write in writes:
            latest[write.interaction_id] = write
            first_at.setdefault(write.interaction_id, write.rated_at)
        return cls(writes, latest, first_at)

    def outcomes(self, rated: dict[str, RatedAnswer]) -> list[StoredRating | None]:
        """Per write, what was stored (each one replacing the stars before it), or None for an answer
        `rated` does not hold (unknown)."""
        stars_now = {key: answer.previous for key, answer in rated.items()}
        results: list[StoredRating | None] = []
        for write in self.writes:
            key = write.interaction_id
            answer = rated.get(key)
            if answer is None:
                results.append(None)
                continue
            replaced, stars_now[key] = stars_now[key], write.stars
            results.append(
                StoredRating(
                    key,
                    write.stars,
                    write.comment,
                    answer.variant,
                    replaced,
                    write.stars < REVIEW_THRESHOLD,
                    adapter_key(answer.adapter_name, answer.adapter_version),
                    answer.target or "",
                )
            )
        return results
