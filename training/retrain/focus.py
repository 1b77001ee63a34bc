"""The training view of a retrain that continues its parent: the new corrections and a replay sample.

Continuing an adapter on its whole dataset again costs a full training run and drowns the handful of
new corrections among a thousand pairs the parent already knows. The standard continual fine-tuning
recipe instead trains on what is new, repeated, plus a small replay of what is known (against
forgetting):

    train.jsonl       the new corrections, each `repeat` times, and `replay` pairs sampled from the
                      dataset version's train split (seeded, so a resumed run trains on the same view)
    validation.jsonl  a seeded sample of the dataset version's validation split
    manifest.json     the dataset's manifest (same version: the registry records the full dataset)
                      with a `training_view` entry saying what the view holds

Example:

    view = write_focus_view(dataset_dir, corrections_file, run_dir / "focus", repeat=4, replay=150)
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

from training.demo.data import chat, read_jsonl

FOCUS_SEED = 42
SPLITS = ("train", "validation", "test")


def write_focus_view(
    dataset: Path,
    corrections: Path | None,
    out: Path,
    *,
    repeat: int,
    replay: int,
    validation: int,
    seed: int = FOCUS_SEED,
) -> dict[str, Any]:
    """Write the focus view of `dataset` (see the module) into `out`, replacing what was there; returns
    its `training_view` note. `corrections` is the run's `{"question", "answer"}` file (None: no new
    corrections, the view is the replay sample alone)."""
    asked = read_jsonl(corrections) if corrections is not None else []
    rows = correction_rows(dataset, asked)
    corrected = {user_message(row) for row in rows}
    known = [row for row in read_jsonl(dataset / "train.jsonl") if user_message(row) not in corrected]
    rng = random.Random(seed)
    replayed = rng.sample(known, min(replay, len(known)))
    held = list(read_jsonl(dataset / "validation.jsonl"))
    checked = random.Random(seed + 1).sample(held, min(validation, len(held)))
    train = [row for row in rows for _ in range(repeat)] + replayed
    train = random.Random(seed + 2).sample(train, len(train))
    note = {
        "kind": "focus",
        "corrections": len(rows),
        "corrections_repeat": repeat,
        "replay_pairs": len(replayed),
        "train_rows": len(train),
        "validation_pairs": len(checked),
        "seed": seed,
        "dataset": str(dataset),
        "note": (
            f"{len(rows)} new correction(s) x{repeat} and {len(replayed)} pairs replayed from the train "
            f"split; validated on {len(checked)} pairs of the validation split"
        ),
    }
    manifest = json.loads((dataset / "manifest.json").read_text(encoding="utf-8"))
    building = out.with_name(f".{out.name}.building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    _write_jsonl(building / "train.jsonl", train)
    _write_jsonl(building / "validation.jsonl", checked)
    (building / "manifest.json").write_text(
        json.dumps({**manifest, "training_view": note}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    shutil.rmtree(out, ignore_errors=True)
    os.replace(building, out)
    return note


def correction_rows(dataset: Path, asked: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The corrections as the dataset wrote them (its chat rows, looked up in every split by question),
    or as a plain chat row when the build left one out (say, no category could be told)."""
    by_question: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        path = dataset / f"{split}.jsonl"
        for row in read_jsonl(path) if path.is_file() else []:
            by_question.setdefault(user_message(row), row)
    rows = []
    for item in asked:
        question, answer = str(item["question"]).strip(), str(item["answer"]).strip()
        found = by_question.get(question)
        if found is None or found["messages"][-1]["content"] != answer:
            found = {
                "messages": chat(question, answer),
                "meta": {"id": f"correction-{item.get('id')}", "source": "correction", "validated": True},
            }
        rows.append(found)
    return rows


def user_message(row: dict[str, Any]) -> str:
    """The question of a chat row (its last user message)."""
    return next(m["content"] for m in reversed(row["messages"]) if m["role"] == "user").strip()


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
