"""The team's review of unvalidated pairs, applied to a build, and the pairs a built dataset sends for it.

Variations written by a model, synthetic questions and imported conversations come out of the
sources with `validated=false`. `zantara dataset submit DATASET_DIR` stores them in the feedback
database for the review page (`/review/dataset`); a later build with `--database-url` applies the
verdicts: an approved pair becomes validated, an edited one takes the reviewers' text and becomes
validated, a rejected one is left out. Pairs still unvalidated are left out too unless the build is
asked to include them; they are written to `unvalidated.jsonl` beside the splits so they can be
submitted.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from knowledge.records import Example, Pair, parse_record
from training.dataset.files import DatasetInputError, read_items
from training.dataset.split import SPLITS

if TYPE_CHECKING:
    from feedback.dataset_review import Verdict

UNVALIDATED_FILE = "unvalidated.jsonl"
"""Written beside the splits: the unvalidated pairs a validated-only build left out."""


@dataclass(frozen=True)
class Reviewed:
    """The pairs after the verdicts, and how many each kind of verdict touched."""

    pairs: list[Pair]
    approved: int
    edited: int
    rejected: int


def load_verdicts(database_url: str, required_reviews: int) -> dict[str, Verdict]:
    """Every dataset record's verdict in the feedback database, by record id (see `record_key`)."""
    from database.engine import create_db_engine, make_session_factory
    from feedback.dataset_review import verdicts

    engine = create_db_engine(database_url)
    try:
        return verdicts(make_session_factory(engine), required_reviews)
    finally:
        engine.dispose()


def apply_verdicts(pairs: list[Pair], decided: dict[str, Verdict], notes: list[str]) -> Reviewed:
    """Approved pairs become validated, edited ones take the reviewers' text, rejected ones are left
    out (noted); pairs without a decision are kept as they are."""
    from feedback.dataset_review import record_key

    kept: list[Pair] = []
    counts: Counter[str] = Counter()
    for pair in pairs:
        verdict = decided.get(record_key(pair.question, pair.answer))
        if verdict is None or verdict.status == "pending":
            kept.append(pair)
        elif verdict.status == "rejected":
            counts["rejected"] += 1
            notes.append(
                f"{pair.id} left out: rejected by {verdict.rejections} of {verdict.reviews} reviewer(s)"
            )
        elif verdict.edited:
            counts["edited"] += 1
            extra = {**pair.extra, "review": "edited"}
            kept.append(
                replace(pair, question=verdict.question, answer=verdict.answer, validated=True, extra=extra)
            )
        else:
            counts["approved"] += 1
            kept.append(replace(pair, validated=True, extra={**pair.extra, "review": "approved"}))
    return Reviewed(kept, counts["approved"], counts["edited"], counts["rejected"])


def unvalidated_records(dataset: Path) -> tuple[str, list[Pair]]:
    """The dataset version of a built folder and its records marked `validated: false` (splits and
    `unvalidated.jsonl`), to submit for review."""
    manifest_path = dataset / "manifest.json"
    try:
        version = str(json.loads(manifest_path.read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError, TypeError):
        raise DatasetInputError(
            manifest_path, None, "not a dataset built by `zantara dataset build` (no readable manifest)"
        ) from None
    pairs: list[Pair] = []
    for name in (*(f"{split}.jsonl" for split in SPLITS), UNVALIDATED_FILE):
        path = dataset / name
        if not path.exists():
            continue
        for item in read_items(path):
            parsed = parse_record(item.line, item.value)
            if not isinstance(parsed, Example):
                raise DatasetInputError(path, parsed.line, parsed.message)
            if parsed.meta.get("validated") is False:
                pairs.append(_pair(path, item.line, parsed))
    return version, pairs


def _pair(path: Path, line: int, example: Example) -> Pair:
    meta = example.meta
    return Pair(
        id=str(meta.get("id") or f"{path.stem}-{line}"),
        question=example.question,
        answer=example.answer,
        category=str(meta.get("category") or ""),
        register=str(meta.get("register") or ""),
        source=str(meta.get("source") or "extra"),
        validated=False,
        seed_id=meta.get("seed_id"),
    )
