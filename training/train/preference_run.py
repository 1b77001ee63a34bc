"""One `zantara train --method kto|dpo` run: the same presets, backends (LoRA, QLoRA, Unsloth), progress
bar, JSON-lines log, checkpoints, resume and early stopping as SFT (`training.train.trainer`), with TRL's
KTO or DPO trainer against the parent adapter as the reference (`training.train.preference`).

    from training.train.config import load_config
    from training.train.trainer import train

    result = train(load_config(dataset="var/preferences/pref-dpo-...", base_model=BASE, method="dpo",
                               init_adapter="var/adapters/zantara/v3"))
    print(result.meta["reference"]["adapter"], result.metrics["eval_reward_accuracy"])
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.train.backends import Environment, load_model, select_backend
from training.train.config import TrainConfig, model_scale, read_parent
from training.train.preference import (
    answer_logps,
    check_reference,
    finite_or_raise,
    preference_args,
    preference_trainer,
    read_preference_data,
    sample_answers,
)

if TYPE_CHECKING:
    from transformers import TrainerCallback

    from training.train.trainer import TrainResult


def train_preferences(config: TrainConfig, *, callbacks: Sequence[TrainerCallback] = ()) -> TrainResult:
    """Train the adapter with KTO or DPO as `config.method` says; write it with `zantara.json` (its
    `reference` names the model the run was measured against) and return the result."""
    import torch
    from transformers import EarlyStoppingCallback

    from training.train import trainer as sft
    from training.train.callbacks import JsonlLogCallback, RichProgressCallback

    started = time.perf_counter()
    data = read_preference_data(config.dataset, config.method, config.seed)
    parent = read_parent(config.init_adapter, config.base_model) if config.init_adapter else None
    scale = model_scale(config.base_model)
    note = sft._scale_note(config, scale)
    config = config.resolve(len(data.train), scale=scale, parent=parent)
    out = config.output_dir or sft.default_output_dir(config)
    config = replace(config, output_dir=out, version=config.version or out.name)
    if (out / "adapter_config.json").exists():
        raise FileExistsError(f"{out} already holds an adapter: choose another --version or --out")
    checkpoints = out / sft.CHECKPOINTS
    resume = sft._last_checkpoint(checkpoints) if config.resume else None

    backend = select_backend(config.backend, qlora=config.qlora, env=Environment.detect())
    model, tokenizer = load_model(config, backend)
    samples = sample_answers(data)
    parent_logps = answer_logps(model, tokenizer, samples) if parent is not None else []
    eval_steps = config.eval_steps or sft._default_eval_steps(len(data.train), config)
    patience = config.early_stopping_patience
    stoppers = [EarlyStoppingCallback(early_stopping_patience=patience)] if patience > 0 else []
    bar = RichProgressCallback()
    extra = [JsonlLogCallback(config.log_jsonl)] if config.log_jsonl else []
    args = preference_args(config, checkpoints, eval_steps, data.manifest, cuda=torch.cuda.is_available())
    trainer = preference_trainer(config, model, tokenizer, data, args, [*stoppers, bar, *extra, *callbacks])
    reference = check_reference(trainer.model, tokenizer, parent, samples, parent_logps)
    start = trainer.evaluate(metric_key_prefix="parent")
    try:
        outcome = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    finally:
        bar.close()
    finite_or_raise(outcome.training_loss, "the training loss")
    history = [
        {"step": log["step"], "eval_loss": round(log["eval_loss"], 4)}
        for log in trainer.state.log_history
        if "eval_loss" in log
    ]
    for stopper in stoppers:
        trainer.remove_callback(stopper)
    best = trainer.evaluate()
    finite_or_raise(best["eval_loss"], "the validation loss")
    best_model: Any = trainer.model
    best_model.save_pretrained(out, selected_adapters=["default"])  # never the frozen reference copy
    metrics = {
        "method": config.method,
        "train_loss": round(outcome.training_loss, 4),
        "eval_loss": round(best["eval_loss"], 4),
        "eval_loss_base": None,
        "eval_loss_parent": round(start["parent_loss"], 4),
        "eval_reward_margin": _rounded(best.get("eval_rewards/margins")),
        "eval_reward_accuracy": _rounded(best.get("eval_rewards/accuracies")),
        # TRL adds its reward metrics as `eval_*` whatever the prefix (the parent's are 0 by construction)
        "eval_reward_margin_parent": _rounded(start.get("eval_rewards/margins")),
        "reference": {
            key: reference.get(key)
            for key in ("kind", "adapter", "max_logp_diff_vs_parent", "max_logp_diff_vs_base")
        },
        "best_checkpoint": Path(trainer.state.best_model_checkpoint or "").name or None,
        "global_step": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "epoch": round(trainer.state.epoch or 0.0, 3),
        "early_stopped": any(s.early_stopping_patience_counter >= patience for s in stoppers),
        "eval_steps": eval_steps,
        "eval_history": history,
        "train_pairs": len(data.train),
        "general_pairs": 0,
        "validation_pairs": len(data.validation),
        "validation": data.validation_note,
        "tokens_seen": trainer.state.num_input_tokens_seen,
        "tokens_per_second": None,
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    meta = sft._metadata(config, backend, data.manifest, metrics, note, parent)
    meta["reference"] = reference
    (out / "zantara.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    shutil.rmtree(checkpoints, ignore_errors=True)
    if config.merge:
        sft.merge_adapter(config.base_model, out, out / "merged")
    if config.database_url:
        sft.register(config.database_url, meta, out)
    return sft.TrainResult(adapter_dir=out, meta=meta, resumed_from=resume.name if resume else None)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
