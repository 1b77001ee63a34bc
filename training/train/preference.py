"""Preference tuning (KTO, DPO) for `zantara train --method kto|dpo`, with TRL's `KTOTrainer`/`DPOTrainer`.

The data is a `zantara dataset preferences build` folder (TRL's conversational rows, `manifest.json` with
the kind and, for KTO, the desirable/undesirable weights). A share of the train split's questions is held
out for validation (early stopping); `test.jsonl` is never read here: the margin gate judges on it.

**The reference model is the parent adapter.** The trainer is handed the parent loaded as a trainable
PEFT model; TRL (1.16, see `REFERENCE_HOW`) then adds a frozen copy of it as the adapter `ref` and
computes every reference log-probability through it. TRL falls back to "adapters disabled" (the base
model) when that copy cannot be made, which would silently train against the wrong model, so
`check_reference` asserts it on the run: the `ref` adapter's weights equal the parent's saved ones, are
frozen, and its log-probabilities of sample answers equal the parent's (measured before TRL touched the
model) and differ from the base's. The result goes into `zantara.json` and the registry's metrics.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.demo.data import read_jsonl

if TYPE_CHECKING:
    from training.train.config import ParentAdapter, TrainConfig

PREFERENCE_METHODS = ("kto", "dpo")
REFERENCE_ADAPTER = "ref"
REFERENCE_HOW = (
    "TRL 1.16 KTOTrainer/DPOTrainer with ref_model=None on a PEFT model that holds the parent adapter: "
    "a frozen copy named 'ref' computes the reference log-probabilities (not the base with adapters disabled)"
)
VALIDATION_SHARE = 0.1
SAMPLE_ROWS = 4
TOLERANCE = 1e-4
"""Largest difference in summed log-probability (nats) between the `ref` adapter and the parent."""


class ReferenceModelError(RuntimeError):
    """The reference model is not the parent adapter (the run would train against the wrong model)."""


@dataclass(frozen=True)
class PreferenceData:
    """Rows for TRL (without `meta`), the validation rows held out of the train split, and the manifest."""

    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    manifest: dict[str, Any]
    validation_note: str


def read_preference_data(dataset: Path, method: str, seed: int) -> PreferenceData:
    """The train split of a preference dataset as TRL rows, a validation share held out by question hash,
    shuffled with `seed` (KTO samples sequentially, so a sorted file would give one-label batches).
    Refuses a folder of another kind (a DPO dataset for KTO) or one that is not a preference build."""
    manifest_file = dataset / "manifest.json"
    if not manifest_file.is_file():
        raise FileNotFoundError(
            f"{dataset} has no manifest.json: build it with `zantara dataset preferences build`"
        )
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    kind = manifest.get("kind")
    if kind != method:
        found = f"a {kind.upper()} dataset" if isinstance(kind, str) else "not a preference dataset"
        raise ValueError(
            f"--method {method} needs a `zantara dataset preferences build --kind {method}` folder; "
            f"{dataset} is {found}"
        )
    rows = [
        {key: value for key, value in row.items() if key != "meta"}
        for row in read_jsonl(dataset / "train.jsonl")
    ]
    if not rows:
        raise ValueError(f"{dataset}/train.jsonl holds no rows")
    held = [row for row in rows if _held_for_validation(row)]
    train = [row for row in rows if not _held_for_validation(row)]
    note = f"{len(held)} row(s) of the train split held out by question"
    if not held or not train:
        train, held = rows, random.Random(seed).sample(rows, min(len(rows), 8))
        note = f"too few questions to hold any out: validation on {len(held)} train row(s)"
    random.Random(seed).shuffle(train)
    return PreferenceData(train, held, manifest, note)


def _held_for_validation(row: dict[str, Any]) -> bool:
    question = next((m["content"] for m in reversed(row["prompt"]) if m["role"] == "user"), "")
    digest = int(hashlib.sha256(("validation:" + question.strip().lower()).encode()).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < VALIDATION_SHARE


def preference_args(
    config: TrainConfig, checkpoints: Path, eval_steps: int, manifest: dict[str, Any], *, cuda: bool
) -> Any:
    """TRL's `KTOConfig` or `DPOConfig` with the preset's optimisation, the same evaluation, checkpoints
    and early-stopping settings as SFT, KTO's class weights from the manifest (NaN-prone without them on
    imbalanced data), and the reference computed live (no `sync_ref_model`: it cannot combine with PEFT
    nor with `precompute_ref_log_probs`)."""
    from trl import DPOConfig, KTOConfig

    settings = config.optimisation()
    common: dict[str, Any] = {
        "output_dir": str(checkpoints),
        "num_train_epochs": settings.epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": settings.batch_size,
        "per_device_eval_batch_size": settings.batch_size,
        "gradient_accumulation_steps": settings.grad_accum,
        "learning_rate": settings.learning_rate,
        "weight_decay": config.weight_decay,
        "warmup_steps": config.warmup_ratio,
        "lr_scheduler_type": "cosine",
        "eval_strategy": "steps",
        "eval_steps": eval_steps,
        "save_strategy": "steps",
        "save_steps": eval_steps,
        "save_total_limit": 2,
        "load_best_model_at_end": config.early_stopping_patience > 0,
        "metric_for_best_model": "eval_loss",
        "greater_is_better": False,
        "logging_steps": max(1, eval_steps // 2),
        "logging_first_step": True,
        "max_length": config.max_length,
        "beta": config.beta,
        "precompute_ref_log_probs": False,
        "sync_ref_model": False,
        "bf16": cuda,
        "use_cpu": not cuda,
        "seed": config.seed,
        "data_seed": config.seed,
        "report_to": [],
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    if config.method == "dpo":
        return DPOConfig(**common)
    if settings.batch_size < 2:
        raise ValueError(
            "KTO needs a per-device batch size of 2 or more (its KL term compares answers in a batch)"
        )
    balance = manifest.get("balance") or {}
    return KTOConfig(
        **common,
        desirable_weight=float(balance.get("desirable_weight") or 1.0),
        undesirable_weight=float(balance.get("undesirable_weight") or 1.0),
    )


def preference_trainer(
    config: TrainConfig,
    model: Any,
    tokenizer: Any,
    data: PreferenceData,
    args: Any,
    callbacks: list[Any],
) -> Any:
    """TRL's trainer for `config.method` on the PEFT `model`; with no `ref_model` TRL copies the loaded
    adapter as the frozen `ref` adapter (see the module's docstring)."""
    from datasets import Dataset
    from trl import DPOTrainer, KTOTrainer

    trainer_class = DPOTrainer if config.method == "dpo" else KTOTrainer
    return trainer_class(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=Dataset.from_list(data.train),
        eval_dataset=Dataset.from_list(data.validation),
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def sample_answers(data: PreferenceData) -> list[tuple[list[dict[str, str]], str]]:
    """A few (prompt, answer) pairs of the train split the reference check scores."""
    picked = []
    for row in data.train[:SAMPLE_ROWS]:
        answers = row.get("completion") or row.get("chosen") or []
        picked.append((row["prompt"], answers[0]["content"]))
    return picked


def answer_logps(model: Any, tokenizer: Any, samples: list[tuple[list[dict[str, str]], str]]) -> list[float]:
    """Summed log-probability (nats) of each answer after its prompt, teacher-forced, under the model's
    active adapter (the chat template renders the prompt as the engine does)."""
    import torch

    values = []
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for prompt, answer in samples:
            head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
            full = tokenizer.apply_chat_template(
                [*prompt, {"role": "assistant", "content": answer}], tokenize=False
            )
            tail = full[len(head) :] if full.startswith(head) else answer
            head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
            ids = torch.tensor(
                [head_ids + tokenizer(tail, add_special_tokens=False)["input_ids"]], device=device
            )
            logits = model(input_ids=ids).logits[0, len(head_ids) - 1 : -1].float()
            picked = torch.log_softmax(logits, dim=-1).gather(1, ids[0, len(head_ids) :, None])
            values.append(float(picked.sum()))
    model.train(was_training)
    return values


def check_reference(
    model: Any,
    tokenizer: Any,
    parent: ParentAdapter | None,
    samples: list[tuple[list[dict[str, str]], str]],
    parent_logps: list[float],
) -> dict[str, Any]:
    """Assert that the trainer's reference is the parent adapter and describe it for `zantara.json`.

    With a parent: TRL must have added the frozen `ref` adapter, its weights must equal the parent's
    saved `adapter_model.safetensors`, and its log-probabilities of `samples` must equal `parent_logps`
    (the parent's, measured before the trainer was built); the base's are recorded beside them, to show
    how far the wrong reference would have been. Without a parent the reference is the base model
    (TRL's `ref` copy of a fresh, zero-initialised LoRA). Raises `ReferenceModelError` otherwise.
    """
    import torch
    from trl.trainer.utils import use_adapter

    if REFERENCE_ADAPTER not in getattr(model, "peft_config", {}):
        if parent is not None:
            raise ReferenceModelError(
                f"TRL did not add the frozen '{REFERENCE_ADAPTER}' adapter: the reference would be the base "
                f"model with adapters disabled, not the parent {parent.key}"
            )
        return {"kind": "base", "adapter": None, "how": "no parent: the base model (adapters disabled)"}
    weights = _reference_weights(model)
    trainable = [
        name
        for name, param in model.named_parameters()
        if f".{REFERENCE_ADAPTER}." in name and param.requires_grad
    ]
    if trainable:
        raise ReferenceModelError(f"the reference adapter is trainable ({trainable[0]}): it must stay frozen")
    with use_adapter(model, adapter_name=REFERENCE_ADAPTER):
        reference = answer_logps(model, tokenizer, samples)
    with use_adapter(model, adapter_name=None):
        base = answer_logps(model, tokenizer, samples)
    record: dict[str, Any] = {
        "kind": "parent_adapter" if parent is not None else "base",
        "adapter": parent.key if parent is not None else None,
        "path": str(parent.path) if parent is not None else None,
        "how": REFERENCE_HOW,
        "frozen": True,
        "sample_rows": len(samples),
        "logps_reference": [round(value, 4) for value in reference],
        "logps_base": [round(value, 4) for value in base],
    }
    if parent is None:
        return record
    weight_diff = _weight_difference(weights, parent.path)
    logp_diff = max((abs(a - b) for a, b in zip(reference, parent_logps, strict=True)), default=0.0)
    exact = all(tensor.dtype == torch.float32 for tensor in weights.values())
    weight_tolerance, logp_tolerance = (1e-6, TOLERANCE) if exact else (1e-2, 1e-2)
    base_diff = max((abs(a - b) for a, b in zip(base, parent_logps, strict=True)), default=0.0)
    record.update(
        logps_parent=[round(value, 4) for value in parent_logps],
        max_weight_diff_vs_parent=weight_diff,
        max_logp_diff_vs_parent=round(logp_diff, 6),
        max_logp_diff_vs_base=round(base_diff, 4),
    )
    scale = max(1.0, max((abs(value) for value in parent_logps), default=1.0))
    if weight_diff > weight_tolerance or logp_diff > logp_tolerance * scale:
        raise ReferenceModelError(
            f"the reference adapter differs from the parent {parent.key} (weights by {weight_diff:g}, "
            f"log-probabilities by {logp_diff:g} nats): the run would train against the wrong model"
        )
    return record


def _reference_weights(model: Any) -> dict[str, Any]:
    """The `ref` adapter's LoRA tensors, keyed as PEFT saves them (adapter name dropped)."""
    marker = f".{REFERENCE_ADAPTER}."
    return {
        name.replace(marker, "."): param.detach()
        for name, param in model.named_parameters()
        if marker in name
    }


def _weight_difference(weights: dict[str, Any], parent_dir: Path) -> float:
    """Largest difference between the `ref` tensors and the parent's saved adapter, relative to each
    saved tensor's largest value (bf16 copies under QLoRA differ by rounding only)."""
    from safetensors.torch import load_file

    saved = load_file(str(parent_dir / "adapter_model.safetensors"))
    if set(saved) != set(weights):
        missing = sorted(set(saved) ^ set(weights))[:2]
        raise ReferenceModelError(
            f"the reference adapter's tensors do not match the parent's ({missing} ...)"
        )
    worst = 0.0
    for name, tensor in saved.items():
        scale = max(float(tensor.float().abs().max()), 1e-8)
        worst = max(worst, float((weights[name].float().cpu() - tensor.float()).abs().max()) / scale)
    return worst


def finite_or_raise(value: float, what: str) -> float:
    """`value`, or a `ValueError` naming what became NaN/infinite (an imbalanced KTO set without weights)."""
    if not math.isfinite(value):
        raise ValueError(
            f"{what} is {value}: preference training diverged (check the dataset's balance and the KTO "
            "weights in its manifest, or lower the learning rate)"
        )
    return value
