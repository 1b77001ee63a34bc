"""Configuration of `zantara retrain`: its options, steps, exit codes, and how a step stops a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowledge.paths import RETRAIN_GATES_FILE

STEPS = ("parent", "collect", "dataset", "train", "evaluate", "register", "canary")
EXIT_PROMOTED, EXIT_GATES_FAILED, EXIT_ERROR, EXIT_NOTHING_NEW = 0, 1, 2, 3
FOCUS_PRESET = "balanced"
RETRAIN_GATES = RETRAIN_GATES_FILE


@dataclass(frozen=True)
class RetrainOptions:
    """One `zantara retrain` run (paths and URLs already resolved by the command line).

    Continuing a parent trains on a focus view (`training.retrain.focus`): the new corrections
    `corrections_repeat` times, `replay_pairs` pairs replayed from the new dataset's train split, and
    `validation_pairs` of its validation split, with the `FOCUS_PRESET` unless `preset` is given (the
    view is small and must learn new answers in a few steps); `from_scratch` trains on the whole
    dataset with the preset `zantara train` picks. The dataset keeps only validated pairs (and the
    database's verdicts) unless `include_unvalidated`.

    `method` kto or dpo (preference retrain, `training.retrain.preference`) also builds a KTO/DPO
    dataset from the loop's ratings, corrections and A/B verdicts (`preference_overrides` set
    `PreferenceBuildOptions` fields such as `test_share`), trains the parent on it with the parent as the
    reference, and gates the candidate on the margin of its held-out pairs instead of the corrections
    gate; anything new in the signals (not only a correction) is something to learn from.

    `train_overrides` and `dataset_overrides` set `TrainConfig` and `BuildOptions` fields (a smaller
    seed bank, fewer evaluations) for experiments and tests; the command line leaves them empty.
    """

    database_url: str
    var_dir: Path
    adapters_dir: Path
    base_model: str
    services: tuple[str, ...] = ("http://127.0.0.1:8000",)
    admin_token: str = ""
    api_key: str | None = None
    name: str | None = None
    from_scratch: bool = False
    force: bool = False
    fresh: bool = False
    wait: bool = False
    gates: Path = RETRAIN_GATES
    eval_limit: int | None = None
    eval_max_tokens: int = 256
    max_steps: int | None = None
    preset: str | None = None
    corrections_repeat: int = 6
    replay_pairs: int = 64
    validation_pairs: int = 24
    include_unvalidated: bool = False
    train_config: Path | None = None
    canary_percentage: float = 20.0
    load_timeout_s: float = 300.0
    connect_attempts: int = 5
    lease_ttl_s: float = 300.0
    actor: str = "zantara-retrain"
    progress: bool = True
    method: str = "sft"
    train_overrides: dict[str, Any] = field(default_factory=dict)
    dataset_overrides: dict[str, Any] = field(default_factory=dict)
    preference_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in ("sft", "kto", "dpo"):
            raise ValueError(f"method must be sft, kto or dpo, not {self.method!r}")


class RetrainError(Exception):
    """A step cannot go on; the run stays `running` and the next run resumes it (exit 2)."""


class Finished(Exception):
    """The run ends here with `status` and `exit_code` (nothing new, gates failed)."""

    def __init__(self, status: str, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.exit_code = status, exit_code
