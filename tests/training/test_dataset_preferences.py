"""KTO and DPO datasets from the loop, on SQLite and PostgreSQL: ratings, corrections and A/B verdicts
planted through the code the service uses, built by `zantara dataset preferences build`, and the rows,
labels, provenance, filters (3 stars, ties, duplicates, leakage, per-user cap, personal data), KTO
weights and exit codes checked."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from database.models import utcnow
from feedback.ab import NewPair, next_pair, queue_pairs, submit_judgment
from feedback.records import InteractionRecord
from feedback.review_queue import correct
from feedback.reviewers import add_reviewer
from feedback.store import save_interactions
from knowledge.prompts import ZANTARA_SYSTEM_PROMPT
from tests.database import interaction_record, rate_interaction
from training.dataset.preferences_filters import (
    KTO_BALANCE,
    check_preference_file,
    eval_questions,
    kto_weights,
    weighted_ratio,
)
from zantara.cli import app

NOW = utcnow()
LEAKED = "Berapa lama proses pendirian PT PMA di Bali dari awal sampai izin usaha terbit?"
"""A question of the evaluator's test split: a rating of an answer to it must stay out."""
NIK = "3171234567890123"
Q1 = "Apa saja syarat membuka rekening bank untuk perusahaan yang baru berdiri?"
Q3 = "Bagaimana cara melaporkan SPT tahunan badan untuk perusahaan baru?"
QA1 = "Apakah perusahaan startup wajib memiliki NIB sebelum mulai beroperasi?"
QA2 = "Apa perbedaan utama antara CV dan PT bagi pengusaha kecil?"


def answer(topic: str, tone: str = "baik") -> str:
    """A complete answer of more than 25 words (the checklist's minimum), saying what it is about."""
    return (
        f"Untuk {topic}, Anda perlu menyiapkan dokumen perusahaan yang lengkap, memeriksa ketentuan yang "
        f"berlaku di instansi terkait, lalu mengajukan permohonan secara resmi. Jawaban ini {tone} "
        "dan sebaiknya dikonsultasikan juga dengan konsultan yang berpengalaman agar prosesnya lancar."
    )


GOOD1, BAD1 = answer("rekening bank perusahaan"), answer("rekening bank", "kurang tepat")
WRONG3, CORRECT3 = answer("SPT badan", "salah"), answer("SPT tahunan badan", "benar")
TUNED_A1, BASE_A1 = answer("NIB startup", "dari adapter"), answer("NIB", "dari model dasar")


def interaction(
    key: str, user: str | None, question: str, text: str, minutes_ago: int, *, tuned: bool = True
) -> InteractionRecord:
    """An answered interaction (`minutes_ago` sets the order), by `zantara@v3` unless not `tuned`."""
    return replace(
        interaction_record(key, "tuned" if tuned else "base"),
        user_hash=user,
        adapter_name="zantara" if tuned else None,
        adapter_version="v3" if tuned else None,
        messages=[{"role": "user", "content": question}],
        answer=text,
        prompt_tokens=10,
        completion_tokens=40,
        latency_s=0.1,
        ttft_s=None,
        params={},
        target="canary" if tuned else "base",
        created_at=NOW - timedelta(minutes=minutes_ago),
    )


def plant(sessions: sessionmaker[Session]) -> None:
    """Ratings (5, 1, 3, 2 corrected, personal data, a leaked question, a duplicate, one heavy user),
    one correction, an A/B pair two reviewers gave to the adapter and one judged a tie."""
    conversation = [
        {"role": "user", "content": "Halo, saya baru mendirikan PT."},
        {"role": "assistant", "content": "Selamat! Ada yang bisa saya bantu?"},
        {"role": "user", "content": Q1},
    ]
    good = interaction("i-good", "u1", Q1, GOOD1, 100)
    bad = interaction("i-bad", "u2", Q1, BAD1, 99, tuned=False)
    records = [
        InteractionRecord(**{**good.__dict__, "messages": conversation}),
        InteractionRecord(**{**bad.__dict__, "messages": conversation}),
        interaction("i-mid", "u3", "Bagaimana cara mengurus izin lokasi usaha?", answer("izin lokasi"), 98),
        interaction("i-corr", "u4", Q3, WRONG3, 97),
        interaction(
            "i-pii",
            "u5",
            f"Nama saya Budi Santoso, NIK {NIK}. Bagaimana cara mendaftar NPWP pribadi?",
            answer("NPWP pribadi Pak Budi Santoso"),
            96,
        ),
        interaction("i-leak", "u6", LEAKED, answer("pendirian PT PMA"), 95),
        interaction("i-dup1", "u7", "Apa itu KBLI dan mengapa penting?", answer("KBLI"), 94),
        interaction("i-dup2", "u8", "Apa itu KBLI dan mengapa penting?", answer("KBLI"), 93),
        interaction("i-unrated", "u9", "Apa itu OSS RBA?", answer("OSS RBA"), 92),
        *[
            interaction(
                f"h{n}", "heavy", f"Pertanyaan pajak nomor {n} tentang PPh badan?", answer(f"PPh {n}"), 90 - n
            )
            for n in range(1, 6)
        ],
    ]
    save_interactions(sessions, records)
    stars = {
        "i-good": 5,
        "i-bad": 1,
        "i-mid": 3,
        "i-corr": 2,
        "i-pii": 5,
        "i-leak": 4,
        "i-dup1": 4,
        "i-dup2": 4,
    }
    stars |= {f"h{n}": 5 for n in range(1, 6)}
    for key, value in stars.items():
        rate_interaction(sessions, interaction_id=key, stars=value, comment=None)
    correct(
        sessions,
        interaction_id="i-corr",
        correct_answer=CORRECT3,
        why_wrong="langkahnya keliru",
        lesson="SPT badan dilaporkan lewat DJP Online",
        reviewer="rina",
    )
    pairs = [
        NewPair(
            QA1, "company", "formal", "simple", "zantara-base", "zantara@v3", BASE_A1, TUNED_A1, None, "a1"
        ),
        NewPair(
            QA2, "company", "formal", "simple", "zantara-base", "zantara@v3", "x " * 10, "y " * 10, None, "a2"
        ),
    ]
    first, second = queue_pairs(sessions, pairs)
    ratings = {c: {"A": 6, "B": 6} for c in ("naturalness", "accuracy", "completeness")}
    for name in ("ana", "bayu"):
        reviewer = add_reviewer(sessions, name)[0].id
        shown = next_pair(sessions, reviewer, overlap=3, lease=timedelta(minutes=30))
        assert shown is not None and shown.pair_id == first
        choice = "A" if shown.answer_a == TUNED_A1 else "B"
        submit_judgment(sessions, reviewer_id=reviewer, pair_id=first, choice=choice, ratings=ratings)
        if name == "ana":
            shown = next_pair(sessions, reviewer, overlap=3, lease=timedelta(minutes=30))
            assert shown is not None and shown.pair_id == second
            submit_judgment(sessions, reviewer_id=reviewer, pair_id=second, choice="tie", ratings=ratings)


@pytest.fixture
def eval_dataset(tmp_path: Path) -> Path:
    """A dataset folder as `zantara dataset build` writes it, with `LEAKED` in its test split."""
    folder = tmp_path / "datasets" / "ds-evaltest"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"version": "ds-evaltest", "created_at": "2025"}))
    for split, question in (("test", LEAKED), ("validation", "Apa syarat visa investor untuk WNA?")):
        record = {
            "messages": [
                {"role": "system", "content": ZANTARA_SYSTEM_PROMPT},
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer("jawaban emas")},
            ]
        }
        (folder / f"{split}.jsonl").write_text(json.dumps(record) + "\n")
    return folder


def build(database_url: str, eval_dataset: Path, out: Path, *extra: str) -> tuple[int, str]:
    """`zantara dataset preferences build` in-process: (exit code, output)."""
    args = ["dataset", "preferences", "build", "--database-url", database_url, "--out", str(out)]
    args += ["--eval-dataset", str(eval_dataset), "--per-user-cap", "3", "--test-share", "0", *extra]
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def rows(path: Path) -> list[dict[str, Any]]:
    """The JSON rows of a JSONL file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def completion(row: dict[str, Any], key: str = "completion") -> str:
    """The text of a row's one assistant message under `key`."""
    [message] = row[key]
    assert message["role"] == "assistant"
    return str(message["content"])


def test_kto_rows_labels_provenance_and_filters(
    sessions: sessionmaker[Session], database_url: str, eval_dataset: Path, tmp_path: Path
) -> None:
    plant(sessions)
    code, output = build(database_url, eval_dataset, tmp_path / "kto", "--kind", "kto")
    assert code == 0, output
    manifest = json.loads((tmp_path / "kto" / "manifest.json").read_text())
    built = rows(tmp_path / "kto" / "train.jsonl")
    assert rows(tmp_path / "kto" / "test.jsonl") == []
    labelled = {(completion(row), row["label"]) for row in built}
    assert (CORRECT3, True) in labelled and (WRONG3, False) in labelled
    assert (TUNED_A1, True) in labelled and (BASE_A1, False) in labelled
    assert (GOOD1, True) in labelled and (BAD1, False) in labelled
    assert not any("izin lokasi" in text for text, _ in labelled), "3 stars is neither"
    assert not any("OSS RBA" in text for text, _ in labelled), "unrated answers are not signals"
    assert not any(row["prompt"][-1]["content"] == LEAKED for row in built)
    assert sum("KBLI" in completion(row) for row in built) == 1
    assert sum("PPh" in completion(row) for row in built) == 3, "the heavy user is capped at 3"
    assert not any(row["prompt"][-1]["content"] == QA2 for row in built), "a tie is left out"
    assert manifest["left_out"] == {
        "ab_pairs_undecided": 1,
        "ab_tie_verdicts": 1,
        "duplicate": 2,
        "eval_leakage": 1,
        "per_user_cap": 2,
        "ratings_between_thresholds": 1,
    }
    assert manifest["counts"]["sources"] == {
        "correction": {"desirable": 1, "undesirable": 1},
        "ab": {"desirable": 1, "undesirable": 1},
        "rating": {"desirable": 6, "undesirable": 1},
    }
    balance = manifest["balance"]
    assert (balance["desirable"], balance["undesirable"]) == (8, 3)
    assert (balance["desirable_weight"], balance["undesirable_weight"]) == (1.0, 2.0)
    assert 1 <= balance["weighted_ratio"] <= 4 / 3
    assert manifest["users_at_cap"] == 1 and manifest["eval_leakage"]["dataset_version"] == "ds-evaltest"
    assert manifest["version"].startswith("pref-kto-") and set(manifest["files"]) == {
        "train.jsonl",
        "test.jsonl",
    }

    [corrected] = [row for row in built if completion(row) == CORRECT3]
    assert corrected["prompt"] == [
        {"role": "system", "content": ZANTARA_SYSTEM_PROMPT},
        {"role": "user", "content": Q3},
    ]
    assert corrected["meta"]["source"] == "correction" and corrected["meta"]["reviewers"] == ["rina"]
    assert corrected["meta"]["interaction_ids"] == ["i-corr"] and corrected["meta"]["adapters"] == [
        "zantara@v3"
    ]
    assert corrected["meta"]["correction_id"] is not None and corrected["meta"]["stars"] == [2]
    [winner] = [row for row in built if completion(row) == TUNED_A1]
    assert winner["meta"]["reviewers"] == ["ana", "bayu"]
    assert winner["meta"]["adapters"] == ["zantara@v3", "zantara-base"] and winner["meta"]["ab_pair_id"] == 1
    [rated_bad] = [row for row in built if completion(row) == BAD1]
    assert [m["role"] for m in rated_bad["prompt"]] == ["system", "user", "assistant", "user"]
    assert rated_bad["meta"]["adapters"] == ["base"] and rated_bad["meta"]["interaction_ids"] == ["i-bad"]

    text = (tmp_path / "kto" / "train.jsonl").read_text(encoding="utf-8")
    assert "NPWP pribadi" in text, "the row with personal data is kept, scrubbed"
    assert NIK not in text and "Budi" not in text and "Santoso" not in text
    assert "heavy" not in text and '"u1"' not in text, "user hashes are never written"


def test_dpo_pairs_from_corrections_ab_and_rated_answers(
    sessions: sessionmaker[Session], database_url: str, eval_dataset: Path, tmp_path: Path
) -> None:
    plant(sessions)
    code, output = build(database_url, eval_dataset, tmp_path / "dpo", "--kind", "dpo")
    assert code == 0, output
    built = rows(tmp_path / "dpo" / "train.jsonl")
    pairs = {(completion(row, "chosen"), completion(row, "rejected")): row for row in built}
    assert set(pairs) == {(CORRECT3, WRONG3), (TUNED_A1, BASE_A1), (GOOD1, BAD1)}
    rated = pairs[(GOOD1, BAD1)]["meta"]
    assert rated["source"] == "rating" and rated["interaction_ids"] == ["i-good", "i-bad"]
    assert rated["stars"] == [5, 1] and rated["adapters"] == ["zantara@v3", "base"]
    manifest = json.loads((tmp_path / "dpo" / "manifest.json").read_text())
    assert manifest["counts"]["sources"] == {"correction": 1, "ab": 1, "rating": 1}
    assert manifest["left_out"]["ratings_without_partner"] == 10 and "balance" not in manifest
    report = check_preference_file(tmp_path / "dpo" / "train.jsonl", None)
    assert report.records == 3 and not report.errors


def test_rows_load_as_trl_conversational_datasets(
    sessions: sessionmaker[Session], database_url: str, eval_dataset: Path, tmp_path: Path
) -> None:
    from datasets import load_dataset
    from trl.data_utils import is_conversational

    plant(sessions)
    for kind, columns in (
        ("kto", {"prompt", "completion", "label"}),
        ("dpo", {"prompt", "chosen", "rejected"}),
    ):
        code, output = build(database_url, eval_dataset, tmp_path / kind, "--kind", kind)
        assert code == 0, output
        loaded = load_dataset("json", data_files=str(tmp_path / kind / "train.jsonl"), split="train")
        assert columns <= set(loaded.column_names)
        assert all(is_conversational(row) for row in loaded)


def test_exit_codes_and_messages(
    sessions: sessionmaker[Session], database_url: str, eval_dataset: Path, tmp_path: Path
) -> None:
    code, output = build(database_url, eval_dataset, tmp_path / "empty", "--kind", "kto")
    assert code == 3 and "nothing to build" in output
    code, output = build(database_url, eval_dataset, tmp_path / "x", "--kind", "kto", "--desirable", "2")
    assert code == 2 and "undesirable" in output
    code, output = build(database_url, eval_dataset, tmp_path / "x", "--kind", "orpo")
    assert code == 2
    code, output = build(database_url, tmp_path / "nowhere", tmp_path / "x", "--kind", "dpo")
    assert code == 2 and "--eval-dataset" in output
    save_interactions(sessions, [interaction("only-good", "u1", Q1, GOOD1, 5)])
    rate_interaction(sessions, interaction_id="only-good", stars=5, comment=None)
    code, output = build(database_url, eval_dataset, tmp_path / "x", "--kind", "kto")
    assert code == 1 and "KTO needs desirable and undesirable" in output
    code, output = build(database_url, eval_dataset, tmp_path / "x", "--kind", "dpo")
    assert code == 3 and "nothing to build" in output
    assert not (tmp_path / "x").exists()


def test_the_eval_dataset_defaults_to_the_newest_build(
    sessions: sessionmaker[Session],
    database_url: str,
    eval_dataset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plant(sessions)
    args = ["dataset", "preferences", "build", "--kind", "dpo", "--database-url", database_url]
    monkeypatch.setenv("ZANTARA_VAR_DIR", str(tmp_path / "empty-var"))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "zantara dataset build" in result.output
    monkeypatch.setenv("ZANTARA_VAR_DIR", str(tmp_path))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    [built] = (tmp_path / "preferences").iterdir()
    manifest = json.loads((built / "manifest.json").read_text())
    assert built.name == manifest["version"] and manifest["eval_leakage"]["dataset"] == str(eval_dataset)


def test_preferences_check_finds_personal_data_and_contradictions(tmp_path: Path) -> None:
    prompt = [{"role": "user", "content": "Bagaimana cara mendaftar NPWP pribadi untuk karyawan?"}]
    good, bad = answer("NPWP pribadi"), answer("NPWP", "buruk")
    lines = [
        {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": good}],
            "rejected": [{"role": "assistant", "content": bad}],
        },
        {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": bad}],
            "rejected": [{"role": "assistant", "content": good}],
        },
        {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": f"{good} NIK saya {NIK}."}],
            "rejected": [{"role": "assistant", "content": bad}],
        },
        {"prompt": prompt, "chosen": "not messages"},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    report = check_preference_file(path, None)
    assert {(issue.line, issue.check) for issue in report.errors} == {
        (2, "duplicate"),
        (3, "pii"),
        (4, "schema"),
    }
    result = CliRunner().invoke(app, ["dataset", "preferences", "check", str(path)])
    assert result.exit_code == 1 and "pii" in result.output
    result = CliRunner().invoke(app, ["dataset", "preferences", "check", str(tmp_path / "missing.jsonl")])
    assert result.exit_code == 2


def test_kto_weights_stay_within_trl_band() -> None:
    low, high = KTO_BALANCE
    for desirable in range(1, 60):
        for undesirable in range(1, 60):
            weights = kto_weights(desirable, undesirable)
            assert low <= weighted_ratio(desirable, undesirable, weights) <= high
            assert min(weights) == 1.0
    assert kto_weights(4, 3) == (1.0, 1.0) and kto_weights(1, 3) == (3.0, 1.0)
    with pytest.raises(ValueError):
        kto_weights(0, 3)


def test_eval_questions_read_the_splits_and_the_extra_sets(eval_dataset: Path) -> None:
    questions = eval_questions(eval_dataset)
    assert LEAKED in questions.questions and questions.dataset_version == "ds-evaltest"
    assert questions.counts["test"] == 1 and questions.counts["validation"] == 1
    assert questions.counts["general"] > 0 and questions.counts["unknown"] > 0
