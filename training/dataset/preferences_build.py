"""`zantara dataset preferences build`: a versioned KTO or DPO dataset from the loop's signals.

Rows (`preferences.candidates`) -> duplicates and contradictions out -> leakage against the evaluation
sets out -> the review checklist -> the per-user cap -> a train/test split by question (one question's
rows on one side; `test.jsonl` holds preference pairs the trainer never sees) -> TRL's conversational
JSONL, written atomically with `manifest.json`: the version (a hash of the content), counts per source
and label, what was left out and why, the evaluation dataset checked against and, for KTO, the
balance and the `desirable_weight`/`undesirable_weight` to train with.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from feedback.preferences import PreferenceSignals
from knowledge.checklist import Issue
from knowledge.fact_check import FactChecker
from knowledge.facts import load_facts
from training.dataset.build import DEFAULT_FACTS, default_datasets_dir
from training.dataset.files import atomic_dir, write_json, write_jsonl
from training.dataset.preferences import (
    DEFAULT_PER_USER_CAP,
    SOURCES,
    PreferenceOptions,
    PreferenceRow,
    adapters_of,
    candidates,
)
from training.dataset.preferences_filters import (
    KTO_BALANCE,
    EvalQuestions,
    capped_per_user,
    deduplicate,
    kto_weights,
    passing_checks,
    weighted_ratio,
    without_leakage,
)
from training.dataset.similarity import normalize

PREFERENCE_SPLITS: tuple[str, ...] = ("train", "test")
DEFAULT_TEST_SHARE = 0.1
FORMAT = "trl-conversational"


class PreferenceBuildError(Exception):
    """The signals make no usable dataset (e.g. KTO with only desirable answers)."""


class NothingToBuildError(PreferenceBuildError):
    """No row is left once the filters ran (or the database holds no signal at all)."""


@dataclass(frozen=True)
class PreferenceBuildOptions:
    """What a preference build makes: the kind, the rating thresholds, the per-user cap, the share of
    questions held out as `test`, the evaluator's dataset to check leakage against, the fact registry."""

    kind: str
    evaluation: EvalQuestions
    thresholds: PreferenceOptions = field(default_factory=PreferenceOptions)
    per_user_cap: int = DEFAULT_PER_USER_CAP
    test_share: float = DEFAULT_TEST_SHARE
    facts_path: Path = DEFAULT_FACTS


@dataclass
class PreferenceBuildResult:
    """Where the dataset was written, its manifest, and the checklist's warnings on the rows kept."""

    out: Path
    manifest: dict[str, Any]
    warnings: list[Issue]


def default_preferences_dir() -> Path:
    """Where a build goes without `--out`: `preferences/` beside `datasets/` in the var folder."""
    return default_datasets_dir().parent / "preferences"


def held_out(row: PreferenceRow, share: float) -> bool:
    """Whether a row's question belongs to the test split (a hash of the normalised question, so every
    row of one question lands on one side, whatever else is in the build)."""
    digest = int(hashlib.sha256(normalize(row.question).encode()).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < share


def build_preferences(
    signals: PreferenceSignals, options: PreferenceBuildOptions, out: Path | None, *, force: bool = False
) -> PreferenceBuildResult:
    """Make, filter, split and write the dataset; nothing is written unless every step succeeds.
    Raises `NothingToBuildError` when no row is left, `PreferenceBuildError` when KTO's train split
    lacks desirable or undesirable rows, `FileExistsError` when `out` exists and not `force`."""
    if out is not None and out.exists() and not force:
        raise FileExistsError(f"{out} already exists (use --force to replace it)")
    made = candidates(options.kind, signals, options.thresholds)
    left_out = Counter(made.left_out)
    deduplicated = deduplicate(made.rows)
    clean = without_leakage(deduplicated.rows, options.evaluation)
    facts = FactChecker(load_facts(options.facts_path)) if options.facts_path.exists() else None
    checked, warnings = passing_checks(clean.rows, facts)
    capped, users_at_cap = capped_per_user(checked.rows, options.per_user_cap)
    for step in (deduplicated, clean, checked, capped):
        left_out.update(step.left_out)
    rows = capped.rows
    if not rows:
        raise NothingToBuildError(
            f"nothing to build: no {options.kind.upper()} row is left from {_signal_summary(signals)}"
            + (f" (left out: {_reasons(left_out)})" if +left_out else "")
        )
    splits = {
        "train": [row for row in rows if not held_out(row, options.test_share)],
        "test": [row for row in rows if held_out(row, options.test_share)],
    }
    manifest = make_manifest(splits, options, signals, left_out, users_at_cap, warnings)
    target = out or default_preferences_dir() / manifest["version"]
    with atomic_dir(target, replace=force or out is None) as folder:
        for name in PREFERENCE_SPLITS:
            write_jsonl(folder / f"{name}.jsonl", (row.to_trl() for row in splits[name]))
        manifest["files"] = {path.name: _sha256(path) for path in sorted(folder.iterdir())}
        write_json(folder / "manifest.json", manifest)
    return PreferenceBuildResult(target, manifest, warnings)


def kto_balance(train: list[PreferenceRow]) -> dict[str, Any]:
    """The train split's desirable and undesirable counts, the weights that bring them into TRL's band
    and the weighted ratio; raises `PreferenceBuildError` when either count is zero."""
    desirable = sum(row.label for row in train)
    undesirable = len(train) - desirable
    if not desirable or not undesirable:
        raise PreferenceBuildError(
            f"KTO needs desirable and undesirable answers in the train split: found {desirable} "
            f"desirable and {undesirable} undesirable"
        )
    weights = kto_weights(desirable, undesirable)
    return {
        "desirable": desirable,
        "undesirable": undesirable,
        "ratio": round(desirable / undesirable, 4),
        "desirable_weight": weights[0],
        "undesirable_weight": weights[1],
        "weighted_ratio": round(weighted_ratio(desirable, undesirable, weights), 4),
        "band": [float(bound) for bound in KTO_BALANCE],
    }


def make_manifest(
    splits: dict[str, list[PreferenceRow]],
    options: PreferenceBuildOptions,
    signals: PreferenceSignals,
    left_out: Counter[str],
    users_at_cap: int,
    warnings: list[Issue],
) -> dict[str, Any]:
    """Version, counts per split, source and label, what was left out, the checks, the evaluation sets
    checked against, the options, and (KTO) the balance and weights."""
    canonical = sorted(
        json.dumps({"split": name, **row.to_trl()}, ensure_ascii=False, sort_keys=True)
        for name, rows in splits.items()
        for row in rows
    )
    version = f"pref-{options.kind}-" + hashlib.sha256("\n".join(canonical).encode()).hexdigest()[:12]
    every = [row for rows in splits.values() for row in rows]
    manifest: dict[str, Any] = {
        "version": version,
        "kind": options.kind,
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "counts": {
            "total": len(every),
            "splits": {name: len(rows) for name, rows in splits.items()},
            "sources": _by_source(every, options.kind),
            "per_split": {name: _by_source(rows, options.kind) for name, rows in splits.items()},
        },
        "left_out": dict(sorted((+left_out).items())),
        "users_at_cap": users_at_cap,
        "adapters": adapters_of(every),
        "checks": {
            "errors": 0,
            "warnings": len(warnings),
            "warnings_by_check": dict(Counter(i.check for i in warnings)),
        },
        "eval_leakage": {
            "dataset": str(options.evaluation.dataset),
            "dataset_version": options.evaluation.dataset_version,
            "questions": options.evaluation.counts,
            "left_out": left_out["eval_leakage"],
        },
        "signals": {
            "rated_answers": len(signals.rated),
            "corrections": len(signals.corrections),
            "ab_verdicts": len(signals.verdicts),
        },
        "options": {
            "desirable_stars": options.thresholds.desirable,
            "undesirable_stars": options.thresholds.undesirable,
            "per_user_cap": options.per_user_cap,
            "test_share": options.test_share,
        },
    }
    if options.kind == "kto":
        manifest["balance"] = kto_balance(splits["train"])
    return manifest


def _by_source(rows: list[PreferenceRow], kind: str) -> dict[str, Any]:
    if kind == "dpo":
        counts = Counter(row.provenance.source for row in rows)
        return {source: counts[source] for source in SOURCES if counts[source]}
    labelled = Counter((row.provenance.source, row.label) for row in rows)
    return {
        source: {"desirable": labelled[(source, True)], "undesirable": labelled[(source, False)]}
        for source in SOURCES
        if labelled[(source, True)] or labelled[(source, False)]
    }


def _signal_summary(signals: PreferenceSignals) -> str:
    return (
        f"{len(signals.rated)} rated answer(s), {len(signals.corrections)} correction(s) and "
        f"{len(signals.verdicts)} A/B verdict(s)"
    )


def _reasons(left_out: Counter[str]) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in sorted((+left_out).items()))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def newest_dataset(root: Path) -> Path | None:
    """The newest dataset folder built by `zantara dataset build` under `root` (by its manifest's
    creation time), or None when there is none: the one the evaluator reads by default."""
    found: list[tuple[str, str, Path]] = []
    for folder in sorted(root.glob("*/manifest.json")):
        try:
            manifest = json.loads(folder.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(manifest, dict) and str(manifest.get("version", "")).startswith("ds-"):
            found.append((str(manifest.get("created_at", "")), folder.parent.name, folder.parent))
    return max(found)[2] if found else None
