"""The blind A/B review link: queue base/adapter answer pairs, read the reviewers' verdicts back.

Both go through `feedback.ab` (the review page's tables) on the database named by `--database-url`,
brought to the latest schema first. The questions queued follow the seed's mix: spread over the
registers (casual / business / formal) and complexities (simple / complex / multi-part).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from training.evaluation.data import EvalInputError, EvalItem
from training.evaluation.sources import BASE, Variant


def pick_mix(items: Sequence[EvalItem], count: int) -> list[int]:
    """Positions of up to `count` items, round-robin over (register, complexity) buckets."""
    buckets: dict[tuple[str, str], list[int]] = defaultdict(list)
    for position, item in enumerate(items):
        buckets[(item.register or "", item.complexity)].append(position)
    queues = [buckets[key] for key in sorted(buckets)]
    picked: list[int] = []
    depth = 0
    while len(picked) < count and any(depth < len(queue) for queue in queues):
        picked += [queue[depth] for queue in queues if depth < len(queue)][: count - len(picked)]
        depth += 1
    return picked


def queue_ab_pairs(
    database_url: str,
    items: Sequence[EvalItem],
    answers: dict[str, list[str]],
    variants: Sequence[Variant],
    count: int,
    dataset_version: str | None,
) -> dict[str, list[int]]:
    """Queue `count` pairs per adapter (base answer vs adapter answer); returns the pair ids per adapter."""
    try:
        from feedback.ab import NewPair, queue_pairs
    except ImportError as exc:
        raise EvalInputError(f"--ab-sample needs the A/B review tables (feedback.ab): {exc}") from None
    base = next(variant for variant in variants if variant.key == BASE)
    chosen = pick_mix(items, count)
    queued: dict[str, list[int]] = {}
    with _sessions(database_url) as sessions:
        for variant in variants:
            if variant.adapter is None:
                continue
            pairs = [
                NewPair(
                    question=items[index].question,
                    category=items[index].category,
                    register=items[index].register,
                    complexity=items[index].complexity,
                    base_model=base.model,
                    adapter=variant.adapter,
                    base_answer=answers[BASE][index],
                    adapter_answer=answers[variant.key][index],
                    dataset_version=dataset_version,
                    source_id=items[index].id,
                )
                for index in chosen
            ]
            queued[variant.key] = list(queue_pairs(sessions, pairs))
    return queued


def ab_summaries(database_url: str, variants: Sequence[Variant]) -> dict[str, dict[str, Any]]:
    """Per adapter, the reviewers' verdicts (win rate and interval, mean ratings, Krippendorff's alpha),
    or `{"reason"}` saying why there are none."""
    adapters = [variant for variant in variants if variant.adapter is not None]
    try:
        from feedback.ab import ab_summary
    except ImportError:
        return {variant.key: {"reason": "the A/B review tables are not installed"} for variant in adapters}
    try:
        with _sessions(database_url) as sessions:
            return {variant.key: asdict(ab_summary(sessions, variant.key)) for variant in adapters}
    except Exception as exc:  # noqa: BLE001 - a missing review database must not stop the evaluation
        return {variant.key: {"reason": f"A/B review database unavailable: {exc}"} for variant in adapters}


@contextmanager
def _sessions(database_url: str) -> Iterator[Any]:
    from database.engine import create_db_engine, make_session_factory
    from database.migrate import upgrade

    upgrade(database_url)
    engine = create_db_engine(database_url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()
