"""Configuration of `zantara train`: presets, YAML files and command-line overrides."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

Backend = Literal["auto", "peft", "unsloth"]


@dataclass(frozen=True)
class Preset:
    """Optimisation settings chosen by dataset size (the seed plan's table)."""

    epochs: float
    batch_size: int
    learning_rate: float
    grad_accum: int


PRESETS: dict[str, Preset] = {
    "conservative": Preset(epochs=3, batch_size=2, learning_rate=2e-5, grad_accum=8),
    "balanced": Preset(epochs=3, batch_size=4, learning_rate=2e-4, grad_accum=4),
    "aggressive": Preset(epochs=5, batch_size=8, learning_rate=5e-4, grad_accum=2),
}


def preset_for(pairs: int) -> str:
    """The preset for a dataset of `pairs` training pairs: conservative under 2,000, else balanced.

    Above 5,000 pairs `aggressive` is an option, never automatic: ask for it with `--preset`.
    """
    return "conservative" if pairs < 2_000 else "balanced"


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs. `None` means "decide from the data" (see `resolve`).

    Data:
        dataset: dataset directory from `zantara dataset build` (train/validation jsonl + manifest.json).
        general_path: general-Indonesian Q/A mixed into training (`data/general/general.jsonl`).
        general_ratio: share of general chats in the training mix, 0.2 by default (0 turns mixing off).
        max_length: longest tokenized chat, 1024 tokens; longer ones are truncated.

    Model and output:
        base_model: path or hub id of the base model (the demo base by default, see `train_cli`).
        name, version: adapter name and version ("zantara", next free `vN` by default).
        output_dir: adapter directory; `var/adapters/NAME/VERSION` by default.
        merge: also write a merged full model in `OUTPUT_DIR/merged` for engines without LoRA.

    Optimisation (from the preset unless set; see `PRESETS`, `preset_for`):
        preset: conservative, balanced or aggressive; by dataset size when unset.
        epochs, batch_size, learning_rate, grad_accum: per-field overrides of the preset.
        max_steps: stop after this many optimiser steps (-1: run the epochs).
        weight_decay 0.01, warmup_ratio 0.03, cosine schedule, seed 42.

    LoRA: lora_r 16, lora_alpha 32, lora_dropout 0.05 on every attention and MLP projection.

    Against overfitting: eval_steps (evaluate and checkpoint every N steps; about 10 evaluations a run
        when unset), early_stopping_patience 3 evaluations without improvement; the best checkpoint is
        the one kept.

    Backend: backend auto (Unsloth with a CUDA GPU when installed, else PEFT + TRL), qlora (4-bit base
        through bitsandbytes), resume (continue from the last checkpoint in OUTPUT_DIR/checkpoints).

    Bookkeeping: database_url (register the adapter in the registry), log_jsonl (metrics as JSON lines).
    """

    dataset: Path
    base_model: str
    general_path: Path | None = None
    general_ratio: float = 0.2
    max_length: int = 1024
    name: str = "zantara"
    version: str | None = None
    output_dir: Path | None = None
    merge: bool = False
    preset: str | None = None
    epochs: float | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    grad_accum: int | None = None
    max_steps: int = -1
    weight_decay: float = 0.01
    warmup_ratio: float = 0.03
    seed: int = 42
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = field(
        default=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    )
    eval_steps: int | None = None
    early_stopping_patience: int = 3
    backend: Backend = "auto"
    qlora: bool = False
    resume: bool = False
    database_url: str | None = None
    log_jsonl: Path | None = None

    def __post_init__(self) -> None:
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, not {self.preset!r}")
        if not 0 <= self.general_ratio < 1:
            raise ValueError(f"general_ratio must be in [0, 1), not {self.general_ratio}")
        if self.backend not in ("auto", "peft", "unsloth"):
            raise ValueError(f"backend must be auto, peft or unsloth, not {self.backend!r}")

    def resolve(self, pairs: int) -> TrainConfig:
        """Fill the preset and its unset fields for a dataset of `pairs` training pairs."""
        preset = self.preset or preset_for(pairs)
        values = asdict(PRESETS[preset])
        chosen = {
            key: value if getattr(self, key) is None else getattr(self, key) for key, value in values.items()
        }
        return replace(self, preset=preset, **chosen)

    def optimisation(self) -> Preset:
        """Epochs, batch size, learning rate and accumulation of a resolved config."""
        if (
            self.epochs is None
            or self.batch_size is None
            or self.learning_rate is None
            or self.grad_accum is None
        ):
            raise ValueError("the config is not resolved yet: call resolve(pairs) first")
        return Preset(self.epochs, self.batch_size, self.learning_rate, self.grad_accum)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (paths as strings), as recorded in `zantara.json`."""
        out = asdict(self)
        out.pop("database_url")  # may hold a password
        return {
            k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
            for k, v in out.items()
        }


_PATHS = {"dataset", "general_path", "output_dir", "log_jsonl"}


def load_config(path: Path | None = None, **overrides: Any) -> TrainConfig:
    """Build a config from an optional YAML file, then the overrides that are not None (command line)."""
    import yaml

    values: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of config fields")
        values.update({key.replace("-", "_"): value for key, value in loaded.items()})
    values.update({key: value for key, value in overrides.items() if value is not None})
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config field(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    for key in _PATHS & set(values):
        values[key] = Path(values[key])
    if "target_modules" in values:
        values["target_modules"] = tuple(values["target_modules"])
    missing = [key for key in ("dataset", "base_model") if key not in values]
    if missing:
        raise ValueError(f"missing config field(s): {', '.join(missing)}")
    return TrainConfig(**values)
