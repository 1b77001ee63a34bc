"""Which general-Indonesian chats are held out for evaluation: one rule for the trainer and `zantara eval`.

The held-out part is the regression set of the evaluation, so the trainer must never learn from it;
the split hashes each record's id, so it is stable whatever order or subset of the file is read.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from training.demo.data import GENERAL_FILE, read_jsonl

GENERAL_HOLDOUT_SHARE = 0.2
"""Share of the general-Indonesian chats kept out of training for the regression set."""


def is_held_out(record_id: str, share: float = GENERAL_HOLDOUT_SHARE) -> bool:
    """True when the record with this id belongs to the held-out (evaluation) part."""
    digest = int(hashlib.sha256(record_id.encode()).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < share


def general_rows(path: Path = GENERAL_FILE, *, held_out: bool) -> list[dict[str, Any]]:
    """The records of the general-Indonesian file on one side of the split."""
    return [row for row in read_jsonl(path) if is_held_out(str(row["id"])) == held_out]
