"""Readers for the project's own text: the general-Indonesian set and the seed question bank."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowledge.paths import GENERAL_FILE, SEED_FILE
from knowledge.prompts import ZANTARA_SYSTEM_PROMPT


@dataclass(frozen=True)
class SeedQuestion:
    """One seed-bank entry: the question, its register variants and the golden answer."""

    id: str
    category: str
    question: str
    golden_answer: str
    variants: tuple[str, ...]

    @property
    def questions(self) -> list[str]:
        """The question followed by all its variants (formal, business, casual)."""
        return [self.question, *self.variants]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file, with an error naming the file when it is missing."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the demo model and trainer read the project's data (knowledge/data/)"
        )
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_general(path: Path = GENERAL_FILE) -> list[tuple[str, str]]:
    """Everyday-Indonesian (question, answer) pairs."""
    return [(row["question"], row["answer"]) for row in read_jsonl(path)]


def load_seed(path: Path = SEED_FILE) -> list[SeedQuestion]:
    """The seed question bank with golden answers."""
    return [
        SeedQuestion(
            id=row["id"],
            category=row.get("category", ""),
            question=row["question"],
            golden_answer=row["golden_answer"],
            variants=tuple(v for register in row.get("variants", {}).values() for v in register),
        )
        for row in read_jsonl(path)
    ]


def chat(
    question: str, answer: str | None = None, *, system: str = ZANTARA_SYSTEM_PROMPT
) -> list[dict[str, str]]:
    """Chat messages for one exchange: system prompt, user question and (when given) the answer."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def file_hash(path: Path) -> str:
    """Short SHA-256 content hash of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
