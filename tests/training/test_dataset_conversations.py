"""Real conversations: anonymised, filtered to clear, complete, resolved exchanges."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from knowledge.errors import DatasetInputError
from knowledge.paths import CONVERSATIONS_DIR
from knowledge.pii import find_pii
from training.dataset.cli import app
from training.dataset.conversations import import_conversations

ANSWER = (
    "KITAS investor diajukan lewat e-Visa Imigrasi dengan PT PMA Bapak sebagai penjamin. Dokumen utamanya "
    "paspor, akta pendirian, SK Kemenkumham, NIB, serta bukti kepemilikan saham."
)
CONVERSATIONS: list[dict[str, Any]] = [
    {
        "conversation_id": "ok",
        "ended": "resolved",
        "messages": [
            {"role": "user", "text": "Halo"},
            {"role": "agent", "text": "Halo, ada yang bisa dibantu?"},
            {
                "role": "user",
                "text": "Saya Daniel Hoffmann, NIK 3171012345678901. Syarat KITAS investor apa saja?",
            },
            {"role": "agent", "text": f"Baik Pak Daniel. {ANSWER}"},
            {"role": "user", "text": "Terima kasih!"},
        ],
    },
    {
        "conversation_id": "left",
        "ended": "abandoned",
        "messages": [
            {"role": "user", "text": "Syarat KITAS investor apa saja ya?"},
            {"role": "agent", "text": ANSWER},
        ],
    },
    {
        "conversation_id": "short",
        "ended": "resolved",
        "messages": [
            {"role": "user", "text": "Berapa lama proses KITAS investor?"},
            {"role": "agent", "text": "Sekitar dua minggu."},
        ],
    },
    {
        "conversation_id": "off-topic",
        "ended": "resolved",
        "messages": [
            {"role": "user", "text": "Resep nasi goreng yang enak gimana ya?"},
            {
                "role": "agent",
                "text": "Pakai nasi dingin, bumbu ditumis dulu sampai harum, lalu masak dengan api besar "
                "sambil terus diaduk supaya nasinya tidak lembek dan bumbunya merata.",
            },
        ],
    },
    {
        "conversation_id": "greeting",
        "ended": "resolved",
        "messages": [{"role": "user", "text": "halo"}, {"role": "agent", "text": "Halo!"}],
    },
]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_only_resolved_clear_complete_on_topic_exchanges_become_pairs(tmp_path: Path) -> None:
    pairs, rejected = import_conversations(write_jsonl(tmp_path / "export.jsonl", CONVERSATIONS))
    (pair,) = pairs
    assert pair.source == "conversation" and not pair.validated and pair.category == "immigration"
    assert pair.question == "Saya [NAMA], NIK [NIK]. Syarat KITAS investor apa saja?"
    assert pair.answer.startswith("Baik Pak [NAMA]. KITAS investor")
    reasons = {item.conversation_id: (item.line, item.reason) for item in rejected}
    assert reasons["left"] == (2, "conversation abandoned, not resolved")
    assert "too short" in reasons["short"][1]
    assert "off-topic" in reasons["off-topic"][1]
    assert "no clear question" in reasons["greeting"][1]


def test_csv_exports_give_the_same_pairs(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["conversation_id", "ended", "role", "text"])
        for conversation in CONVERSATIONS:
            for message in conversation["messages"]:
                writer.writerow(
                    [conversation["conversation_id"], conversation["ended"], message["role"], message["text"]]
                )
    from_csv, _ = import_conversations(path)
    from_jsonl, _ = import_conversations(write_jsonl(tmp_path / "export.jsonl", CONVERSATIONS))
    assert [(p.question, p.answer) for p in from_csv] == [(p.question, p.answer) for p in from_jsonl]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"conversation_id": "x", "messages": []}, "missing field 'ended'"),
        ({"conversation_id": "x", "ended": "done", "messages": []}, "unknown 'ended' value 'done'"),
        ({"conversation_id": "x", "ended": "resolved", "messages": [{"role": "bot", "text": "hi"}]}, "role"),
    ],
)
def test_bad_exports_name_the_line(tmp_path: Path, row: dict[str, Any], message: str) -> None:
    path = write_jsonl(tmp_path / "export.jsonl", [CONVERSATIONS[1], row])
    with pytest.raises(DatasetInputError) as error:
        import_conversations(path)
    assert error.value.line == 2 and message in error.value.message


def test_sample_export_imports_without_personal_data() -> None:
    pairs, rejected = import_conversations(CONVERSATIONS_DIR / "sample_export.jsonl")
    assert pairs and rejected
    for pair in pairs:
        for text in (pair.question, pair.answer):
            assert all(span.text.startswith("[") for span in find_pii(text)), text


def test_cli_import_writes_chat_records(tmp_path: Path) -> None:
    out = tmp_path / "conversations.jsonl"
    result = CliRunner().invoke(
        app,
        ["import-conversations", str(write_jsonl(tmp_path / "e.jsonl", CONVERSATIONS)), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [message["role"] for message in record["messages"]] == ["system", "user", "assistant"]
    assert record["meta"]["source"] == "conversation"
    assert CliRunner().invoke(app, ["check", str(out)]).exit_code == 0
