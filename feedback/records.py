"""What the service writes about interactions and ratings, and what a batch of ratings does.

These are plain values, shared by every path that stores them: the portable SQLAlchemy Core statements
(`feedback.store`), PostgreSQL's single-statement writes (`feedback.postgres_writes`) and the local spool
(`feedback.spool`, through `to_json`/`from_json`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from database.models import utcnow

REVIEW_THRESHOLD = 3
"""Ratings under this many stars put the interaction in the review queue."""

RESPONSE_ID_PATTERN = r"^chatcmpl-[0-9a-f]{32}$"
"""Every interaction id the service makes (`chatcmpl-` and a UUID's 32 hex digits): anything else
names no answer of ours, and is refused before it is looked up or spooled."""


def api_key_hash(api_key: bytes, secret: str) -> str:
    """The API key an answer went to, as stored (`interactions.key_hash`): an HMAC-SHA256 under the
    service's secret (as user keys are hashed), so a leaked table reveals no key and no guess can be
    checked against it. Domain-separated from the user hashes made under the same secret."""
    return hmac.new(secret.encode(), b"api-key\0" + api_key, hashlib.sha256).hexdigest()


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
    key_hash: str | None = None
    """`api_key_hash` of the API key the answer went to; None when `/v1` is open (anyone may rate it)."""
    created_at: datetime = field(default_factory=utcnow)
    fact_critical: int | None = None
    """Figures of the answer contradicting a verified registry fact; None until checked
    (`feedback.answer_facts`)."""
    fact_warnings: int | None = None
    """Figures disagreeing only with registry facts that wait for confirmation; None until checked."""
    fact_findings: list[dict[str, Any]] | None = None
    """Each such figure (`feedback.answer_facts.finding_json`); None until checked."""

    @property
    def fact_checked(self) -> bool:
        """Whether the answer's figures were checked against the fact registry."""
        return self.fact_critical is not None

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
    key_hash: str | None = None
    """`api_key_hash` of the API key that sent the rating; None when `/v1` is open."""

    def __post_init__(self) -> None:
        if not 1 <= self.stars <= 5:
            raise ValueError(f"rating must be 1-5, got {self.stars}")

    def may_rate(self, owner: str | None) -> bool:
        """Whether this rating may rate an answer that went to the key hashed `owner`: any rating an
        answer served while `/v1` was open (None), else only one from that key. The database
        statements apply the same rule (`feedback.store`, `feedback.postgres_writes`)."""
        return owner is None or owner == self.key_hash

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
    adapter: str = ""
    target: str = ""

    @property
    def needs_review(self) -> bool:
        """Under `REVIEW_THRESHOLD` stars: the answer is in the review queue while this rating stands."""
        return self.stars < REVIEW_THRESHOLD


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
    owner: str | None = None
    """The answer's `key_hash`: who may rate it (`RatingWrite.may_rate`)."""


@dataclass(frozen=True)
class RaterWrite:
    """The last rating one key (or nobody, when `/v1` is open) sent for one answer in a batch, with
    the time of that key's first one (the rating's creation time) and its place in the batch."""

    write: RatingWrite
    first_at: datetime
    seq: int


@dataclass(frozen=True)
class RatingBatch:
    """Ratings applied together, in order. Per answer, the ratings from keys that may not rate it are
    left out (`RatingWrite.may_rate`), and of the others only the last one is written (it wins), with
    the time of its key's first rating in the batch as the rating's creation time.

    The writes go to the database as one row per answer and key (`latest`): which key owns an answer is
    known only there, and the statements keep the row of the owner (or the last row, for an answer
    anyone may rate)."""

    writes: Sequence[RatingWrite]
    latest: dict[tuple[str, str | None], RaterWrite]

    @classmethod
    def of(cls, writes: Sequence[RatingWrite]) -> RatingBatch:
        """The batch of `writes`, in their order."""
        latest: dict[tuple[str, str | None], RaterWrite] = {}
        for seq, write in enumerate(writes):
            key = (write.interaction_id, write.key_hash)
            first_at = latest[key].first_at if key in latest else write.rated_at
            latest[key] = RaterWrite(write, first_at, seq)
        return cls(writes, latest)

    def chosen(self, owners: dict[str, str | None]) -> dict[str, RaterWrite]:
        """Per answer of `owners` (its id: its owner), the row to write: the last one allowed."""
        rows: dict[str, RaterWrite] = {}
        for (key, _), row in self.latest.items():
            allowed = key in owners and row.write.may_rate(owners[key])
            if allowed and (key not in rows or rows[key].seq < row.seq):
                rows[key] = row
        return rows

    def outcomes(self, rated: dict[str, RatedAnswer]) -> list[StoredRating | None]:
        """Per write, what was stored (each one replacing the stars before it), or None for an answer
        `rated` does not hold (unknown) or that the write's key may not rate."""
        stars_now = {key: answer.previous for key, answer in rated.items()}
        results: list[StoredRating | None] = []
        for write in self.writes:
            key = write.interaction_id
            answer = rated.get(key)
            if answer is None or not write.may_rate(answer.owner):
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
                    adapter_key(answer.adapter_name, answer.adapter_version),
                    answer.target or "",
                )
            )
        return results
