"""Build -> submit -> review -> rebuild: the reviewers' verdicts decide what a build keeps.

A small seed bank (nine questions, one synthetic spin-off each) keeps every build to a second or two.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from database.engine import create_db_engine, make_session_factory
from database.migrate import upgrade
from feedback.dataset_review import record_key, review, verdicts
from feedback.reviewers import add_reviewer
from training.dataset.build import DEFAULT_SEED, BuildOptions, build
from training.dataset.cli import app
from training.dataset.generator import Generator
from training.dataset.validation import UNVALIDATED_FILE

SPLITS = ("train", "validation", "test")
SMALL = ["build", "--no-corrections", "--no-conversations", "--per-register", "4", "--synthetic", "1"]


@pytest.fixture
def seed(tmp_path: Path) -> Path:
    lines = DEFAULT_SEED.read_text(encoding="utf-8").splitlines()
    path = tmp_path / "seed.jsonl"
    path.write_text("\n".join(lines[0:3] + lines[10:13] + lines[20:23]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'zantara.db'}"
    upgrade(url)
    return url


def records(folder: Path, *names: str) -> dict[str, dict[str, Any]]:
    """Records of the named files of a built dataset, by id."""
    found: dict[str, dict[str, Any]] = {}
    for name in names:
        path = folder / name
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                record = json.loads(line)
                found[record["meta"]["id"]] = record
    return found


def in_splits(folder: Path) -> dict[str, dict[str, Any]]:
    return records(folder, *(f"{split}.jsonl" for split in SPLITS))


def cli_build(seed: Path, out: Path, *more: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, [*SMALL, "--seed", str(seed), "--out", str(out), "--no-progress", *more])
    assert result.exit_code == 0, result.output
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def text(record: dict[str, Any]) -> tuple[str, str]:
    return record["messages"][1]["content"], record["messages"][2]["content"]


def test_library_default_keeps_every_pair_as_before(seed: Path, tmp_path: Path) -> None:
    options = BuildOptions(
        seed_path=seed, corrections=[], conversations=[], per_register=4, synthetic_per_seed=1
    )
    result = build(options, Generator(), tmp_path / "all", progress=False)
    assert result.manifest["counts"]["validated"] == {"true": 117, "false": 9}
    assert result.manifest["validation"]["left_out_unvalidated"] == 0
    assert not (tmp_path / "all" / UNVALIDATED_FILE).exists()


def test_verdicts_approve_edit_and_reject_and_pending_stays_out(
    seed: Path, database: str, tmp_path: Path
) -> None:
    first = tmp_path / "v1"
    manifest = cli_build(seed, first, "--database-url", database)
    held = records(first, UNVALIDATED_FILE)
    assert len(held) == manifest["validation"]["left_out_unvalidated"] == 9
    assert all(not r["meta"]["validated"] and r["meta"]["source"] == "synthetic" for r in held.values())
    assert all(r["meta"]["validated"] for r in in_splits(first).values())
    assert manifest["files"][UNVALIDATED_FILE]

    submitted = CliRunner().invoke(app, ["submit", str(first), "--database-url", database])
    assert submitted.exit_code == 0 and "9 new record(s)" in submitted.stdout, submitted.output
    again = CliRunner().invoke(app, ["submit", str(first), "--database-url", database])
    assert again.exit_code == 0 and "0 new record(s)" in again.stdout

    engine = create_db_engine(database)
    sessions = make_session_factory(engine)
    ana = add_reviewer(sessions, "ana")[0].id
    approved, edited, rejected, *pending = sorted(held)
    edited_answer = text(held[edited])[1] + " Kalau ragu, tanyakan langsung ke kantor imigrasi, ya."
    review(sessions, record_key(*text(held[approved])), ana, "approve")
    review(sessions, record_key(*text(held[edited])), ana, "edit", answer=edited_answer)
    review(sessions, record_key(*text(held[rejected])), ana, "reject", reason="terlalu mirip")
    assert len(verdicts(sessions)) == 9
    engine.dispose()

    second = tmp_path / "v2"
    rebuilt = cli_build(seed, second, "--database-url", database)
    kept = in_splits(second)
    assert kept[approved]["meta"]["validated"] and kept[approved]["meta"]["review"] == "approved"
    assert text(kept[approved]) == text(held[approved])
    assert kept[edited]["meta"]["validated"] and kept[edited]["meta"]["review"] == "edited"
    assert text(kept[edited]) == (text(held[edited])[0], edited_answer)
    assert rejected not in kept and not set(pending) & set(kept)
    assert set(records(second, UNVALIDATED_FILE)) == set(pending)
    assert rebuilt["validation"] == {
        "include_unvalidated": False,
        "reviews_required": 1,
        "verdicts_read": 9,
        "approved": 1,
        "edited": 1,
        "left_out_rejected": 1,
        "left_out_unvalidated": 6,
    }
    assert rebuilt["counts"]["total"] == manifest["counts"]["total"] + 2

    everything = tmp_path / "v3"
    included = cli_build(seed, everything, "--database-url", database, "--include-unvalidated")
    kept = in_splits(everything)
    assert set(pending) <= set(kept) and not any(kept[name]["meta"]["validated"] for name in pending)
    assert rejected not in kept and text(kept[edited])[1] == edited_answer
    assert (
        included["validation"]["left_out_unvalidated"] == 0 and not (everything / UNVALIDATED_FILE).exists()
    )

    stricter = cli_build(seed, tmp_path / "v4", "--database-url", database, "--reviews-required", "2")
    assert (stricter["validation"]["approved"], stricter["validation"]["left_out_unvalidated"]) == (0, 9)


def test_submit_refuses_a_folder_that_is_not_a_dataset(tmp_path: Path, database: str) -> None:
    result = CliRunner().invoke(app, ["submit", str(tmp_path), "--database-url", database])
    assert result.exit_code == 2 and "manifest" in result.stderr
