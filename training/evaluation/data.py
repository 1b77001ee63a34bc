"""What an evaluation asks: the dataset's held-out split, the general-Indonesian set, the unknown set.

Every question becomes an `EvalItem` with its golden answer and the labels the breakdowns use
(category, register, seed, complexity). The general-Indonesian regression set is a fixed 20% of
`knowledge/data/general/general.jsonl` (chosen by a hash of each id, so it never moves when the file grows);
the unknown set (`knowledge/data/eval/unknown.jsonl`) holds questions the model must decline or ask about; the
corrections set (optional, `{"question", "answer"}` lines) holds the questions reviewers corrected, with
the corrected answers as golden answers.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowledge.paths import UNKNOWN_FILE
from knowledge.prompts import ZANTARA_SYSTEM_PROMPT
from knowledge.register import words
from training.dataset.files import DatasetInputError, read_items
from training.general_split import GENERAL_FILE, general_rows

SETS: tuple[str, ...] = ("test", "general", "unknown", "corrections")


class EvalInputError(Exception):
    """Bad input to an evaluation (dataset, adapter, endpoint, gates file): exit code 2."""


@dataclass(frozen=True)
class EvalItem:
    """One question to put to every variant, with its golden answer and labels."""

    id: str
    set: str
    messages: tuple[tuple[str, str], ...]
    reference: str
    category: str | None = None
    register: str | None = None
    seed_id: str | None = None
    source: str | None = None
    facts: tuple[str, ...] = ()
    expect: str = "answer"

    @property
    def question(self) -> str:
        """The user's question (the last message)."""
        return self.messages[-1][1]

    @property
    def complexity(self) -> str:
        """simple, complex or multi-part (the seed's A/B mix), told from the question's shape."""
        questions = self.question.count("?")
        if self.category == "multi_domain" or questions > 1:
            return "multi-part"
        return "complex" if len(words(self.question)) > 20 else "simple"

    def chat(self) -> list[dict[str, str]]:
        """The prompt as chat messages (system prompt and question)."""
        return [{"role": role, "content": content} for role, content in self.messages]


@dataclass(frozen=True)
class EvalData:
    """Everything one evaluation asks, by set, and the dataset version it came from."""

    dataset_version: str | None
    items: dict[str, list[EvalItem]]

    def all(self) -> list[EvalItem]:
        """Every item of every set, in set order."""
        return [item for name in SETS for item in self.items.get(name, [])]


def load_eval_data(
    dataset: Path,
    split: str = "test",
    *,
    limit: int | None = None,
    general_path: Path = GENERAL_FILE,
    unknown_path: Path = UNKNOWN_FILE,
    corrections: Path | None = None,
) -> EvalData:
    """Read the dataset's split, the project's two extra sets and the corrected questions when given;
    `limit` caps each set's questions except the corrections (what a retrain is gated on)."""
    manifest = _manifest(dataset)
    split_file = dataset / f"{split}.jsonl"
    if not split_file.is_file():
        raise EvalInputError(f"{dataset} has no {split!r} split ({split_file.name} is missing)")
    try:
        test = [_dataset_item(item.line, item.value, split_file) for item in read_items(split_file)]
        general = general_holdout(general_path)
        unknown = [_unknown_item(item.value) for item in read_items(unknown_path)]
    except DatasetInputError as exc:
        raise EvalInputError(str(exc)) from None
    if not test:
        raise EvalInputError(f"{split_file} holds no records")
    items = {"test": test, "general": general, "unknown": unknown}
    if limit is not None:
        items = {name: spread(rows, limit) for name, rows in items.items()}
    if corrections is not None:
        items["corrections"] = load_corrections(corrections)
    return EvalData(manifest.get("version"), items)


def load_corrections(path: Path) -> list[EvalItem]:
    """The corrected questions: a `.jsonl` of `{"question", "answer"}` (the reviewer's corrected answer)."""
    try:
        rows = read_items(path)
    except DatasetInputError as exc:
        raise EvalInputError(f"corrections file: {exc}") from None
    items = []
    for row in rows:
        value = row.value
        if not isinstance(value, dict) or not all(
            isinstance(value.get(key), str) and value[key].strip() for key in ("question", "answer")
        ):
            raise EvalInputError(f'{path}:{row.line}: expected {{"question": ..., "answer": ...}}')
        items.append(
            EvalItem(
                id=str(value.get("id") or f"correction-{row.line}"),
                set="corrections",
                messages=(("system", ZANTARA_SYSTEM_PROMPT), ("user", value["question"])),
                reference=value["answer"],
                category=value.get("category"),
                source="correction",
            )
        )
    if not items:
        raise EvalInputError(f"corrections file {path} holds no records")
    return items


def general_holdout(path: Path = GENERAL_FILE) -> list[EvalItem]:
    """The general-Indonesian regression set: the part the trainer never sees (`training.general_split`)."""
    return [
        EvalItem(
            id=str(row["id"]),
            set="general",
            messages=(("system", ZANTARA_SYSTEM_PROMPT), ("user", row["question"])),
            reference=row["answer"],
            register=row.get("register"),
        )
        for row in general_rows(path, held_out=True)
    ]


def spread(items: list[EvalItem], limit: int) -> list[EvalItem]:
    """At most `limit` items taken two at a time, round-robin over seed groups, so a small sample holds
    pairs of variations of several seeds (for consistency) across several categories."""
    groups: dict[str, list[EvalItem]] = defaultdict(list)
    for item in items:
        groups[item.seed_id or item.id].append(item)
    queues = list(groups.values())
    picked: list[EvalItem] = []
    depth = 0
    while len(picked) < limit and any(depth < len(queue) for queue in queues):
        picked += [item for queue in queues for item in queue[depth : depth + 2]][: limit - len(picked)]
        depth += 2
    return picked


def _manifest(dataset: Path) -> dict[str, Any]:
    path = dataset / "manifest.json"
    if not dataset.is_dir():
        raise EvalInputError(
            f"dataset folder {dataset} does not exist (build one with `zantara dataset build`)"
        )
    if not path.is_file():
        raise EvalInputError(
            f"{dataset} is not a dataset built by `zantara dataset build` (no manifest.json)"
        )
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EvalInputError(f"cannot read {path}: {exc}") from None
    return value if isinstance(value, dict) else {}


def _dataset_item(line: int, row: Any, path: Path) -> EvalItem:
    messages = row.get("messages") if isinstance(row, dict) else None
    if not isinstance(messages, list) or len(messages) < 2 or messages[-1].get("role") != "assistant":
        raise EvalInputError(f"{path}:{line}: expected a chat record ending with the assistant's answer")
    meta = row.get("meta") or {}
    return EvalItem(
        id=str(meta.get("id") or f"{path.stem}-{line}"),
        set="test",
        messages=tuple((m["role"], m["content"]) for m in messages[:-1]),
        reference=messages[-1]["content"],
        category=meta.get("category"),
        register=meta.get("register"),
        seed_id=meta.get("seed_id"),
        source=meta.get("source"),
        facts=tuple(meta.get("facts") or ()),
    )


def _unknown_item(row: Any) -> EvalItem:
    return EvalItem(
        id=str(row["id"]),
        set="unknown",
        messages=(("system", ZANTARA_SYSTEM_PROMPT), ("user", row["question"])),
        reference=row["answer"],
        register=row.get("register"),
        expect=row.get("expect", "decline"),
    )
