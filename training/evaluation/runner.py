"""Put every question to every variant (greedy, concurrently) and score the golden answers.

The same loop serves the in-process engine and an HTTP endpoint: both are `AnswerSource`s. A rich
progress bar shows answers per variant and the perplexity pass.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from rich.progress import TaskID

from training.evaluation.data import EvalData, EvalItem
from training.evaluation.sources import AnswerSource, TokenNLL, Variant
from training.progress import training_progress


@dataclass(frozen=True)
class Outputs:
    """What the variants produced: answers per variant key (aligned with `data.all()`), golden-answer
    NLL per variant key for the test and general sets (None when the source cannot give it)."""

    variants: list[Variant]
    answers: dict[str, list[str]]
    nll: dict[str, dict[str, list[TokenNLL]]] | None


async def collect(
    source: AnswerSource,
    variants: list[Variant],
    data: EvalData,
    *,
    max_tokens: int = 256,
    concurrency: int = 16,
    progress: bool = True,
) -> Outputs:
    """Ask every item of every set with each variant, then score the golden answers."""
    items = data.all()
    limit = asyncio.Semaphore(concurrency)
    answers: dict[str, list[str]] = {}
    with training_progress(enabled=progress) as bar:
        for variant in variants:
            task = bar.add_task(f"answers {variant.key}", total=len(items), stats="")

            async def ask(item: EvalItem, variant: Variant = variant, task: TaskID = task) -> str:
                async with limit:
                    text = await source.answer(variant, item, max_tokens)
                bar.advance(task)
                return text

            answers[variant.key] = list(await asyncio.gather(*(ask(item) for item in items)))
        scored = [item for item in items if item.set in ("test", "general", "corrections")]
        task = bar.add_task("perplexity", total=len(scored) * len(variants), stats="golden answers")
        nll = await source.golden_nll(variants, scored, lambda: bar.advance(task))
    if nll is None:
        return Outputs(variants, answers, None)
    by_set: dict[str, dict[str, list[TokenNLL]]] = {}
    for key, values in nll.items():
        for item, value in zip(scored, values, strict=True):
            by_set.setdefault(key, {}).setdefault(item.set, []).append(value)
    return Outputs(variants, answers, by_set)
