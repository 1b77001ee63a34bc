"""`zantara train`: train a LoRA adapter on a dataset version (registered in the CLI as a typer command).

Example (the tiny demo base is built on first use):

    zantara train --dataset var/datasets/v1 --max-steps 50 --log-jsonl var/train.jsonl
    zantara train --dataset var/datasets/v2 --init-adapter var/adapters/zantara/v1   # continue v1 as v2
    zantara train --method dpo --dataset var/preferences/pref-dpo-... --init-adapter var/adapters/zantara/v2
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DEMO_BASE = Path("var/models/zantara-demo-base")


def train(
    dataset: Annotated[
        Path,
        typer.Option(
            help="Dataset directory from `zantara dataset build` (sft) or "
            "`zantara dataset preferences build` (kto, dpo)."
        ),
    ],
    method: Annotated[
        str | None,
        typer.Option(
            help="sft (default), kto or dpo; kto/dpo measure against the --init-adapter parent as reference."
        ),
    ] = None,
    beta: Annotated[
        float | None, typer.Option(help="kto/dpo: how far the adapter may move from the reference (0.1).")
    ] = None,
    base_model: Annotated[
        str | None, typer.Option(help="Base model path or hub id (default: the demo base, built if missing).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Adapter directory (default: var/adapters/NAME/VERSION).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Adapter name (default: zantara).")] = None,
    version: Annotated[str | None, typer.Option(help="Adapter version (default: the next vN).")] = None,
    preset: Annotated[
        str | None, typer.Option(help="conservative, balanced or aggressive (default: by dataset size).")
    ] = None,
    lr_scale: Annotated[
        float | None,
        typer.Option(
            help="Factor on the preset's learning rate (default: by the base model's size; 1 from 7B)."
        ),
    ] = None,
    init_adapter: Annotated[
        Path | None,
        typer.Option(help="Continue training this adapter directory (trained on the same base model)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML file of config fields (options override it).")
    ] = None,
    epochs: Annotated[float | None, typer.Option(help="Epochs (overrides the preset).")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Batch size per device (overrides the preset).")
    ] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Learning rate (overrides the preset).")] = None,
    grad_accum: Annotated[
        int | None, typer.Option(help="Gradient accumulation steps (overrides the preset).")
    ] = None,
    general_ratio: Annotated[
        float | None, typer.Option(help="Share of general Indonesian chats (default 0.2).")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimiser steps.")] = None,
    eval_steps: Annotated[int | None, typer.Option(help="Evaluate and checkpoint every N steps.")] = None,
    qlora: Annotated[
        bool | None, typer.Option("--qlora", help="Load the base in 4 bits (CUDA, bitsandbytes).")
    ] = None,
    backend: Annotated[str | None, typer.Option(help="auto, peft or unsloth (default: auto).")] = None,
    resume: Annotated[
        bool | None, typer.Option("--resume", help="Continue from the last checkpoint.")
    ] = None,
    merge: Annotated[bool | None, typer.Option("--merge", help="Also write a merged full model.")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="Register the adapter in this database's registry (as a candidate).")
    ] = None,
    log_jsonl: Annotated[Path | None, typer.Option(help="Append metrics as JSON lines to this file.")] = None,
) -> None:
    """Train a LoRA adapter on a dataset version and write it with its `zantara.json` metadata."""
    from training.train.backends import BackendError
    from training.train.config import load_config
    from training.train.preference import ReferenceModelError
    from training.train.trainer import train as run

    if base_model is None:
        from training.demo.model import ensure_demo_base

        base_model = str(ensure_demo_base(DEMO_BASE))
    try:
        settings = load_config(
            config,
            dataset=dataset,
            base_model=base_model,
            output_dir=out,
            name=name,
            version=version,
            preset=preset,
            lr_scale=lr_scale,
            init_adapter=init_adapter,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            grad_accum=grad_accum,
            general_ratio=general_ratio,
            max_steps=max_steps,
            eval_steps=eval_steps,
            qlora=qlora,
            backend=backend,
            resume=resume,
            merge=merge,
            database_url=database_url,
            log_jsonl=log_jsonl,
            method=method,
            beta=beta,
        )
        result = run(settings)
    except (BackendError, ValueError, FileNotFoundError, FileExistsError, ReferenceModelError) as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from error
    metrics = result.metrics
    if result.meta["method"] != "sft":
        reference = result.meta["reference"]
        typer.echo(
            f"adapter {result.meta['name']}@{result.meta['version']} in {result.adapter_dir} "
            f"({result.meta['method']}, reference {reference['adapter'] or 'the base model'}): "
            f"eval loss {metrics['eval_loss']} (parent {metrics['eval_loss_parent']}), reward margin "
            f"{metrics['eval_reward_margin']}, {metrics['global_step']} steps"
        )
        return
    parent = result.meta["parent"]
    start = f", parent {parent['key']} {metrics['eval_loss_parent']}" if parent else ""
    typer.echo(
        f"adapter {result.meta['name']}@{result.meta['version']} in {result.adapter_dir}: "
        f"eval loss {metrics['eval_loss']} (base {metrics['eval_loss_base']}{start}), "
        f"{metrics['global_step']} steps, {metrics['tokens_per_second']} tokens/s"
    )
