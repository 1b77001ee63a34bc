"""Text metrics and their bootstrap confidence intervals over questions.

Exact match after normalising case, punctuation and whitespace; BLEU and chrF from sacrebleu, with
sacrebleu's paired bootstrap against the base (the same resamples for every system, a p-value for
the difference); means and ratios with a percentile bootstrap over questions.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

CONFIDENCE = 0.95
_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed (for exact match)."""
    kept = "".join(" " if unicodedata.category(char).startswith("P") else char for char in text.lower())
    return _SPACE.sub(" ", kept).strip()


def exact_match(answer: str, reference: str) -> float:
    """1.0 when the normalised answer equals the normalised golden answer, else 0.0."""
    return float(normalize(answer) == normalize(reference))


def sentence_chrf(answer: str, reference: str) -> float:
    """chrF of one answer (0-100), to rank the worst questions."""
    from sacrebleu.metrics import CHRF

    return float(CHRF().sentence_score(answer, [reference]).score)


def interval(value: float | None, low: float | None = None, high: float | None = None) -> dict[str, Any]:
    """A metric as the report writes it: value and the 95% interval (rounded)."""
    return {"value": _round(value), "low": _round(low), "high": _round(high)}


def mean_interval(values: Sequence[float], resamples: int = 1000) -> dict[str, Any]:
    """The mean of per-question values with a percentile-bootstrap 95% interval."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return interval(None)
    mean = float(data.mean())
    return interval(mean, *_bootstrap((data,), lambda x, axis=-1: x.mean(axis=axis), resamples, mean))


def ratio_interval(
    numerators: Sequence[float], denominators: Sequence[float], resamples: int = 1000
) -> dict[str, Any]:
    """sum(numerators) / sum(denominators) with a paired bootstrap 95% interval over questions."""
    top, bottom = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    if bottom.sum() <= 0:
        return interval(None)
    value = float(top.sum() / bottom.sum())

    def ratio(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return x.sum(axis=axis) / np.maximum(y.sum(axis=axis), 1e-12)

    return interval(value, *_bootstrap((top, bottom), ratio, resamples, value))


def perplexity_interval(nll: Sequence[float], tokens: Sequence[int], resamples: int = 1000) -> dict[str, Any]:
    """Corpus perplexity exp(total NLL / total answer tokens) with a bootstrap 95% interval."""
    result = ratio_interval(nll, tokens, resamples)
    return {key: None if value is None else round(math.exp(value), 4) for key, value in result.items()}


def corpus_scores(
    systems: Sequence[tuple[str, Sequence[str]]], references: Sequence[str], resamples: int = 1000
) -> dict[str, dict[str, dict[str, Any]]]:
    """BLEU and chrF per system with sacrebleu's paired bootstrap against the first system (the base).

    Returns {system: {"bleu": {value, low, high, p_value}, "chrf": {...}}}; the base has no p-value.
    """
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest, Result

    if not references:
        return {name: {"bleu": interval(None), "chrf": interval(None)} for name, _ in systems}
    metrics = {"BLEU": BLEU(effective_order=True), "chrF": CHRF()}
    test = PairedTest(
        [(name, list(hyps)) for name, hyps in systems],
        metrics,
        [list(references)],
        test_type="bs",
        n_samples=max(resamples, 10),
    )
    _, scores = test()
    names = scores.pop("System")
    out: dict[str, dict[str, dict[str, Any]]] = {str(name): {} for name in names}
    for metric_name, results in scores.items():
        key = "bleu" if metric_name.lower().startswith("bleu") else "chrf"
        for name, result in zip(names, results, strict=True):
            assert isinstance(result, Result)
            half = result.ci or 0.0
            mean = result.mean if result.mean is not None else result.score
            entry = interval(result.score, max(0.0, mean - half), min(100.0, mean + half))
            entry["p_value"] = _round(result.p_value)
            out[str(name)][key] = entry
    return out


def _bootstrap(
    data: tuple[np.ndarray, ...], statistic: Callable[..., Any], resamples: int, value: float
) -> tuple[float | None, float | None]:
    """Percentile-bootstrap interval, resampling questions (paired across `data`'s columns) with a fixed
    seed, the way sacrebleu resamples sentences; a constant sample has the point as its interval."""
    if data[0].size < 2 or all(np.all(column == column[0]) for column in data):
        return value, value
    picks = np.random.default_rng(12345).integers(0, data[0].size, size=(max(resamples, 10), data[0].size))
    estimates = statistic(*(column[picks] for column in data), axis=-1)
    low, high = np.percentile(estimates, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
    return float(low), float(high)


def _round(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 4)
