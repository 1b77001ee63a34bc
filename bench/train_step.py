"""Seconds per optimiser step of `zantara train --method sft|kto|dpo` on the demo model, and each
method's peak memory, in one run.

The data are the loop's own signals, planted as the retrain tests plant them
(`tests/training/test_preference_training.py: plant_signals`: per topic one answer rated 5 and one rated
1, two corrected answers) in a throw-away SQLite database, then built as `zantara dataset preferences
build --kind dpo` and `--kind kto` do (`build_preferences`). The SFT dataset is the DPO build's train
split with its chosen answers as the assistant turn (no general chats mixed in): the three methods
learn from the same questions and answers.

Each method runs in its own process through the real entry point (`training.train.trainer.train`, what
`zantara train` calls; `train_preferences` for KTO/DPO), continuing the parent demo adapter
(`--init-adapter`: the reference model of KTO/DPO), with the same per-device batch size, max length,
gradient accumulation 1 (one batch per optimiser step) and torch threads. A `TrainerCallback` times
each step from `on_step_begin` to `on_step_end`: the forward passes (the reference's included), the
backward pass and the optimiser, not the collation of the batch; no evaluation, checkpoint or log
falls inside the timed steps. The first `--warmup` steps are dropped. Peak memory is the child
process's peak resident set (`os.wait4`'s `ru_maxrss`): loading, data preparation, training and the
evaluations and save after it.

    python bench/train_step.py [--steps 30] [--warmup 3] [--batch-size 4] [--max-length 512] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from overload import quantile
from server import REPO
from transformers import TrainerCallback

from tests.conftest import _demo_fingerprint

METHODS = ("sft", "kto", "dpo")


class StepTimer(TrainerCallback):
    """Seconds of every optimiser step, from `on_step_begin` to `on_step_end`."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._began = 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._began = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.seconds.append(time.perf_counter() - self._began)


def demo_models() -> tuple[Path, Path]:
    """(base model, parent adapter) of the demo, built once and cached as the tests' fixtures do."""
    from service.settings import Settings
    from training.demo.model import DEMO_ADAPTER, ensure_demo_adapter, ensure_demo_base

    root = REPO / ".cache" / "demo-models" / _demo_fingerprint()
    settings = Settings(models_dir=root / "models", adapters_dir=root / "adapters")
    base = ensure_demo_base(settings.demo_base_path, progress=False)
    name, version = DEMO_ADAPTER
    return base, ensure_demo_adapter(base, root / "adapters" / name / version, progress=False)


def build_datasets(work: Path) -> dict[str, Path]:
    """The loop's signals planted in SQLite, built as KTO and DPO datasets, and the SFT dataset made of
    the DPO train split's prompts and chosen answers."""
    from database.migrate import upgrade
    from feedback.preferences import read_signals
    from tests.training.retrain_helpers import sessions_for
    from tests.training.test_preference_training import plant_signals
    from training.dataset.preferences_build import PreferenceBuildOptions, build_preferences
    from training.dataset.preferences_filters import EvalQuestions

    url = f"sqlite:///{work / 'zantara.db'}"
    upgrade(url)
    plant_signals(url)
    signals = read_signals(sessions_for(url))
    nothing = EvalQuestions(questions=[], dataset=work, dataset_version=None, counts={})
    folders = {}
    for kind in ("kto", "dpo"):
        options = PreferenceBuildOptions(kind=kind, evaluation=nothing)
        folders[kind] = build_preferences(signals, options, work / f"pref-{kind}").out
    folders["sft"] = sft_from_dpo(folders["dpo"], work / "sft")
    return folders


def sft_from_dpo(dpo: Path, out: Path) -> Path:
    """A `zantara dataset build`-shaped folder: each DPO row's prompt and chosen answer as one chat."""
    out.mkdir()
    splits = {}
    for split, source in (("train", "train"), ("validation", "test")):
        rows = [json.loads(line) for line in (dpo / f"{source}.jsonl").read_text().splitlines()]
        splits[split] = [{"messages": row["prompt"] + row["chosen"]} for row in rows]
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in splits[split])
        (out / f"{split}.jsonl").write_text(text, encoding="utf-8")
    counts = {split: len(rows) for split, rows in splits.items()}
    (out / "manifest.json").write_text(json.dumps({"version": "bench-sft", "counts": counts}))
    return out


def child(args: argparse.Namespace) -> None:
    """One training run of `args.child` through `train()`; its step times go to `args.result`."""
    import torch

    from training.train.config import load_config
    from training.train.trainer import train

    torch.set_num_threads(args.threads)
    steps = args.warmup + args.steps
    config = load_config(
        dataset=args.dataset,
        base_model=str(args.base),
        method=args.child,
        init_adapter=args.adapter,
        output_dir=args.out,
        general_ratio=0.0,
        batch_size=args.batch_size,
        grad_accum=1,
        max_steps=steps,
        max_length=args.max_length,
        eval_steps=10 * steps,  # no evaluation, checkpoint or log between the timed steps
        early_stopping_patience=0,
        backend="peft",
    )
    timer = StepTimer()
    result = train(config, callbacks=[timer])
    record = {
        "seconds": timer.seconds,
        "global_step": result.metrics["global_step"],
        "train_rows": result.metrics["train_pairs"],
        "torch_threads": torch.get_num_threads(),
        "reference": (result.meta.get("reference") or {}).get("adapter"),
    }
    Path(args.result).write_text(json.dumps(record), encoding="utf-8")


def run_method(method: str, dataset: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Train `method` in a child process; its step times and peak RSS (MiB)."""
    base, adapter = args.models
    result = work / f"{method}.json"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child", method,
        "--dataset", str(dataset),
        "--base", str(base),
        "--adapter", str(adapter),
        "--out", str(work / "adapters" / method),
        "--result", str(result),
        *("--steps", str(args.steps), "--warmup", str(args.warmup)),
        *("--batch-size", str(args.batch_size), "--max-length", str(args.max_length)),
        *("--threads", str(args.threads)),
    ]  # fmt: skip
    threads = str(args.threads)
    env = os.environ | {
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "TOKENIZERS_PARALLELISM": "false",
    }
    log = work / f"{method}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-4000:]
        raise SystemExit(f"{method} failed (exit {process.returncode}):\n{tail}")
    record: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    record["peak_rss_mib"] = usage.ru_maxrss / 1024  # KiB on Linux
    return record


def main() -> None:
    """Build the datasets, train each method in its own process, print a Markdown table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=30, help="optimiser steps timed per method")
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of the timing")
    parser.add_argument("--batch-size", type=int, default=4, help="per-device batch (rows, pairs for DPO)")
    parser.add_argument("--max-length", type=int, default=512, help="longest tokenized chat")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of every run")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated, SFT first")
    for name in ("--child", "--dataset", "--base", "--adapter", "--out", "--result"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    load = os.getloadavg()[0]
    args.models = demo_models()
    methods = [method.strip() for method in args.methods.split(",") if method.strip()]
    with tempfile.TemporaryDirectory(prefix="train-step-") as tmp:
        work = Path(tmp)
        datasets = build_datasets(work)
        records = {method: run_method(method, datasets[method], work, args) for method in methods}
    import torch

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, torch {torch.__version__}; {args.threads} torch threads; batch "
        f"{args.batch_size}, max length {args.max_length}, gradient accumulation 1; {args.warmup} warm-up "
        f"steps left out; load average {load:.1f} before"
    )
    print("| method | batch | steps timed | median s/step | p90 s/step | to SFT | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    sft = quantile(records["sft"]["seconds"][args.warmup :], 0.5) if "sft" in records else None
    for method, record in records.items():
        timed = record["seconds"][args.warmup :]
        median, p90 = quantile(timed, 0.5), quantile(timed, 0.9)
        ratio = f"{median / sft:.2f}" if sft else ""
        print(
            f"| {method.upper()} | {args.batch_size} | {len(timed)} | {median:.3f} | {p90:.3f} | {ratio} | "
            f"{record['peak_rss_mib']:.0f} |"
        )
    for method, record in records.items():
        reference = f", reference {record['reference']}" if record["reference"] else ""
        print(
            f"- {method.upper()}: {record['global_step']} steps on {record['train_rows']} train rows, "
            f"{record['torch_threads']} torch threads{reference}"
        )


if __name__ == "__main__":
    main()
