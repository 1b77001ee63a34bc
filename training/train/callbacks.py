"""Trainer callbacks: a rich progress bar and JSON-lines metrics for dashboards."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from training.progress import training_progress

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID
    from transformers import TrainerControl, TrainerState, TrainingArguments


class RichProgressCallback(TrainerCallback):
    """Progress bar with loss, validation loss, steps/second and ETA."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._start = (0.0, 0)
        self._loss: float | None = None
        self._eval_loss: float | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero:
            return
        self._bar = training_progress(enabled=self.enabled)
        self._bar.start()
        self._task = self._bar.add_task("train", total=state.max_steps, completed=state.global_step, stats="")
        self._start = (time.perf_counter(), state.global_step)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        logs = logs or {}
        self._loss = logs.get("loss", self._loss)
        self._eval_loss = logs.get("eval_loss", self._eval_loss)
        self._refresh(state)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._refresh(state)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the bar (also when training ends with an exception)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _refresh(self, state: TrainerState) -> None:
        if self._bar is None or self._task is None:
            return
        started, first_step = self._start
        rate = (state.global_step - first_step) / max(time.perf_counter() - started, 1e-9)
        parts = [f"loss {self._loss:.3f}" if self._loss is not None else "loss -"]
        parts.append(f"val {self._eval_loss:.3f}" if self._eval_loss is not None else "val -")
        parts.append(f"{rate:.2f} steps/s")
        self._bar.update(self._task, completed=state.global_step, stats=" | ".join(parts))


class JsonlLogCallback(TrainerCallback):
    """Append every log event (loss, eval_loss, learning rate, ...) to a JSON-lines file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._started = time.perf_counter()

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        elapsed = time.perf_counter() - self._started
        record = {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "step": state.global_step,
            "max_steps": state.max_steps,
            "epoch": state.epoch,
            "steps_per_second": round(state.global_step / elapsed, 4) if elapsed > 0 else None,
            **logs,
        }
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
