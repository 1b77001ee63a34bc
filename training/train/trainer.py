"""The product trainer behind `zantara train`: a LoRA adapter on a dataset version, with TRL's SFT trainer.

Loss falls on the assistant's answer only (prompt-completion records); the validation split is evaluated
during training, early stopping keeps the best checkpoint, general Indonesian chats are mixed in against
forgetting, and an interrupted run resumes from its last checkpoint. With `init_adapter` the run continues
training an existing adapter (the parent) instead of a fresh LoRA. Example:

    from training.train.config import load_config
    from training.train.trainer import train

    result = train(load_config(dataset="var/datasets/v1", base_model="var/models/zantara-demo-base"))
    print(result.adapter_dir, result.metrics["eval_loss"])
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.demo.data import GENERAL_FILE, chat, read_jsonl
from training.general_split import general_rows
from training.train.backends import Environment, load_model, select_backend
from training.train.config import ModelScale, ParentAdapter, TrainConfig, model_scale, read_parent

if TYPE_CHECKING:
    from transformers import TrainerCallback

ADAPTERS_ROOT = Path("var/adapters")
CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class TrainResult:
    """Where the adapter went and how the run went (the same metadata as `zantara.json`)."""

    adapter_dir: Path
    meta: dict[str, Any]
    resumed_from: str | None

    @property
    def metrics(self) -> dict[str, Any]:
        """Training and validation metrics of the run."""
        return self.meta["metrics"]


def train(config: TrainConfig, *, callbacks: Sequence[TrainerCallback] = ()) -> TrainResult:
    """Train a LoRA adapter as `config` says; write it with `zantara.json` and return the result.
    `config.method` kto or dpo trains on a preference dataset (`training.train.preference_run`)."""
    if config.method != "sft":
        from training.train.preference_run import train_preferences

        return train_preferences(config, callbacks=callbacks)
    import torch
    from transformers import EarlyStoppingCallback
    from trl import SFTTrainer

    from training.train.callbacks import JsonlLogCallback, RichProgressCallback

    started = time.perf_counter()
    manifest = json.loads((config.dataset / "manifest.json").read_text(encoding="utf-8"))
    train_rows = [_prompt_completion(r["messages"]) for r in read_jsonl(config.dataset / "train.jsonl")]
    eval_rows = [_prompt_completion(r["messages"]) for r in read_jsonl(config.dataset / "validation.jsonl")]
    general_rows = mix_general(len(train_rows), config)
    parent = read_parent(config.init_adapter, config.base_model) if config.init_adapter else None
    scale = model_scale(config.base_model)
    note = _scale_note(config, scale)
    config = config.resolve(len(train_rows), scale=scale, parent=parent)
    out = config.output_dir or default_output_dir(config)
    config = replace(config, output_dir=out, version=config.version or out.name)
    if (out / "adapter_config.json").exists():
        raise FileExistsError(f"{out} already holds an adapter: choose another --version or --out")
    checkpoints = out / CHECKPOINTS
    resume = _last_checkpoint(checkpoints) if config.resume else None

    backend = select_backend(config.backend, qlora=config.qlora, env=Environment.detect())
    model, tokenizer = load_model(config, backend)
    rows = random.Random(config.seed).sample(train_rows + general_rows, len(train_rows) + len(general_rows))
    eval_steps = config.eval_steps or _default_eval_steps(len(rows), config)
    patience = config.early_stopping_patience
    stoppers = [EarlyStoppingCallback(early_stopping_patience=patience)] if patience > 0 else []
    bar = RichProgressCallback()
    extra = [JsonlLogCallback(config.log_jsonl)] if config.log_jsonl else []
    trainer = SFTTrainer(
        model=model,
        args=_sft_config(config, checkpoints, eval_steps, cuda=torch.cuda.is_available()),
        train_dataset=_dataset(rows),
        eval_dataset=_dataset(eval_rows),
        processing_class=tokenizer,
        callbacks=[*stoppers, bar, *extra, *callbacks],
    )
    start = trainer.evaluate(metric_key_prefix="parent") if parent is not None else None
    try:
        outcome = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    finally:
        bar.close()
    history = [
        {"step": log["step"], "eval_loss": round(log["eval_loss"], 4)}
        for log in trainer.state.log_history
        if "eval_loss" in log
    ]
    for stopper in stoppers:  # the evaluations below must not count as patience
        trainer.remove_callback(stopper)
    best = trainer.evaluate()
    with model.disable_adapter():
        base = trainer.evaluate(metric_key_prefix="base")
    best_model: Any = trainer.model  # the best checkpoint's weights (the last ones without early stopping)
    best_model.save_pretrained(out)
    metrics = {
        "train_loss": round(outcome.training_loss, 4),
        "eval_loss": round(best["eval_loss"], 4),
        "eval_loss_base": round(base["base_loss"], 4),
        "eval_loss_parent": round(start["parent_loss"], 4) if start is not None else None,
        "best_checkpoint": Path(trainer.state.best_model_checkpoint or "").name or None,
        "global_step": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "epoch": round(trainer.state.epoch or 0.0, 3),
        "early_stopped": any(s.early_stopping_patience_counter >= patience for s in stoppers),
        "eval_steps": eval_steps,
        "eval_history": history,
        "train_pairs": len(train_rows),
        "general_pairs": len(general_rows),
        "validation_pairs": len(eval_rows),
        "tokens_seen": trainer.state.num_input_tokens_seen,
        "tokens_per_second": round(trainer.state.num_input_tokens_seen / outcome.metrics["train_runtime"], 1),
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    meta = _metadata(config, backend, manifest, metrics, note, parent)
    (out / "zantara.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    shutil.rmtree(checkpoints, ignore_errors=True)
    if config.merge:
        merge_adapter(config.base_model, out, out / "merged")
    if config.database_url:
        register(config.database_url, meta, out)
    return TrainResult(adapter_dir=out, meta=meta, resumed_from=resume.name if resume else None)


def register(database_url: str, meta: dict[str, Any], adapter_dir: Path) -> None:
    """Record the adapter described by `meta` (its `zantara.json`) in the registry as a candidate."""
    from database.engine import create_db_engine, make_session_factory
    from feedback.registry import record_version

    parent = meta.get("parent") or {}
    engine = create_db_engine(database_url)
    try:
        with make_session_factory(engine)() as session, session.begin():
            record_version(
                session,
                name=meta["name"],
                version=meta["version"],
                path=str(adapter_dir.resolve()),
                base_model=meta["base_model"],
                dataset_version=meta["dataset"]["version"],
                parent_version=parent.get("version"),
                metrics=meta["metrics"],
                created_by=meta["created_by"],
                status="candidate",
            )
    finally:
        engine.dispose()


def mix_general(domain_pairs: int, config: TrainConfig) -> list[dict[str, Any]]:
    """General-Indonesian chats so that they make `general_ratio` of the training mix (seeded sample)."""
    if config.general_ratio == 0:
        return []
    rows = general_rows(config.general_path or GENERAL_FILE, held_out=False)
    pairs = [(row["question"], row["answer"]) for row in rows]
    wanted = round(domain_pairs * config.general_ratio / (1 - config.general_ratio))
    rng = random.Random(config.seed)
    picked = [pair for _ in range(wanted // len(pairs)) for pair in pairs] + rng.sample(
        pairs, wanted % len(pairs)
    )
    return [_prompt_completion(chat(q, a)) for q, a in picked]


def default_output_dir(config: TrainConfig) -> Path:
    """`var/adapters/NAME/VERSION`; the version is the next free `vN`, or with `resume` the latest
    unfinished one."""
    root = ADAPTERS_ROOT / config.name
    if config.version:
        return root / config.version
    numbers = sorted(
        int(m.group(1)) for p in root.glob("v*") if p.is_dir() and (m := re.fullmatch(r"v(\d+)", p.name))
    )
    if config.resume and numbers and not (root / f"v{numbers[-1]}" / "adapter_config.json").exists():
        return root / f"v{numbers[-1]}"
    return root / f"v{numbers[-1] + 1 if numbers else 1}"


def merge_adapter(base_model: str, adapter_dir: Path, out: Path) -> Path:
    """Write base + adapter merged into one full model (for engines without LoRA support)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_model, dtype="auto")
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_model).save_pretrained(out)
    return out


def _prompt_completion(messages: list[dict[str, str]]) -> dict[str, Any]:
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("every training chat must end with the assistant's answer")
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def _dataset(rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    return Dataset.from_list(rows)


def _default_eval_steps(rows: int, config: TrainConfig) -> int:
    """About ten evaluations a run."""
    settings = config.optimisation()
    per_epoch = math.ceil(rows / (settings.batch_size * settings.grad_accum))
    total = config.max_steps if config.max_steps > 0 else math.ceil(per_epoch * settings.epochs)
    return max(1, total // 10)


def _sft_config(config: TrainConfig, checkpoints: Path, eval_steps: int, *, cuda: bool) -> Any:
    from trl import SFTConfig

    settings = config.optimisation()
    return SFTConfig(
        output_dir=str(checkpoints),
        num_train_epochs=settings.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        learning_rate=settings.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,  # below 1 transformers reads it as a share of the steps
        lr_scheduler_type="cosine",
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=2,
        load_best_model_at_end=config.early_stopping_patience > 0,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        logging_steps=max(1, eval_steps // 2),
        logging_first_step=True,
        max_length=config.max_length,
        completion_only_loss=True,
        include_num_input_tokens_seen=True,
        bf16=cuda,
        use_cpu=not cuda,
        seed=config.seed,
        data_seed=config.seed,
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def _last_checkpoint(checkpoints: Path) -> Path | None:
    found = [p for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1]), default=None)


def _scale_note(config: TrainConfig, scale: ModelScale) -> dict[str, Any]:
    """Which learning-rate scale an unresolved config gets, and why (recorded in `zantara.json`'s config)."""
    note = scale.to_dict()
    if config.learning_rate is not None:
        note.update(
            lr_scale=None, reason=f"learning rate {config.learning_rate:g} set explicitly: not scaled"
        )
    elif config.lr_scale is not None:
        sized = scale.lr_scale
        note.update(lr_scale=config.lr_scale, reason=f"lr_scale set in the config (the size gives {sized:g})")
    return note


def _metadata(
    config: TrainConfig,
    backend: str,
    manifest: dict[str, Any],
    metrics: dict[str, Any],
    scale: dict[str, Any],
    parent: ParentAdapter | None,
) -> dict[str, Any]:
    return {
        "name": config.name,
        "version": config.version,
        "base_model": config.base_model,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "created_by": config.created_by or os.environ.get("USER") or "trainer",
        "parent": parent.to_dict() if parent is not None else None,
        "method": config.method,
        "dataset": {
            "path": str(config.dataset),
            "version": manifest.get("version"),
            "counts": manifest.get("counts"),
        },
        "backend": backend,
        "config": {**config.to_dict(), "scale": scale},
        "git_commit": _git_commit(),
        "metrics": metrics,
        "hardware": _hardware(),
    }


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except OSError:
        return None
    return done.stdout.strip() or None


def _hardware() -> dict[str, Any]:
    import os
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "device": "cuda" if gpu else "cpu",
        "gpu": gpu,
        "cpu_cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
