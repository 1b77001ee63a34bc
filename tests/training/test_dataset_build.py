"""`zantara dataset build` on the project's own data: size, category counts, formats, version, no leakage."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from database.engine import create_db_engine, make_session_factory
from database.migrate import upgrade
from database.models import Correction
from knowledge.prompts import ZANTARA_SYSTEM_PROMPT
from knowledge.records import CATEGORIES, REGISTERS
from training.dataset.build import DEFAULT_SEED, BuildError, BuildOptions, build
from training.dataset.cli import app
from training.dataset.generator import Generator
from training.dataset.similarity import content_words, normalize

SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("datasets") / "v1"
    result = CliRunner().invoke(app, ["build", "--out", str(out), "--include-unvalidated", "--no-progress"])
    assert result.exit_code == 0, result.output
    return out


def chat_records(folder: Path, split: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def test_default_build_is_big_enough_with_the_seed_category_counts(dataset: Path) -> None:
    manifest = json.loads((dataset / "manifest.json").read_text(encoding="utf-8"))
    counts = manifest["counts"]
    assert counts["total"] >= 1000
    assert manifest["seed_categories"] == {
        "immigration": 10,
        "criminal_code": 10,
        "company": 10,
        "tax": 10,
        "property": 10,
        "multi_domain": 20,
    }
    assert counts["total"] == sum(counts["splits"].values())
    assert set(counts["sources"]) >= {"seed", "variation", "synthetic", "correction", "conversation"}
    assert 10 <= manifest["variations"]["per_seed"]["min"] <= manifest["variations"]["per_seed"]["max"] <= 20
    assert all(abs(share - 1 / 3) < 0.05 for share in manifest["variations"]["register_share"].values())
    for split in SPLITS:
        assert set(counts["per_split"][split]["categories"]) == set(CATEGORIES), split
    assert (
        0.12
        <= counts["splits"]["validation"] / (counts["splits"]["train"] + counts["splits"]["validation"])
        <= 0.2
    )
    assert 0.08 <= counts["splits"]["test"] / counts["total"] <= 0.16
    assert manifest["checks"]["errors"] == 0
    assert manifest["facts_verified"] and manifest["facts_needing_confirmation"]


def test_no_question_or_seed_sits_on_two_sides_of_a_split(dataset: Path) -> None:
    owner: dict[str, str] = {}
    for split in SPLITS:
        for record in chat_records(dataset, split):
            question = record["messages"][1]["content"]
            for key in (f"seed:{record['meta']['seed_id']}", f"text:{normalize(question)}"):
                if key != "seed:None":
                    assert owner.setdefault(key, split) == split, key
    sets = {
        split: [content_words(r["messages"][1]["content"]) for r in chat_records(dataset, split)]
        for split in SPLITS
    }
    for one, other in (("train", "validation"), ("train", "test"), ("validation", "test")):
        for first in sets[one]:
            for second in sets[other]:
                if len(first) >= 3 and len(second) >= 3:
                    assert len(first & second) / len(first | second) < 0.8


def test_both_formats_hold_the_same_records_and_the_version_is_the_content_hash(dataset: Path) -> None:
    manifest = json.loads((dataset / "manifest.json").read_text(encoding="utf-8"))
    canonical = []
    for split in SPLITS:
        chat = chat_records(dataset, split)
        alpaca = json.loads((dataset / f"{split}.alpaca.json").read_text(encoding="utf-8"))
        assert len(chat) == len(alpaca) == manifest["counts"]["splits"][split]
        for record, row in zip(chat, alpaca, strict=True):
            system, user, assistant = record["messages"]
            assert system == {"role": "system", "content": ZANTARA_SYSTEM_PROMPT}
            assert (row["instruction"], row["input"], row["output"]) == (
                ZANTARA_SYSTEM_PROMPT,
                user["content"],
                assistant["content"],
            )
            assert {key: row[key] for key in record["meta"]} == record["meta"]
            assert record["meta"]["register"] in REGISTERS and record["meta"]["category"] in CATEGORIES
            canonical.append(json.dumps({"split": split, **record}, ensure_ascii=False, sort_keys=True))
    digest = hashlib.sha256("\n".join(sorted(canonical)).encode()).hexdigest()[:12]
    assert manifest["version"] == f"ds-{digest}"
    for name, sha in manifest["files"].items():
        assert hashlib.sha256((dataset / name).read_bytes()).hexdigest() == sha


def test_the_build_output_passes_its_own_checklist(dataset: Path) -> None:
    for split in SPLITS:
        result = CliRunner().invoke(app, ["check", str(dataset / f"{split}.jsonl")])
        assert result.exit_code == 0, result.output


SEED = json.loads(DEFAULT_SEED.read_text(encoding="utf-8").splitlines()[0])
CASUAL_FOR_FORMAL = {
    "query": "Bagaimanakah prosedur pengajuan izin tinggal terbatas bagi penanam modal asing?",
    "model_answer_wrong": "Tidak ada syarat khusus.",
    "correct_answer": SEED["golden_answer"],
    "category": "immigration",
}
"""A formally asked question (not one of the seed bank's, which would win over it) corrected with the
seed's casual golden answer to it."""


def test_same_sources_same_version_and_database_corrections_join(dataset: Path, tmp_path: Path) -> None:
    """Database corrections join the build; one failing a check is left out and named with its rule
    (the build goes on), one a reviewer overrode is kept with the check as a warning, and an override
    does not cover a verified fact contradicted."""
    manifest = json.loads((dataset / "manifest.json").read_text(encoding="utf-8"))
    again = build(BuildOptions(), Generator(), tmp_path / "again", progress=False)
    assert again.manifest["version"] == manifest["version"]

    url = f"sqlite:///{tmp_path / 'zantara.db'}"
    upgrade(url)
    engine = create_db_engine(url)
    overridden = {
        **CASUAL_FOR_FORMAL,
        "query": "Mohon penjelasan mengenai dokumen yang diperlukan investor asing untuk memperoleh ITAS "
        "sebagai pemegang saham.",
    }
    contradicting = {
        "query": "Berapa tarif PPN umum sekarang?",
        "model_answer_wrong": "11%.",
        "correct_answer": "Tarif PPN umum sekarang adalah 15% untuk semua barang dan jasa kena pajak.",
        "category": "tax",
    }
    with make_session_factory(engine)() as session, session.begin():
        rows = [
            Correction(
                query="Apakah NIB perlu diperbarui setiap tahun?",
                model_answer_wrong="Ya, setiap tahun.",
                correct_answer="Tidak. NIB berlaku selama pelaku usaha menjalankan kegiatan usahanya "
                "sesuai ketentuan, tetapi data di OSS wajib diperbarui bila ada perubahan. Apakah ada "
                "perubahan data perusahaan Anda?",
                why_wrong="Mengarang masa berlaku NIB",
                lesson="NIB tidak punya masa berlaku tahunan",
                category="company",
                reviewer="qa",
            ),
            Correction(**CASUAL_FOR_FORMAL, reviewer="qa"),
            Correction(**overridden, reviewer="qa", check_override="Klien kami suka gaya santai."),
            Correction(**contradicting, reviewer="qa", check_override="Saya yakin."),
        ]
        session.add_all(rows)
        session.flush()
        ids = [row.id for row in rows]
    engine.dispose()
    with_db = build(BuildOptions(database_url=url), Generator(), tmp_path / "db", progress=False)
    assert with_db.manifest["corrections_from_database"] == 4
    assert (
        with_db.manifest["counts"]["sources"]["correction"] == manifest["counts"]["sources"]["correction"] + 2
    )
    assert with_db.manifest["version"] != manifest["version"]
    left = {item.correction_id: item for item in with_db.left_out}
    assert set(left) == {ids[1], ids[3]}
    assert [issue.check for issue in left[ids[1]].issues] == ["tone"]
    assert "formal question answered with casual words" in left[ids[1]].issues[0].message
    assert [issue.check for issue in left[ids[3]].issues] == ["facts"]
    assert with_db.manifest["corrections_left_out"] == [item.to_json() for item in with_db.left_out]
    assert any(
        f"correction #{ids[1]} left out" in note and "tone: formal question" in note for note in with_db.notes
    )
    kept = [w for w in with_db.warnings if w.check == "tone" and "Klien kami suka gaya santai" in w.message]
    assert len(kept) == 1, with_db.warnings
    questions = {
        record["messages"][1]["content"]
        for split in SPLITS
        for record in chat_records(tmp_path / "db", split)
    }
    assert overridden["query"] in questions and CASUAL_FOR_FORMAL["query"] not in questions


def test_a_build_error_names_the_record_and_the_rule(tmp_path: Path) -> None:
    """An error in a record the build cannot leave out stops it, and the message says which record
    (its id and source) broke which rule, not only how many errors there were."""
    seed = tmp_path / "seed.jsonl"
    seed.write_text(DEFAULT_SEED.read_text(encoding="utf-8").splitlines()[1] + "\n", encoding="utf-8")
    extra = tmp_path / "extra.jsonl"
    record = {
        "question": CASUAL_FOR_FORMAL["query"],
        "answer": CASUAL_FOR_FORMAL["correct_answer"],
        "id": "extra-casual",
        "category": "immigration",
    }
    extra.write_text(json.dumps(record) + "\n", encoding="utf-8")
    options = BuildOptions(
        seed_path=seed, corrections=[], conversations=[], extra=[extra], per_register=1, synthetic_per_seed=0
    )
    with pytest.raises(BuildError) as failed:
        build(options, Generator(), tmp_path / "out", progress=False)
    message = str(failed.value)
    assert "1 error(s)" in message and "extra-casual (extra)" in message
    assert "tone: formal question answered with casual words: banget" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        (lambda lines: lines[:4] + ["{broken"] + lines[5:], ":5", "malformed JSON"),
        (lambda lines: [lines[0].replace('"golden_answer"', '"answer"')] + lines[1:], ":1", "missing field"),
        (
            lambda lines: [lines[0].replace('"register": "casual"', '"register": 3')] + lines[1:],
            ":1",
            "'register' must be a non-empty string",
        ),
        (
            lambda lines: [lines[0].replace('"itas_investor_validity"', '"no_such_fact"')] + lines[1:],
            ":1",
            "unknown fact id(s) no_such_fact",
        ),
    ],
)
def test_bad_seed_bank_stops_the_build_before_anything_is_written(
    tmp_path: Path, change: Any, where: str, message: str
) -> None:
    seed = tmp_path / "questions.jsonl"
    seed.write_text("\n".join(change(DEFAULT_SEED.read_text(encoding="utf-8").splitlines())) + "\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["build", "--seed", str(seed), "--out", str(out), "--no-progress"])
    assert result.exit_code == 2
    stderr = result.stderr.replace("\n", "")
    assert f"{seed}{where}" in stderr and message in stderr
    assert not out.exists() and [path.name for path in tmp_path.iterdir()] == ["questions.jsonl"]


def test_existing_output_is_kept_unless_forced(dataset: Path) -> None:
    result = CliRunner().invoke(app, ["build", "--out", str(dataset), "--no-progress"])
    assert result.exit_code == 2 and "already exists" in result.stderr


def test_stats_of_sources_and_of_a_built_dataset(dataset: Path) -> None:
    runner = CliRunner()
    sources = json.loads(runner.invoke(app, ["stats", "--json"]).stdout)
    assert sources["seed_questions"] == 70 and sources["general_set"]["records"] > 0
    assert (
        len(sources["facts"]["verified"]) + len(sources["facts"]["needs_confirmation"])
        == sources["facts"]["total"]
    )
    built = runner.invoke(app, ["stats", str(dataset)])
    assert built.exit_code == 0 and "counts.splits" in built.stdout
    one_file = json.loads(runner.invoke(app, ["stats", str(dataset / "test.jsonl"), "--json"]).stdout)
    assert set(one_file["categories"]) == set(CATEGORIES)
