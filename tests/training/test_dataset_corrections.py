"""Error-correction records from a file and from the feedback database become training pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from database.engine import create_db_engine, make_session_factory
from database.migrate import upgrade
from database.models import Correction
from knowledge.errors import DatasetInputError
from training.dataset.cli import app
from training.dataset.corrections import load_corrections_db, load_corrections_file

RECORD = {
    "query": "Berapa modal PT PMA?",
    "model_answer_wrong": "Modal minimal 50 juta rupiah.",
    "correct_answer": (
        "Untuk PT PMA, rencana investasi harus lebih dari Rp10 miliar per KBLI per lokasi, dan modal disetor "
        "menurut aturan 2021 minimal Rp10 miliar."
    ),
    "why_wrong": "Confused PT biasa with PT PMA",
    "lesson": "Always clarify PT vs PT PMA distinction",
    "category": "company",
}


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'zantara.db'}"
    upgrade(url)
    return url


def test_file_records_become_query_to_correct_answer_pairs(tmp_path: Path) -> None:
    path = tmp_path / "corrections.jsonl"
    path.write_text(
        json.dumps(RECORD) + "\n" + json.dumps({**RECORD, "category": None, "query": "PPN berapa?"}) + "\n"
    )
    first, second = (record.to_pair() for record in load_corrections_file(path))
    assert first is not None and second is not None
    assert (first.question, first.answer, first.source, first.category) == (
        RECORD["query"],
        RECORD["correct_answer"],
        "correction",
        "company",
    )
    assert first.extra["why_wrong"] == RECORD["why_wrong"] and first.extra["lesson"] == RECORD["lesson"]
    assert second.category == "tax"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"correct_answer": None}, "'correct_answer' must be a non-empty string"),
        ({"category": "visas"}, "unknown category 'visas'"),
        ({"lesson": 3}, "'lesson' must be a string"),
    ],
)
def test_bad_correction_records_name_the_line(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    path = tmp_path / "corrections.jsonl"
    path.write_text(json.dumps(RECORD) + "\n" + json.dumps({**RECORD, **change}) + "\n")
    with pytest.raises(DatasetInputError) as error:
        load_corrections_file(path)
    assert error.value.line == 2 and message in error.value.message


def test_database_corrections_are_read(sqlite_url: str) -> None:
    engine = create_db_engine(sqlite_url)
    with make_session_factory(engine)() as session, session.begin():
        session.add(Correction(**RECORD, reviewer="ana"))
    engine.dispose()
    (record,) = load_corrections_db(sqlite_url)
    assert record.query == RECORD["query"] and record.origin.startswith("database:")


def test_cli_import_stores_new_corrections_once(tmp_path: Path, sqlite_url: str) -> None:
    path = tmp_path / "corrections.jsonl"
    path.write_text(json.dumps(RECORD) + "\n")
    runner = CliRunner()
    first = runner.invoke(
        app, ["import-corrections", str(path), "--database-url", sqlite_url, "--reviewer", "qa"]
    )
    again = runner.invoke(app, ["import-corrections", str(path), "--database-url", sqlite_url])
    assert first.exit_code == again.exit_code == 0
    assert "1 correction(s) stored" in first.stdout and "0 correction(s) stored, 1 already" in again.stdout
    assert [r.correct_answer for r in load_corrections_db(sqlite_url)] == [RECORD["correct_answer"]]


def test_database_corrections_are_exported_without_personal_data(sqlite_url: str) -> None:
    engine = create_db_engine(sqlite_url)
    with make_session_factory(engine)() as session, session.begin():
        session.add(
            Correction(
                query="halo, nama saya budi santoso, NIK 3171012345678901. Berapa modal PT PMA?",
                model_answer_wrong="Pak Budi, modal minimal 50 juta rupiah. Hubungi 0812-3456-7890.",
                correct_answer=RECORD["correct_answer"] + " Silakan kirim dokumen ke budi@example.co.id.",
                why_wrong="Budi Santoso diberi angka lama",
                lesson=RECORD["lesson"],
                category="company",
                reviewer="ana",
            )
        )
    engine.dispose()
    (record,) = load_corrections_db(sqlite_url)
    pair = record.to_pair()
    assert pair is not None
    exported = json.dumps([pair.to_chat(), pair.to_alpaca(), pair.extra], ensure_ascii=False)
    for personal in ("budi", "Budi", "3171012345678901", "0812-3456-7890", "budi@example.co.id"):
        assert personal not in exported
    assert record.query == "halo, nama saya [NAMA], NIK [NIK]. Berapa modal PT PMA?"
    assert record.model_answer_wrong == "Pak [NAMA], modal minimal 50 juta rupiah. Hubungi [TELEPON]."
    assert record.why_wrong == "[NAMA] diberi angka lama" and record.lesson == RECORD["lesson"]
    assert record.correct_answer.startswith(RECORD["correct_answer"])  # the answer itself is kept
