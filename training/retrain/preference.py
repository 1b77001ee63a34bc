"""The preference dataset of a `zantara retrain --method kto|dpo` run.

Built like `zantara dataset preferences build` from every signal in the database (ratings, corrections,
A/B verdicts), checked for leakage against the run's own SFT dataset (the one its no-forgetting gates
evaluate on), and written as `VAR_DIR/preferences/<version>`. Its `test.jsonl` holds the held-out pairs
the margin gate judges; a build whose version the parent was already trained on has nothing new.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from training.retrain.config import EXIT_NOTHING_NEW, Finished, RetrainError, RetrainOptions


def build_run_preferences(
    options: RetrainOptions, sessions: sessionmaker[Session], dataset_dir: Path, run_id: int
) -> dict[str, Any]:
    """Build the run's KTO/DPO dataset; returns its folder, version, counts and held-out pairs.

    Ends the run with exit 3 (`Finished`) when the signals make no usable dataset (nothing left after
    the filters, KTO with one label only) or no pair is held out for the margin gate."""
    from feedback.preferences import read_signals
    from training.dataset.files import DatasetInputError
    from training.dataset.preferences_build import (
        NothingToBuildError,
        PreferenceBuildError,
        PreferenceBuildOptions,
        build_preferences,
    )
    from training.dataset.preferences_filters import eval_questions

    try:
        evaluation = eval_questions(dataset_dir)
    except DatasetInputError as error:
        raise RetrainError(f"cannot check leakage against {dataset_dir}: {error}") from error
    build = PreferenceBuildOptions(kind=options.method, evaluation=evaluation, **options.preference_overrides)
    root = options.var_dir / "preferences"
    building = root / f".retrain-run-{run_id}"
    try:
        result = build_preferences(read_signals(sessions), build, building, force=True)
    except NothingToBuildError as error:
        raise Finished("nothing", EXIT_NOTHING_NEW, f"nothing new to learn from: {error}") from error
    except PreferenceBuildError as error:
        message = f"no usable {options.method.upper()} dataset: {error}"
        raise Finished("nothing", EXIT_NOTHING_NEW, message) from error
    manifest = result.manifest
    target = root / manifest["version"]
    if (target / "manifest.json").is_file():
        shutil.rmtree(building)
    else:
        shutil.rmtree(target, ignore_errors=True)
        os.replace(building, target)
    splits = manifest["counts"]["splits"]
    if not splits.get("test"):
        raise Finished(
            "nothing",
            EXIT_NOTHING_NEW,
            f"{manifest['version']} holds no held-out pair for the margin gate ({splits.get('train', 0)} "
            "train rows): collect more ratings, corrections or A/B verdicts",
        )
    return {
        "preference_dir": str(target),
        "preference_version": manifest["version"],
        "preference_counts": splits,
        "preference_balance": manifest.get("balance"),
    }
