"""Quality gates: each adapter against its base, or against a baseline adapter (the version serving now,
for a retrain: `knowledge/data/eval/retrain_gates.yaml`), from a YAML file (defaults in
`knowledge/data/eval/gates.yaml`).

Every gate reports `{"name", "variant", "value", "threshold", "status", "detail"}` with status
pass, fail or skipped (and why: perplexity the endpoint cannot give, too few A/B judgments, a gate
disabled in the file, no corrections file for the corrections gate). An evaluation passes when no
gate fails.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from knowledge.paths import GATES_FILE, RETRAIN_GATES_FILE
from training.evaluation.data import EvalInputError
from training.evaluation.sources import BASE

DEFAULT_GATES = GATES_FILE
RETRAIN_GATES = RETRAIN_GATES_FILE
ACCURACY_METRICS = ("chrf", "bleu", "exact_match", "fact_precision", "perplexity")
LOWER_IS_BETTER = ("perplexity",)
"""Metrics whose improvement is a fall: their relative change counts the other way round."""
NO_PERPLEXITY = "perplexity unavailable (the server gives no prompt log-probabilities)"
GATES: dict[str, dict[str, float | str | bool]] = {
    "accuracy_improvement": {"metric": "chrf", "min_relative": 0.20},
    "general_regression": {"metric": "chrf", "max_relative_drop": 0.05},
    "perplexity": {"max_ratio": 1.10},
    "critical_errors": {"max": 0},
    "consistency": {"min": 0.85},
    "no_hallucination": {"min": 0.80},
    "register_fit": {"min": 0.80},
    "human_preference": {"min": 0.70, "min_judgments": 30},
    "naturalness": {"min": 8.0, "min_judgments": 30},
    "corrections": {"metric": "chrf", "min_relative": 0.10},
    "preference_margin": {"min_gain": 0.0, "min_reward_accuracy": 0.5, "interval": True},
}
"""`preference_margin` applies only when held-out preference pairs are given (`--preferences FILE`,
a preference retrain): `training.evaluation.preference_margin`."""


def load_gates(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """The gate settings: the built-in defaults, the default file, then `path` over them."""
    config = {name: {"enabled": True, **values} for name, values in GATES.items()}
    for source in [DEFAULT_GATES, *([path] if path else [])]:
        for name, values in _read(source).items():
            if name not in config:
                raise EvalInputError(f"{source}: unknown gate {name!r} (known: {', '.join(GATES)})")
            if not isinstance(values, dict):
                raise EvalInputError(f"{source}: gate {name!r} must be a mapping of settings")
            unknown = set(values) - set(config[name])
            if unknown:
                raise EvalInputError(f"{source}: gate {name!r} has no setting {', '.join(sorted(unknown))}")
            config[name].update(values)
    metrics = [
        config[name]["metric"] for name in ("accuracy_improvement", "general_regression", "corrections")
    ]
    if any(metric not in ACCURACY_METRICS for metric in metrics):
        raise EvalInputError(f"gate metric must be one of {', '.join(ACCURACY_METRICS)}")
    return config


def evaluate_gates(
    config: dict[str, dict[str, Any]],
    variants: dict[str, dict[str, Any]],
    ab: dict[str, dict[str, Any]],
    baseline: str | None = None,
) -> list[dict[str, Any]]:
    """Every enabled gate for every adapter variant, measured against the base, or against the
    `baseline` variant when one is named (neither is gated itself)."""
    key = baseline or BASE
    base = {**variants[key], "label": f"baseline {key}" if baseline else "base"}
    checks: dict[str, Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], dict[str, Any]]] = {
        "accuracy_improvement": lambda tuned, settings, _: _improvement(base, tuned, settings),
        "general_regression": lambda tuned, settings, _: _regression(base, tuned, settings),
        "perplexity": lambda tuned, settings, _: _perplexity(base, tuned, settings),
        "corrections": lambda tuned, settings, _: _corrections(base, tuned, settings),
        "critical_errors": lambda tuned, settings, _: _at_most(tuned["critical_errors"], settings["max"]),
        "consistency": lambda tuned, settings, _: _above(
            tuned["test"]["consistency"]["value"],
            settings["min"],
            "no seed with two variations and key facts",
            detail=f"key facts stated: {tuned['test']['consistency'].get('key_facts_stated')}",
        ),
        "no_hallucination": lambda tuned, settings, _: _above(
            tuned["unknown"]["no_hallucination"]["value"],
            settings["min"],
            "no unknown-topic questions",
            strict=False,
        ),
        "register_fit": lambda tuned, settings, _: _above(
            tuned["test"]["register_fit"]["value"],
            settings["min"],
            "no question with a register",
            strict=False,
        ),
        "human_preference": lambda _, settings, summary: _human(summary, settings, "win_rate"),
        "naturalness": lambda _, settings, summary: _human(summary, settings, "naturalness"),
    }
    gates = []
    for name, tuned in variants.items():
        if name in (BASE, key):
            continue
        for gate, check in checks.items():
            settings = config[gate]
            if not settings.get("enabled", True):
                outcome = {
                    "value": None,
                    "threshold": None,
                    "status": "skipped",
                    "detail": "disabled in the gates file",
                }
            else:
                outcome = check(tuned, settings, ab.get(name, {}))
            gates.append({"name": gate, "variant": name, **outcome})
    return gates


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvalInputError(f"gates file {path} does not exist") from None
    except (OSError, yaml.YAMLError) as exc:
        raise EvalInputError(f"cannot read gates file {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise EvalInputError(f"{path}: the gates file must be a mapping of gate name to settings")
    return data


def _result(value: float | None, threshold: float, passed: bool, detail: str = "") -> dict[str, Any]:
    return {
        "value": None if value is None else round(value, 4),
        "threshold": threshold,
        "status": "pass" if passed else "fail",
        "detail": detail,
    }


def _skipped(threshold: float | None, detail: str) -> dict[str, Any]:
    return {"value": None, "threshold": threshold, "status": "skipped", "detail": detail}


def _relative(base: float | None, tuned: float | None, metric: str = "chrf") -> float | None:
    """The adapter's relative gain over the base on `metric` (a fall in perplexity is a gain)."""
    if base is None or tuned is None or base == 0:
        return None
    gain = (tuned - base) / abs(base)
    return -gain if metric in LOWER_IS_BETTER else gain


def _improvement(base: dict[str, Any], tuned: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    metric, threshold = settings["metric"], float(settings["min_relative"])
    before, after = base["test"][metric]["value"], tuned["test"][metric]["value"]
    if metric in LOWER_IS_BETTER and (before is None or after is None):
        return _skipped(threshold, NO_PERPLEXITY)
    change = _relative(before, after, metric)
    detail = f"{metric} on the test split: {base['label']} {before}, adapter {after}"
    if change is None:
        passed = after is not None and after > (before or 0)
        return _result(None, threshold, passed, detail + f" ({base['label']} is 0)")
    return _result(change, threshold, change > threshold, detail)


def _corrections(base: dict[str, Any], tuned: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    metric, threshold = settings["metric"], float(settings["min_relative"])
    if "corrections" not in tuned:
        return _skipped(threshold, "no corrected questions given (--corrections FILE)")
    before, after = base["corrections"][metric]["value"], tuned["corrections"][metric]["value"]
    if metric in LOWER_IS_BETTER and (before is None or after is None):
        return _skipped(threshold, NO_PERPLEXITY)
    change = _relative(before, after, metric)
    detail = (
        f"{metric} on the {tuned['corrections']['n']} corrected questions: "
        f"{base['label']} {before}, adapter {after}"
    )
    if change is None:
        passed = after is not None and after > (before or 0)
        return _result(None, threshold, passed, detail + f" ({base['label']} is 0)")
    return _result(change, threshold, change >= threshold, detail)


def _regression(base: dict[str, Any], tuned: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    metric, threshold = settings["metric"], -float(settings["max_relative_drop"])
    if not base["general"]["n"]:
        return _skipped(threshold, "the general-Indonesian set is empty")
    before, after = base["general"][metric]["value"], tuned["general"][metric]["value"]
    if metric in LOWER_IS_BETTER and (before is None or after is None):
        return _skipped(threshold, NO_PERPLEXITY)
    change = _relative(before, after, metric)
    detail = f"{metric} on the general-Indonesian set: {base['label']} {before}, adapter {after}"
    if change is None:
        return _result(None, threshold, (after or 0) >= (before or 0), detail)
    return _result(change, threshold, change >= threshold, detail)


def _perplexity(base: dict[str, Any], tuned: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    threshold = float(settings["max_ratio"])
    before, after = base["test"]["perplexity"]["value"], tuned["test"]["perplexity"]["value"]
    if before is None or after is None:
        return _skipped(threshold, NO_PERPLEXITY)
    ratio = after / before
    return _result(
        ratio,
        threshold,
        ratio <= threshold,
        f"golden answers of the test split: {base['label']} {before}, adapter {after}",
    )


def _at_most(value: int, threshold: float) -> dict[str, Any]:
    return _result(value, threshold, value <= threshold, "contradicted verified registry figures")


def _above(
    value: float | None, threshold: float, empty: str, *, strict: bool = True, detail: str = ""
) -> dict[str, Any]:
    if value is None:
        return _skipped(threshold, empty)
    return _result(value, threshold, value > threshold if strict else value >= threshold, detail)


def _human(summary: dict[str, Any], settings: dict[str, Any], what: str) -> dict[str, Any]:
    threshold, needed = float(settings["min"]), int(settings["min_judgments"])
    if "judgments" not in summary:
        return _skipped(threshold, summary.get("reason", "no A/B review summary"))
    if summary["judgments"] < needed:
        return _skipped(threshold, f"{summary['judgments']} A/B judgments, {needed} needed")
    if what == "win_rate":
        value = summary.get("win_rate")
        detail = f"{summary['wins']} wins, {summary['losses']} losses, {summary['ties']} ties"
    else:
        value = summary.get("mean_ratings", {}).get("tuned", {}).get("naturalness")
        detail = "mean naturalness of the adapter's answers (1-10)"
    if value is None:
        return _skipped(threshold, "no value in the A/B summary")
    return _result(value, threshold, value > threshold, detail)
