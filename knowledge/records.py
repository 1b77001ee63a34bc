"""Record types of the dataset and their two file formats (Alpaca and chat messages).

A `Pair` is one question and its answer plus where it came from. It is written as a chat-messages
record `{"messages": [system, user, assistant], "meta": {...}}` and as an Alpaca record
`{"instruction", "input", "output", ...meta}`. `parse_record` reads either shape back (and the seed
bank's `question`/`golden_answer` shape), reporting schema problems instead of raising, so that the
checklist can list every bad record of a file at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from knowledge.prompts import ZANTARA_SYSTEM_PROMPT

CATEGORIES: tuple[str, ...] = ("immigration", "criminal_code", "company", "tax", "property", "multi_domain")
REGISTERS: tuple[str, ...] = ("formal", "business", "casual")
SOURCES: tuple[str, ...] = ("seed", "variation", "synthetic", "conversation", "correction", "extra")


@dataclass(frozen=True)
class Pair:
    """One training pair: a user question, the answer ZANTARA should give, and its provenance."""

    id: str
    question: str
    answer: str
    category: str
    register: str
    source: str
    validated: bool
    seed_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        """The metadata written beside the text: the fixed fields first, then the source's extras."""
        fixed = {
            "id": self.id,
            "seed_id": self.seed_id,
            "category": self.category,
            "register": self.register,
            "source": self.source,
            "validated": self.validated,
        }
        return {**fixed, **self.extra}

    def to_chat(self) -> dict[str, Any]:
        """The chat-messages record: system prompt, user question, assistant answer, and `meta`."""
        return {
            "messages": [
                {"role": "system", "content": ZANTARA_SYSTEM_PROMPT},
                {"role": "user", "content": self.question},
                {"role": "assistant", "content": self.answer},
            ],
            "meta": self.meta(),
        }

    def to_alpaca(self) -> dict[str, Any]:
        """The Alpaca record: the system prompt as `instruction`, then `input`, `output` and the meta."""
        return {
            "instruction": ZANTARA_SYSTEM_PROMPT,
            "input": self.question,
            "output": self.answer,
            **self.meta(),
        }


@dataclass(frozen=True)
class Example:
    """A record read back from a file: its line, its text fields and whatever metadata it carried."""

    line: int
    shape: str
    question: str
    answer: str
    system: str | None
    meta: dict[str, Any]


@dataclass(frozen=True)
class SchemaProblem:
    """Why a record could not be read as a training pair."""

    line: int
    message: str


def parse_record(line: int, value: Any) -> Example | SchemaProblem:
    """Read one Alpaca, chat-messages or question/answer record; a `SchemaProblem` says what is wrong."""
    if not isinstance(value, dict):
        return SchemaProblem(line, f"a record must be a JSON object, found {type(value).__name__}")
    if "messages" in value:
        parsed = _parse_chat(line, value)
    elif "instruction" in value or "output" in value:
        parsed = _parse_alpaca(line, value)
    elif "question" in value:
        parsed = _parse_question_answer(line, value)
    else:
        return SchemaProblem(
            line,
            "unknown record shape: expected 'messages', 'instruction'/'input'/'output', "
            "or 'question'/'answer'",
        )
    if isinstance(parsed, SchemaProblem):
        return parsed
    problem = _check_meta(line, parsed.meta)
    return problem or parsed


def _parse_chat(line: int, value: dict[str, Any]) -> Example | SchemaProblem:
    messages = value["messages"]
    if not isinstance(messages, list) or not messages:
        return SchemaProblem(line, "'messages' must be a non-empty list")
    roles: list[str] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return SchemaProblem(line, f"messages[{index}] must be an object with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if role not in ("system", "user", "assistant"):
            return SchemaProblem(
                line, f"messages[{index}].role must be system, user or assistant, found {role!r}"
            )
        if not isinstance(content, str):
            return SchemaProblem(line, f"messages[{index}].content must be a string, found {_kind(content)}")
        roles.append(role)
    body = roles[1:] if roles[0] == "system" else roles
    if body != ["user", "assistant"]:
        return SchemaProblem(line, f"expected [system], user, assistant messages, found {', '.join(roles)}")
    meta = value.get("meta", {})
    if not isinstance(meta, dict):
        return SchemaProblem(line, f"'meta' must be an object, found {_kind(meta)}")
    system = messages[0]["content"] if roles[0] == "system" else None
    return Example(line, "chat", messages[-2]["content"], messages[-1]["content"], system, meta)


def _parse_alpaca(line: int, value: dict[str, Any]) -> Example | SchemaProblem:
    for name in ("instruction", "input", "output"):
        if name not in value:
            return SchemaProblem(line, f"missing field '{name}'")
        if not isinstance(value[name], str):
            return SchemaProblem(line, f"field '{name}' must be a string, found {_kind(value[name])}")
    meta = {key: item for key, item in value.items() if key not in ("instruction", "input", "output")}
    return Example(line, "alpaca", value["input"], value["output"], value["instruction"], meta)


def _parse_question_answer(line: int, value: dict[str, Any]) -> Example | SchemaProblem:
    answer_field = "golden_answer" if "golden_answer" in value else "answer"
    for name in ("question", answer_field):
        if name not in value:
            return SchemaProblem(line, f"missing field '{name}'")
        if not isinstance(value[name], str):
            return SchemaProblem(line, f"field '{name}' must be a string, found {_kind(value[name])}")
    meta = {key: item for key, item in value.items() if key not in ("question", answer_field)}
    return Example(line, "qa", value["question"], value[answer_field], None, meta)


def _check_meta(line: int, meta: dict[str, Any]) -> SchemaProblem | None:
    allowed = {"category": CATEGORIES, "register": REGISTERS, "source": SOURCES}
    for name, choices in allowed.items():
        if name in meta and meta[name] is not None and meta[name] not in choices:
            return SchemaProblem(
                line, f"unknown {name} {meta[name]!r} (expected one of: {', '.join(choices)})"
            )
    if "validated" in meta and not isinstance(meta["validated"], bool):
        return SchemaProblem(line, f"'validated' must be true or false, found {_kind(meta['validated'])}")
    return None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
