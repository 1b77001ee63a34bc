"""Real conversations from a chat-log export, anonymised and filtered into training pairs.

Input: `.jsonl` (or a `.json` array) of `{"conversation_id", "ended": "resolved|abandoned|escalated",
"messages": [{"role": "user|agent", "text"}]}`, or a `.csv` with columns `conversation_id, ended,
role, text` (one message a row, in order). A conversation gives one pair: the first clear user
question and the agent's reply to it, kept only if the conversation was resolved, the reply is
complete and the topic is ours. Personal data is replaced by placeholders in both texts.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowledge.pii import find_names, scrub
from knowledge.records import Pair
from knowledge.register import detect_register, words
from knowledge.topics import classify
from training.dataset.files import DatasetInputError, LineItem, read_items

ENDINGS: tuple[str, ...] = ("resolved", "abandoned", "escalated")
ROLES: dict[str, str] = {"user": "user", "customer": "user", "agent": "agent", "assistant": "agent"}
MIN_QUESTION_WORDS = 4
MIN_ANSWER_WORDS = 15
_DANGLING = re.compile(
    r"(?:\b(?:dan|atau|yang|untuk|dengan|karena|seperti|yaitu|adalah)|[,:]|\.\.\.|…)\s*$", re.IGNORECASE
)


@dataclass(frozen=True)
class Rejection:
    """A conversation left out, and why."""

    conversation_id: str
    line: int
    reason: str


def load_conversations(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Read and validate an export; returns (line, conversation) with roles normalised to user/agent."""
    items = _csv_items(path) if path.suffix == ".csv" else read_items(path)
    conversations: list[tuple[int, dict[str, Any]]] = []
    for item in items:
        conversations.append((item.line, _validate(path, item.line, item.value)))
    return conversations


def import_conversations(path: Path) -> tuple[list[Pair], list[Rejection]]:
    """Pairs from the resolved, clear and complete conversations of `path`, PII scrubbed."""
    pairs: list[Pair] = []
    rejections: list[Rejection] = []
    for line, conversation in load_conversations(path):
        outcome = conversation_pair(conversation)
        if isinstance(outcome, str):
            rejections.append(Rejection(conversation["conversation_id"], line, outcome))
        else:
            pairs.append(outcome)
    return pairs, rejections


def conversation_pair(conversation: dict[str, Any]) -> Pair | str:
    """The pair one conversation gives, or the reason it is left out."""
    if conversation["ended"] != "resolved":
        return f"conversation {conversation['ended']}, not resolved"
    turns = _merge_turns(conversation["messages"])
    names = [name for _, text in turns for name in find_names(text)]
    for index, (role, text) in enumerate(turns):
        if role != "user" or not _clear(text):
            continue
        if index + 1 >= len(turns):
            return "the clear question was never answered"
        reply = turns[index + 1][1]
        if len(words(reply)) < MIN_ANSWER_WORDS or _DANGLING.search(reply):
            return "the answer is too short or breaks off"
        question, answer = scrub(text, names).strip(), scrub(reply, names).strip()
        category = classify(f"{question}\n{answer}")
        if category is None:
            return "off-topic (no immigration, company, tax, property or criminal-law term)"
        digest = hashlib.sha256(str(conversation["conversation_id"]).encode()).hexdigest()[:10]
        return Pair(
            id=f"conversation-{digest}",
            question=question,
            answer=answer,
            category=category,
            register=detect_register(question),
            source="conversation",
            validated=False,
            extra={"conversation_id": str(conversation["conversation_id"]), "pii_scrubbed": True},
        )
    return "no clear question (greetings or fragments only)"


def _clear(text: str) -> bool:
    return len(words(text)) >= MIN_QUESTION_WORDS and ("?" in text or classify(text) is not None)


def _merge_turns(messages: list[dict[str, str]]) -> list[tuple[str, str]]:
    turns: list[tuple[str, str]] = []
    for message in messages:
        role, text = ROLES[message["role"]], message["text"].strip()
        if turns and turns[-1][0] == role:
            turns[-1] = (role, f"{turns[-1][1]}\n{text}")
        elif text:
            turns.append((role, text))
    return turns


def _validate(path: Path, line: int, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DatasetInputError(path, line, "each conversation must be a JSON object")
    for name in ("conversation_id", "ended", "messages"):
        if name not in value:
            raise DatasetInputError(path, line, f"missing field '{name}'")
    if value["ended"] not in ENDINGS:
        raise DatasetInputError(
            path, line, f"unknown 'ended' value {value['ended']!r} (expected one of: {', '.join(ENDINGS)})"
        )
    if not isinstance(value["messages"], list):
        raise DatasetInputError(path, line, "'messages' must be a list")
    for index, message in enumerate(value["messages"]):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise DatasetInputError(path, line, f"messages[{index}].role must be user or agent")
        if not isinstance(message.get("text"), str):
            raise DatasetInputError(path, line, f"messages[{index}].text must be a string")
    return value


def _csv_items(path: Path) -> list[LineItem]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"conversation_id", "ended", "role", "text"} - set(reader.fieldnames or [])
            if missing:
                raise DatasetInputError(path, 1, f"CSV header lacks column(s): {', '.join(sorted(missing))}")
            grouped: dict[str, LineItem] = {}
            for row in reader:
                key = row["conversation_id"]
                if key not in grouped:
                    grouped[key] = LineItem(
                        reader.line_num, {"conversation_id": key, "ended": row["ended"], "messages": []}
                    )
                grouped[key].value["messages"].append({"role": row["role"], "text": row["text"] or ""})
            return list(grouped.values())
    except FileNotFoundError:
        raise DatasetInputError(path, None, "file not found") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DatasetInputError(path, None, f"malformed CSV ({exc})") from None
