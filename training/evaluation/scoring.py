"""From answers to the report's metrics: per variant, per set, overall and per category and register.

Sets: `test` (the dataset's held-out split: every metric), `general` (the general-Indonesian
regression set: the same text metrics), `unknown` (questions to decline: the no-hallucination
rate), `corrections` (the corrected questions when given: the same text metrics). Every answer of
every set is checked against the fact registry.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from training.evaluation.behaviour import declines, register_fits, repetitive
from training.evaluation.consistency import consistency
from training.evaluation.data import EvalData, EvalItem
from training.evaluation.facts import FactCheck, RegistryCheck, error_records
from training.evaluation.metrics import (
    corpus_scores,
    exact_match,
    mean_interval,
    perplexity_interval,
    ratio_interval,
    sentence_chrf,
)
from training.evaluation.runner import Outputs
from training.evaluation.sources import TokenNLL

UNAVAILABLE = {"value": None, "low": None, "high": None, "status": "unavailable"}


@dataclass(frozen=True)
class Scores:
    """The report's metrics per variant, the critical errors and warnings, and per-question rows."""

    variants: dict[str, dict[str, Any]]
    critical_errors: list[dict[str, Any]]
    warnings: list[dict[str, Any]]
    rows: list[dict[str, Any]]


def score(data: EvalData, outputs: Outputs, registry: RegistryCheck, resamples: int = 1000) -> Scores:
    """Every metric of every variant (see the module docstring)."""
    items = data.all()
    keys = [variant.key for variant in outputs.variants]
    checks = {
        key: [
            registry.check(item.question, answer)
            for item, answer in zip(items, outputs.answers[key], strict=True)
        ]
        for key in keys
    }
    variants: dict[str, dict[str, Any]] = {
        variant.key: {"model": variant.model, "adapter": variant.adapter} for variant in outputs.variants
    }
    for name in ("test", "general", "corrections"):
        positions = [index for index, item in enumerate(items) if item.set == name]
        if name == "corrections" and not positions:
            continue
        subset = [items[index] for index in positions]
        answers = {key: [outputs.answers[key][index] for index in positions] for key in keys}
        set_checks = {key: [checks[key][index] for index in positions] for key in keys}
        nll = {key: outputs.nll[key].get(name, []) for key in keys} if outputs.nll is not None else None
        block = _set_metrics(subset, answers, set_checks, nll, resamples)
        for key in keys:
            variants[key][name] = block[key]
        if name == "test":
            for key in keys:
                variants[key][name]["consistency"] = consistency(
                    subset, answers[key], set_checks[key], registry.by_id(), resamples
                )
    unknown = [index for index, item in enumerate(items) if item.set == "unknown"]
    for key in keys:
        declined = [float(declines(outputs.answers[key][index])) for index in unknown]
        variants[key]["unknown"] = {"n": len(unknown), "no_hallucination": mean_interval(declined, resamples)}
    critical: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    for key in keys:
        for item, check in zip(items, checks[key], strict=True):
            critical += error_records(key, item, check, critical=True)
            warnings += error_records(key, item, check, critical=False)
        variants[key]["critical_errors"] = sum(1 for row in critical if row["variant"] == key)
        variants[key]["warnings"] = sum(1 for row in warnings if row["variant"] == key)
    rows = [
        {
            "id": item.id,
            "set": item.set,
            "category": item.category,
            "register": item.register,
            "question": item.question,
            "reference": item.reference,
            "answers": {key: outputs.answers[key][index] for key in keys},
            "chrf": {
                key: round(sentence_chrf(outputs.answers[key][index], item.reference), 2) for key in keys
            },
        }
        for index, item in enumerate(items)
    ]
    return Scores(variants, critical, warnings, rows)


def _set_metrics(
    items: Sequence[EvalItem],
    answers: dict[str, list[str]],
    checks: dict[str, list[FactCheck]],
    nll: dict[str, list[TokenNLL]] | None,
    resamples: int,
) -> dict[str, dict[str, Any]]:
    """Overall metrics of one set per variant, with breakdowns by category and register."""
    result = _group_metrics(list(range(len(items))), items, answers, checks, resamples)
    for key, block in result.items():
        block["n"] = len(items)
        if nll is None or not nll[key]:
            block["perplexity"] = dict(UNAVAILABLE)
        else:
            block["perplexity"] = perplexity_interval(
                [v[0] for v in nll[key]], [v[1] for v in nll[key]], resamples
            )
    for label in ("category", "register"):
        groups: dict[str, list[int]] = defaultdict(list)
        for index, item in enumerate(items):
            value = getattr(item, label)
            if value:
                groups[value].append(index)
        for value, positions in sorted(groups.items()):
            breakdown = _group_metrics(positions, items, answers, checks, resamples)
            for key, block in breakdown.items():
                block["n"] = len(positions)
                result[key].setdefault(f"by_{label}", {})[value] = block
    return result


def _group_metrics(
    positions: list[int],
    items: Sequence[EvalItem],
    answers: dict[str, list[str]],
    checks: dict[str, list[FactCheck]],
    resamples: int,
) -> dict[str, dict[str, Any]]:
    references = [items[index].reference for index in positions]
    corpus = corpus_scores(
        [(key, [answers[key][i] for i in positions]) for key in answers], references, resamples
    )
    result: dict[str, dict[str, Any]] = {}
    for key in answers:
        group_checks = [checks[key][index] for index in positions]
        fits = [register_fits(items[i].register, answers[key][i]) for i in positions]
        result[key] = {
            "exact_match": mean_interval(
                [exact_match(answers[key][i], items[i].reference) for i in positions], resamples
            ),
            "bleu": corpus[key]["bleu"],
            "chrf": corpus[key]["chrf"],
            "fact_precision": ratio_interval(
                [c.checked - c.contradicted for c in group_checks],
                [c.checked for c in group_checks],
                resamples,
            ),
            "figures_checked": sum(c.checked for c in group_checks),
            "register_fit": mean_interval([float(fit) for fit in fits if fit is not None], resamples),
            "repetitive": mean_interval([float(repetitive(answers[key][i])) for i in positions], resamples),
        }
    return result
