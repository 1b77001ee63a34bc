"""`zantara dataset check`: every kind of planted bad record is caught on its line, with its severity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knowledge.fact_check import FactChecker
from knowledge.facts import load_facts
from training.dataset.build import DEFAULT_FACTS
from training.dataset.checks import Report, check_file
from training.dataset.cli import app

FIXTURES = Path(__file__).parent / "dataset_fixtures"
PLANTED = FIXTURES / "planted.jsonl"
ERRORS = {"schema", "duplicate", "register", "completeness", "facts", "pii"}


@pytest.fixture(scope="module")
def checker() -> FactChecker:
    return FactChecker(load_facts(DEFAULT_FACTS))


@pytest.fixture(scope="module")
def report(checker: FactChecker) -> Report:
    return check_file(PLANTED, checker)


def planted() -> list[tuple[int, str, str]]:
    """(line, planted check, record id) for every planted record of the fixture file."""
    rows = []
    for line, text in enumerate(PLANTED.read_text(encoding="utf-8").splitlines(), start=1):
        record = json.loads(text)
        meta = record.get("meta", record)
        if "planted" in meta:
            rows.append((line, meta["planted"], meta["id"]))
    return rows


@pytest.mark.parametrize(("line", "check", "record_id"), planted(), ids=[row[2] for row in planted()])
def test_each_planted_record_is_caught_on_its_line(
    report: Report, line: int, check: str, record_id: str
) -> None:
    found = [issue for issue in report.issues if issue.line == line and issue.check == check]
    assert found, f"line {line} ({record_id}): no {check} finding in {report.issues}"


def test_the_clean_record_has_no_finding(report: Report) -> None:
    assert [issue for issue in report.issues if issue.line == 1] == []


def test_kinds_of_planted_problems_cover_the_whole_checklist() -> None:
    kinds = {check for _, check, _ in planted()}
    assert kinds == ERRORS | {"near_duplicate", "tone", "translationese"}


def test_severity_errors_block_warnings_inform(report: Report) -> None:
    by_id = {record_id: line for line, _, record_id in planted()}
    assert {issue.check for issue in report.errors} >= ERRORS | {"tone"}
    assert any(i.line == by_id["translationese"] and i.severity == "warning" for i in report.issues)
    assert any(i.line == by_id["near-dup-1"] and i.severity == "warning" for i in report.issues)
    assert any(i.line == by_id["casual-no-particle"] and i.severity == "warning" for i in report.issues)


def test_a_contradicted_verified_fact_is_critical_and_names_the_registry(report: Report) -> None:
    line = next(line for line, check, _ in planted() if check == "facts")
    (finding,) = [issue for issue in report.issues if issue.line == line and issue.check == "facts"]
    assert finding.severity == "error" and finding.message.startswith("critical:")
    assert "Rp50 juta" in finding.message and "pt_pma_paid_up_capital_2021" in finding.message


def test_every_kind_of_personal_data_is_named(report: Report) -> None:
    line = next(line for line, check, _ in planted() if check == "pii")
    messages = " ".join(
        issue.message for issue in report.issues if issue.line == line and issue.check == "pii"
    )
    for kind in (
        "nik left in",
        "npwp left in",
        "passport left in",
        "email left in",
        "phone left in",
        "name with ID number left in: 'Budi Santoso'",
    ):
        assert kind in messages


def test_fact_checker_agrees_with_right_figures_and_leaves_estimates_alone(checker: FactChecker) -> None:
    right = (
        "Modal disetor PT PMA menurut aturan 2021 minimal Rp10 miliar, dan setelah revisi 2025 Rp2,5 miliar."
    )
    assert checker.check("Berapa modal PT PMA?", right) == []
    assert (
        checker.check(
            "Omzet saya Rp3 miliar, bisa pakai PPh final UMKM?",
            "Omzet Rp3 miliar masih di bawah batas peredaran bruto UMKM Rp4,8 miliar.",
        )
        == []
    )
    assert checker.check("Berapa tarif PPN?", "Tarif PPN umum sekarang 10%.")[0].critical
    unconfirmed = checker.check("Berapa modal PT PMA?", "Modal minimal 50 juta rupiah.")
    assert unconfirmed and not unconfirmed[0].critical


def test_json_array_records_are_reported_with_their_own_line(tmp_path: Path, checker: FactChecker) -> None:
    rows = [json.loads(text) for text in PLANTED.read_text(encoding="utf-8").splitlines()]
    path = tmp_path / "planted.json"
    path.write_text(
        "[\n" + ",\n".join(json.dumps(row, indent=2) for row in rows[:3]) + "\n]\n", encoding="utf-8"
    )
    lines = [issue.line for issue in check_file(path, checker).issues]
    text = path.read_text(encoding="utf-8").splitlines()
    assert lines and all(text[line - 1].strip() == "{" for line in lines)
    assert lines[0] == 1 + len(json.dumps(rows[0], indent=2).splitlines()) + 1


def test_cli_exit_codes_and_json_report(tmp_path: Path) -> None:
    runner = CliRunner()
    errors = runner.invoke(app, ["check", str(PLANTED), "--json"])
    assert errors.exit_code == 1
    report = json.loads(errors.stdout)
    assert report["summary"]["errors"] == len(report["errors"]) > 0
    assert report["warnings"] and all(item["severity"] == "warning" for item in report["warnings"])
    assert {"line", "check", "message", "record_id"} <= set(report["errors"][0])

    clean = tmp_path / "clean.jsonl"
    clean.write_text(PLANTED.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    assert runner.invoke(app, ["check", str(clean)]).exit_code == 0

    warnings_only = tmp_path / "warnings.jsonl"
    warnings_only.write_text("\n".join(PLANTED.read_text(encoding="utf-8").splitlines()[8:9]) + "\n")
    result = runner.invoke(app, ["check", str(warnings_only)])
    assert result.exit_code == 0 and "1 warning(s)" in result.stdout

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"input": "q"}\n{not json\n', encoding="utf-8")
    result = runner.invoke(app, ["check", str(broken)])
    assert result.exit_code == 2 and f"{broken}:2" in result.stderr.replace("\n", "")
