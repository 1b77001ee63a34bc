"""Where the project's own data lies: `knowledge/data/`, package data of `knowledge`.

It is found beside this module, so a source checkout and an installed wheel (site-packages) read the
same files; nothing looks for a `data/` folder in the working directory or the repository.
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
"""`knowledge/data/`: the seed question bank, the fact registry, the general-Indonesian set, sample
conversations and corrections, the evaluation sets and gates."""

FACTS_FILE = DATA_DIR / "facts.yaml"
"""The fact registry: figures the answers must agree with."""
SEED_FILE = DATA_DIR / "seed" / "questions.jsonl"
"""The seed question bank: hard questions with golden answers and register variants."""
GENERAL_FILE = DATA_DIR / "general" / "general.jsonl"
"""General-Indonesian questions and answers (mixed into training; a fixed share held out for evaluation)."""
CORRECTIONS_DIR = DATA_DIR / "corrections"
"""Example correction files (`*.jsonl`) a dataset build reads by default."""
CONVERSATIONS_DIR = DATA_DIR / "conversations"
"""Sample chat-log exports (`*.jsonl`) a dataset build imports by default."""
UNKNOWN_FILE = DATA_DIR / "eval" / "unknown.jsonl"
"""Questions the model must decline or ask about (an evaluation set)."""
GATES_FILE = DATA_DIR / "eval" / "gates.yaml"
"""The evaluation's default quality gates."""
RETRAIN_GATES_FILE = DATA_DIR / "eval" / "retrain_gates.yaml"
"""A retrain's gates, applied over `GATES_FILE`."""
