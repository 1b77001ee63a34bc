"""Reading record files with line numbers, parsing record shapes, and atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from knowledge.prompts import ZANTARA_SYSTEM_PROMPT
from knowledge.records import Example, Pair, SchemaProblem, parse_record
from training.dataset.files import DatasetInputError, atomic_dir, read_items, write_jsonl


def test_json_array_items_keep_the_line_where_each_record_starts(tmp_path: Path) -> None:
    path = tmp_path / "records.json"
    path.write_text('[\n  {"a": 1},\n\n  {\n    "b": 2\n  },\n  {"c": 3}\n]\n', encoding="utf-8")
    assert [(item.line, item.value) for item in read_items(path)] == [
        (2, {"a": 1}),
        (4, {"b": 2}),
        (7, {"c": 3}),
    ]


def test_jsonl_skips_blank_lines_and_names_the_malformed_one(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text('{"a": 1}\n\n{"b": 2\n', encoding="utf-8")
    with pytest.raises(DatasetInputError) as error:
        read_items(path)
    assert error.value.line == 3
    assert str(error.value).startswith(f"{path}:3: malformed JSON")


@pytest.mark.parametrize(
    ("name", "text", "line", "message"),
    [
        ("bad.json", '[\n{"a": 1},\n{"b": }\n]', 3, "malformed JSON"),
        ("object.json", '{"a": 1}', 1, "must hold one array"),
        ("trailing.json", '[{"a": 1}] x', 1, "unexpected text"),
        ("records.csv", "a,b", None, "unsupported file type"),
        ("missing.jsonl", None, None, "file not found"),
    ],
)
def test_unreadable_files_say_where_and_why(
    tmp_path: Path, name: str, text: str | None, line: int | None, message: str
) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(DatasetInputError) as error:
        read_items(path)
    assert error.value.line == line
    assert message in error.value.message


def test_records_of_every_shape_parse_to_the_same_example() -> None:
    pair = Pair(
        "x-1", "Apa itu KITAS?", "KITAS adalah izin tinggal terbatas.", "immigration", "formal", "seed", True
    )
    chat = parse_record(1, pair.to_chat())
    alpaca = parse_record(2, pair.to_alpaca())
    question_answer = parse_record(3, {"question": pair.question, "golden_answer": pair.answer})
    for parsed in (chat, alpaca, question_answer):
        assert isinstance(parsed, Example)
        assert (parsed.question, parsed.answer) == (pair.question, pair.answer)
    assert isinstance(chat, Example) and chat.system == ZANTARA_SYSTEM_PROMPT
    assert (
        chat.meta["category"] == "immigration" and isinstance(alpaca, Example) and alpaca.meta["id"] == "x-1"
    )


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ([1, 2], "must be a JSON object"),
        ({"foo": "bar"}, "unknown record shape"),
        ({"instruction": "s", "input": "q"}, "missing field 'output'"),
        ({"instruction": "s", "input": 5, "output": "a"}, "'input' must be a string, found int"),
        ({"messages": [{"role": "user", "content": "q"}]}, "expected [system], user, assistant"),
        ({"messages": [{"role": "robot", "content": "q"}]}, "role must be system, user or assistant"),
        ({"question": "q", "answer": "a", "category": "visas"}, "unknown category 'visas'"),
        ({"question": "q", "answer": "a", "register": "slang"}, "unknown register 'slang'"),
        ({"question": "q", "answer": "a", "validated": "yes"}, "'validated' must be true or false"),
    ],
)
def test_schema_problems_are_reported_not_raised(record: object, message: str) -> None:
    parsed = parse_record(7, record)
    assert isinstance(parsed, SchemaProblem)
    assert parsed.line == 7 and message in parsed.message


def test_atomic_dir_leaves_nothing_behind_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_dir(target) as folder:
        write_jsonl(folder / "train.jsonl", [{"a": 1}])
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_only_when_asked(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_dir(target) as folder:
        write_jsonl(folder / "a.jsonl", [{"v": 1}])
    with pytest.raises(FileExistsError), atomic_dir(target):
        pass
    with atomic_dir(target, replace=True) as folder:
        write_jsonl(folder / "a.jsonl", [{"v": 2}])
    assert json.loads((target / "a.jsonl").read_text()) == {"v": 2}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]
