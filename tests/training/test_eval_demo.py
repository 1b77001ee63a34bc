"""`zantara eval` on the real demo model: in process through the service's engine, and over HTTP
against a running service (a real `python -m zantara serve` process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.served import running_server
from training.dataset.build import BuildOptions, build
from training.dataset.generator import Generator
from zantara.cli import app

QUICK = ("--limit", "4", "--max-tokens", "24", "--bootstrap", "50", "--no-progress")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset built from the project's data (knowledge/data/) with the offline generator."""
    out = tmp_path_factory.mktemp("eval-demo") / "dataset"
    build(BuildOptions(), Generator(), out, progress=False)
    return out


def run_eval(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["eval", *map(str, args)])
    return result.exit_code, result.output


def read_report(out: Path) -> dict:
    assert (out / "report.html").is_file()
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def check_schema(report: dict, adapter: str) -> None:
    assert set(report) >= {"dataset_version", "variants", "gates", "critical_errors", "passed"}
    assert set(report["variants"]) == {"base", adapter}
    for variant in report["variants"].values():
        for name in (
            "chrf",
            "bleu",
            "exact_match",
            "fact_precision",
            "register_fit",
            "consistency",
            "perplexity",
        ):
            assert set(variant["test"][name]) >= {"value", "low", "high"}
        assert variant["test"]["by_category"] and variant["test"]["by_register"]
        assert variant["general"]["n"] and variant["unknown"]["n"]
    names = {gate["name"] for gate in report["gates"]}
    assert names >= {
        "accuracy_improvement",
        "general_regression",
        "perplexity",
        "critical_errors",
        "consistency",
    }
    assert all(gate["status"] in ("pass", "fail", "skipped") for gate in report["gates"])
    assert report["passed"] == all(gate["status"] != "fail" for gate in report["gates"])


def test_demo_base_against_demo_adapter_in_process(
    dataset: Path, demo_base: Path, demo_adapter: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code, output = run_eval(
        "--dataset", dataset, "--base-model", demo_base, "--adapter", demo_adapter, "--out", out,
        "--database-url", f"sqlite:///{tmp_path / 'ab.db'}", *QUICK,
    )  # fmt: skip
    assert code in (0, 1), output
    report = read_report(out)
    check_schema(report, "zantara-demo@v1")
    assert code == (0 if report["passed"] else 1)
    base, tuned = report["variants"]["base"]["test"], report["variants"]["zantara-demo@v1"]["test"]
    assert base["perplexity"]["value"] > 1 and tuned["perplexity"]["value"] > 1
    # the adapter was trained on the golden answers: they are less surprising to it than to the base
    assert tuned["perplexity"]["value"] < base["perplexity"]["value"]
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    assert any(row["answers"]["base"] != row["answers"]["zantara-demo@v1"] for row in answers)


def test_the_same_command_against_a_running_service(
    dataset: Path, demo_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    models_dir, adapters_dir = demo_dirs
    env = {
        "ZANTARA_VAR_DIR": str(tmp_path / "var"),
        "ZANTARA_MODELS_DIR": str(models_dir),
        "ZANTARA_ADAPTERS_DIR": str(adapters_dir),
        "ZANTARA_DATABASE_URL": f"sqlite:///{tmp_path / 'service.db'}",
    }
    out = tmp_path / "out"
    with running_server(env) as server:
        code, output = run_eval(
            "--dataset", dataset, "--endpoint", server.url, "--base", "zantara-demo-base",
            "--adapter", "zantara-demo@v1", "--out", out, "--database-url", f"sqlite:///{tmp_path / 'ab.db'}",
            *QUICK,
        )  # fmt: skip
    assert code in (0, 1), output
    report = read_report(out)
    check_schema(report, "zantara-demo@v1")
    assert report["variants"]["base"]["test"]["perplexity"]["status"] == "unavailable"
    [perplexity] = [gate for gate in report["gates"] if gate["name"] == "perplexity"]
    assert perplexity["status"] == "skipped"
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(row["answers"]["base"] for row in answers)
