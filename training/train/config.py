"""Configuration of `zantara train`: presets, YAML files and command-line overrides."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

Backend = Literal["auto", "peft", "unsloth"]
Method = Literal["sft", "kto", "dpo"]
METHODS: tuple[str, ...] = ("sft", "kto", "dpo")
FULL_SIZE = 7_000_000_000
"""From this many parameters up the presets apply as they are (they were tuned for the 8B base)."""
MAX_LR_SCALE = 100.0


@dataclass(frozen=True)
class Preset:
    """Optimisation settings chosen by dataset size (the seed plan's table), for a 7B-9B base model;
    smaller models get their learning rate scaled up (see `model_scale`)."""

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
class ModelScale:
    """How the presets fit the base model: its parameter count (estimated from `config.json`, no weights
    loaded; None when unknown) and the factor applied to the preset's learning rate."""

    parameters: int | None
    lr_scale: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view, as recorded in `zantara.json`'s config."""
        return asdict(self)


def model_scale(base_model: str) -> ModelScale:
    """The learning-rate factor for `base_model`: 1 from 7B parameters up (the presets' own values), else
    sqrt(7B / parameters), at most 100.

    Adam's best learning rate falls roughly with the model's width (muP), and for a transformer the width
    goes as the square root of its parameters; the 3M-parameter demo base gets 47x (conservative 9.4e-4).
    """
    config = _read_model_config(base_model)
    parameters = estimate_parameters(config) if config is not None else None
    if parameters is None:
        return ModelScale(None, 1.0, "model size unknown (no readable config.json): the presets as they are")
    if parameters >= FULL_SIZE:
        return ModelScale(parameters, 1.0, "7B parameters or more: the presets as they are (tuned for 8B)")
    scale = float(f"{min(MAX_LR_SCALE, math.sqrt(FULL_SIZE / parameters)):.2g}")
    return ModelScale(
        parameters,
        scale,
        f"{parameters / 1e6:.1f}M parameters: learning rate x sqrt(7B / parameters) = x{scale:g}",
    )


def estimate_parameters(config: dict[str, Any]) -> int | None:
    """Parameters of a decoder-only transformer from its `config.json` (embeddings, attention with
    grouped key/value heads, gated MLP); None when the fields are missing."""
    nested = config.get("text_config")
    text: dict[str, Any] = nested if isinstance(nested, dict) else config
    sizes = [text.get(key) for key in ("hidden_size", "num_hidden_layers", "vocab_size")]
    if not all(isinstance(value, int) and value > 0 for value in sizes):
        return None
    hidden, layers, vocab = (int(value or 0) for value in sizes)
    heads = int(text.get("num_attention_heads") or 1)
    kv_heads = int(text.get("num_key_value_heads") or heads)
    head_dim = int(text.get("head_dim") or hidden // heads)
    intermediate = int(text.get("intermediate_size") or 4 * hidden)
    attention = hidden * head_dim * 2 * (heads + kv_heads)
    mlp = 3 * hidden * intermediate
    embeddings = vocab * hidden * (1 if text.get("tie_word_embeddings", True) else 2)
    return int(embeddings + layers * (attention + mlp))


def _read_model_config(base_model: str) -> dict[str, Any] | None:
    """The base model's `config.json`: from its directory, or the hub (a small download) for `owner/name`."""
    path = Path(base_model) / "config.json"
    if not path.is_file():
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", base_model) or Path(base_model).exists():
            return None
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(base_model, "config.json"))
        except Exception:  # noqa: BLE001 - offline or unknown: the presets as they are
            return None
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return loaded if isinstance(loaded, dict) else None


@dataclass(frozen=True)
class ParentAdapter:
    """The adapter a run continues from: its name, version, folder, base model and LoRA shape."""

    name: str
    version: str
    path: Path
    base_model: str
    lora: dict[str, Any]

    @property
    def key(self) -> str:
        """`NAME@VERSION`."""
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """The `parent` entry of `zantara.json`."""
        return {"name": self.name, "version": self.version, "key": self.key, "path": str(self.path)}


def read_parent(path: Path, base_model: str) -> ParentAdapter:
    """The adapter in `path` to continue training on `base_model`; refuses a folder without a LoRA adapter
    and an adapter trained on another base model."""
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"--init-adapter {path}: not an adapter directory (no adapter_config.json)")
    adapter = json.loads(config_file.read_text(encoding="utf-8"))
    if adapter.get("peft_type") != "LORA":
        raise ValueError(f"--init-adapter {path}: a LoRA adapter is needed, not {adapter.get('peft_type')!r}")
    meta_file = path / "zantara.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
    parent_base = str(meta.get("base_model") or adapter.get("base_model_name_or_path") or "")
    if not same_base_model(parent_base, base_model):
        raise ValueError(
            f"--init-adapter {path} was trained on base model {parent_base!r}, not {base_model!r}: "
            "continue it on its own base (--base-model) or train from scratch without --init-adapter"
        )
    targets = adapter.get("target_modules") or []
    lora = {
        "lora_r": int(adapter["r"]),
        "lora_alpha": int(adapter["lora_alpha"]),
        "lora_dropout": float(adapter.get("lora_dropout") or 0.0),
        "target_modules": tuple(sorted(targets)) if isinstance(targets, list) else (targets,),
    }
    resolved = path.resolve()
    name = str(meta.get("name") or resolved.parent.name)
    return ParentAdapter(name, str(meta.get("version") or resolved.name), resolved, parent_base, lora)


def same_base_model(first: str, second: str) -> bool:
    """Whether two base-model references name the same weights: equal strings, the same folder, or two
    folders with the same config and the same weight files (sizes and their first and last MiB)."""
    if first == second:
        return True
    a, b = Path(first), Path(second)
    if not (a.is_dir() and b.is_dir()):
        return False
    return a.resolve() == b.resolve() or _weights_fingerprint(a) == _weights_fingerprint(b)


def _weights_fingerprint(folder: Path) -> str:
    config = folder / "config.json"
    digest = hashlib.sha256(config.read_bytes() if config.is_file() else b"")
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(1 << 20))
            handle.seek(max(0, size - (1 << 20)))
            digest.update(handle.read(1 << 20))
    return digest.hexdigest()


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs. `None` means "decide from the data" (see `resolve`).

    Data:
        dataset: dataset directory from `zantara dataset build` (train/validation jsonl + manifest.json).
        general_path: general-Indonesian Q/A mixed into training (`knowledge/data/general/general.jsonl`).
        general_ratio: share of general chats in the training mix, 0.2 by default (0 turns mixing off).
        max_length: longest tokenized chat, 1024 tokens; longer ones are truncated.

    Model and output:
        base_model: path or hub id of the base model (the demo base by default, see `train_cli`).
        name, version: adapter name and version ("zantara", next free `vN` by default).
        output_dir: adapter directory; `var/adapters/NAME/VERSION` by default.
        merge: also write a merged full model in `OUTPUT_DIR/merged` for engines without LoRA.

    Optimisation (from the preset unless set; see `PRESETS`, `preset_for`, `model_scale`):
        preset: conservative, balanced or aggressive; by dataset size when unset.
        lr_scale: factor on the preset's learning rate; by the base model's size when unset (1 from 7B up).
        epochs, batch_size, learning_rate, grad_accum: per-field overrides of the preset (an explicit
            learning_rate is used as it is).
        max_steps: stop after this many optimiser steps (-1: run the epochs).
        weight_decay 0.01, warmup_ratio 0.03, cosine schedule, seed 42.

    LoRA: lora_r 16, lora_alpha 32, lora_dropout 0.05 on every attention and MLP projection.
        init_adapter: continue training this adapter directory (its LoRA shape replaces these fields;
            it must have been trained on the same base model).

    Against overfitting: eval_steps (evaluate and checkpoint every N steps; about 10 evaluations a run
        when unset), early_stopping_patience 3 evaluations without improvement; the best checkpoint is
        the one kept. early_stopping_patience 0: no early stopping, the last weights are kept (what a
        retrain's focus run wants: its validation pairs are not what it is teaching, its gates judge).

    Backend: backend auto (Unsloth with a CUDA GPU when installed, else PEFT + TRL), qlora (4-bit base
        through bitsandbytes), resume (continue from the last checkpoint in OUTPUT_DIR/checkpoints).

    Method: method sft (TRL's SFT trainer on a `zantara dataset build` folder, the default), kto or dpo
        (TRL's KTO/DPO trainer on a `zantara dataset preferences build` folder of that kind, with the
        parent adapter as the reference model: `training.train.preference`); beta 0.1, how far the
        preference methods may move from the reference.

    Bookkeeping: database_url (register the adapter in the registry as a candidate), created_by (its
        author there; $USER or "trainer" when unset), log_jsonl (metrics as JSON lines).
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
    lr_scale: float | None = None
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
    init_adapter: Path | None = None
    eval_steps: int | None = None
    early_stopping_patience: int = 3
    backend: Backend = "auto"
    qlora: bool = False
    resume: bool = False
    database_url: str | None = None
    created_by: str | None = None
    log_jsonl: Path | None = None
    method: Method = "sft"
    beta: float = 0.1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, not {self.beta}")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, not {self.preset!r}")
        if not 0 <= self.general_ratio < 1:
            raise ValueError(f"general_ratio must be in [0, 1), not {self.general_ratio}")
        if self.backend not in ("auto", "peft", "unsloth"):
            raise ValueError(f"backend must be auto, peft or unsloth, not {self.backend!r}")
        if self.lr_scale is not None and self.lr_scale <= 0:
            raise ValueError(f"lr_scale must be positive, not {self.lr_scale}")

    def resolve(
        self, pairs: int, *, scale: ModelScale | None = None, parent: ParentAdapter | None = None
    ) -> TrainConfig:
        """Fill the preset and its unset fields for a dataset of `pairs` training pairs, the preset's
        learning rate scaled to the base model (`model_scale` unless `scale` or `lr_scale` is given), and
        the LoRA shape of the `parent` adapter when continuing one."""
        preset = self.preset or preset_for(pairs)
        values = asdict(PRESETS[preset])
        factor = self.lr_scale
        if factor is None:
            factor = (scale or model_scale(self.base_model)).lr_scale
        values["learning_rate"] = float(f"{values['learning_rate'] * factor:.3g}")
        chosen = {
            key: value if getattr(self, key) is None else getattr(self, key) for key, value in values.items()
        }
        lora = parent.lora if parent is not None else {}
        applied = factor if self.learning_rate is None else None  # an explicit learning rate is not scaled
        return replace(self, preset=preset, lr_scale=applied, **chosen, **lora)

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


_PATHS = {"dataset", "general_path", "output_dir", "log_jsonl", "init_adapter"}


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
