"""`zantara eval --baseline` and the corrections gate over HTTP, against a scripted upstream.

The upstream (a real uvicorn server on a free port) answers the dataset's questions from their golden
answers (`base-model` with the first third of each, every adapter with the whole) and the corrected
questions as each model was taught: `parent@v1` (the version serving now) and `stale@v2` with the old
wrong answer, `child@v2` (a retrain that learned the corrections) with the corrected answer.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request

from tests.training.helpers import gate, run_eval, serving
from training.dataset.build import BuildOptions, build
from training.dataset.generator import Generator
from training.evaluation.cli import EXIT_BAD_INPUT, EvalHooks, EvalOptions, evaluate
from training.evaluation.data import load_eval_data
from training.evaluation.gates import RETRAIN_GATES

MODELS = ("base-model", "parent@v1", "child@v2", "stale@v2")
WRONG = "Maaf, saya kurang tahu soal itu."
CORRECTIONS = [
    {
        "question": "Apakah pemegang KITAS pekerja boleh membuka usaha sendiri?",
        "answer": "Tidak, KITAS pekerja hanya untuk bekerja pada sponsornya; untuk usaha sendiri "
        "dibutuhkan KITAS investor lewat PT PMA.",
    },
    {
        "question": "Siapa yang harus melaporkan orang asing yang menginap di rumah saya?",
        "answer": "Pemilik atau pengelola tempat menginap wajib melaporkan orang asing itu ke kantor "
        "imigrasi setempat.",
    },
]


def scripted_app(golden: dict[str, str]) -> FastAPI:
    """An OpenAI-compatible server answering as the module docstring says."""
    upstream = FastAPI()
    corrected = {row["question"]: row["answer"] for row in CORRECTIONS}

    @upstream.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model"} for name in MODELS]}

    @upstream.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        body = await request.json()
        messages, model = body["messages"], body["model"]
        question = messages[-2 if messages[-1]["role"] == "assistant" else -1]["content"]
        if question in corrected:
            answer = corrected[question] if model == "child@v2" else WRONG
        elif model == "base-model":
            words = golden[question].split()
            answer = " ".join(words[: max(1, len(words) // 3)])
        else:
            answer = golden[question]
        message = {"role": "assistant", "content": answer}
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    return upstream


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset built from the project's data (knowledge/data/) with the offline generator."""
    out = tmp_path_factory.mktemp("baseline") / "dataset"
    build(BuildOptions(), Generator(), out, progress=False)
    return out


@pytest.fixture(scope="module")
def corrections(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corrected questions, as `zantara retrain` hands them to the evaluation."""
    path = tmp_path_factory.mktemp("corrections") / "corrections.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in CORRECTIONS))
    return path


CHRF_RETRAIN_GATES = """
accuracy_improvement: {metric: chrf, min_relative: -0.02}
general_regression: {metric: chrf, max_relative_drop: 0.05}
corrections: {metric: chrf, min_relative: 0.10}
"""


@pytest.fixture(scope="module")
def chrf_gates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The retrain gates judged on chrF: a scripted upstream over HTTP gives no perplexity, so the
    default retrain gates (on perplexity) would all be skipped there."""
    path = tmp_path_factory.mktemp("gates") / "retrain_chrf.yaml"
    path.write_text(RETRAIN_GATES.read_text(encoding="utf-8") + CHRF_RETRAIN_GATES, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def upstream(dataset: Path) -> Any:
    golden = {item.question: item.reference for item in load_eval_data(dataset).all()}
    with serving(scripted_app(golden)) as url:
        yield url


def eval_args(dataset: Path, upstream: str, out: Path, *extra: str | Path) -> list[str | Path]:
    return [
        "--dataset", dataset, "--endpoint", upstream, "--base", "base-model", "--out", out,
        "--limit", "6", "--bootstrap", "20", "--no-progress", "--database-url",
        f"sqlite:///{out.parent / 'ab.db'}", *extra,
    ]  # fmt: skip


def report_of(out: Path) -> dict[str, Any]:
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def test_a_retrain_that_learned_the_corrections_passes_the_retrain_gates_against_its_parent(
    dataset: Path, upstream: str, corrections: Path, chrf_gates: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code, output = run_eval(
        *eval_args(dataset, upstream, out, "--adapter", "child@v2", "--baseline", "parent@v1",
                   "--corrections", corrections, "--gates", chrf_gates)
    )  # fmt: skip
    assert code == 0, output
    report = report_of(out)
    assert report["baseline"] == report["compared_with"] == "parent@v1"
    assert report["corrections"] == {"path": str(corrections), "n": 2}
    assert set(report["variants"]) == {"base", "parent@v1", "child@v2"}
    assert {g["variant"] for g in report["gates"]} == {"child@v2"}  # neither the base nor the baseline
    accuracy = gate(report, "accuracy_improvement")
    assert accuracy["value"] == 0.0 and accuracy["threshold"] == -0.02  # as good as the parent: passes
    assert "baseline parent@v1" in accuracy["detail"] and accuracy["status"] == "pass"
    learned = gate(report, "corrections")
    child, parent = (
        report["variants"][key]["corrections"]["chrf"]["value"] for key in ("child@v2", "parent@v1")
    )
    assert child == pytest.approx(100.0) and parent < 50
    assert learned["status"] == "pass" and learned["value"] == pytest.approx(
        (child - parent) / parent, abs=1e-3
    )
    assert gate(report, "general_regression")["status"] == "pass"
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "baseline parent@v1" in html and "Corrected questions (2)" in html
    assert "melaporkan orang asing" in html
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["question"] for row in rows if row["set"] == "corrections"] == [
        r["question"] for r in CORRECTIONS
    ]


def test_a_retrain_that_did_not_learn_the_corrections_fails_only_that_gate(
    dataset: Path, upstream: str, corrections: Path, chrf_gates: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code, output = run_eval(
        *eval_args(dataset, upstream, out, "--adapter", "stale@v2", "--baseline", "parent@v1",
                   "--corrections", corrections, "--gates", chrf_gates)
    )  # fmt: skip
    assert code == 1, output
    report = report_of(out)
    assert {g["name"] for g in report["gates"] if g["status"] == "fail"} == {"corrections"}
    assert gate(report, "corrections")["value"] == 0.0


def test_without_a_baseline_the_gates_compare_with_the_base_and_corrections_are_optional(
    dataset: Path, upstream: str, corrections: Path, tmp_path: Path
) -> None:
    out = tmp_path / "with"
    code, output = run_eval(
        *eval_args(dataset, upstream, out, "--adapter", "child@v2", "--corrections", corrections)
    )
    assert code == 0, output
    report = report_of(out)
    assert report["baseline"] is None and report["compared_with"] == "base"
    assert gate(report, "corrections")["status"] == "pass"
    assert gate(report, "corrections")["detail"].startswith("chrf on the 2 corrected questions: base ")
    assert gate(report, "accuracy_improvement")["threshold"] == 0.2
    out = tmp_path / "without"
    code, output = run_eval(
        *eval_args(dataset, upstream, out, "--adapter", "parent@v1", "--baseline", "stale@v2")
    )
    assert code == 1, output
    report = report_of(out)
    assert report["corrections"] is None and "corrections" not in report["variants"]["parent@v1"]
    skipped = gate(report, "corrections")
    assert skipped["status"] == "skipped" and "--corrections" in skipped["detail"]
    assert gate(report, "accuracy_improvement")["status"] == "fail"  # default gates: +20% over the baseline


def test_evaluate_returns_the_report_and_exit_code_without_the_command_line(
    dataset: Path, upstream: str, corrections: Path, chrf_gates: Path, tmp_path: Path
) -> None:
    def no_engine(base_model: str | None, adapters: list[str]) -> Any:
        raise AssertionError("an --endpoint run never starts the in-process engine")

    hooks = EvalHooks(in_process=no_engine, database_url=lambda: f"sqlite:///{tmp_path / 'ab.db'}")
    options = EvalOptions(
        dataset=dataset, out=tmp_path / "out", gates=chrf_gates, adapters=["child@v2"],
        endpoint=upstream, base="base-model", limit=4, bootstrap=20, progress=False,
        baseline="parent@v1", corrections=corrections,
    )  # fmt: skip
    result = evaluate(options, hooks)
    assert result.exit_code == 0 and result.error is None and result.report is not None
    assert result.report["passed"] and result.json_path == tmp_path / "out" / "report.json"
    assert json.loads(result.json_path.read_text(encoding="utf-8"))["baseline"] == "parent@v1"
    bad = evaluate(
        EvalOptions(dataset=dataset, endpoint=upstream, base="base-model", baseline="parent@v1"), hooks
    )
    assert bad.exit_code == EXIT_BAD_INPUT and bad.report is None
    assert bad.error is not None and "--baseline needs an --adapter" in bad.error


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"question": "Apa itu KITAS?"}\n', 'expected {"question": ..., "answer": ...}'),
        ("not json\n", "malformed JSON"),
        ("", "holds no records"),
    ],
)
def test_a_bad_corrections_file_exits_2(
    dataset: Path, upstream: str, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "corrections.jsonl"
    path.write_text(content)
    out = tmp_path / "out"
    code, output = run_eval(
        *eval_args(dataset, upstream, out, "--adapter", "child@v2", "--corrections", path)
    )
    assert code == 2, output
    assert message in " ".join(output.split())
    assert not (out / "report.json").exists()


def test_in_process_on_the_demo_model_an_unchanged_copy_gains_nothing_on_the_corrections(
    dataset: Path, corrections: Path, demo_base: Path, demo_adapter: Path, tmp_path: Path
) -> None:
    # The same weights under two names: whatever the demo build, the candidate answers exactly as its
    # parent, so it keeps the parent's accuracy and perplexity and fails the corrections gate.
    parent = tmp_path / "adapters" / "zantara-demo" / "v0"
    shutil.copytree(demo_adapter, parent)
    meta = json.loads((parent / "zantara.json").read_text(encoding="utf-8"))
    (parent / "zantara.json").write_text(json.dumps({**meta, "version": "v0"}), encoding="utf-8")
    out = tmp_path / "out"
    code, output = run_eval(
        "--dataset", dataset, "--base-model", demo_base, "--adapter", demo_adapter, "--baseline", parent,
        "--corrections", corrections, "--gates", RETRAIN_GATES, "--out", out, "--limit", "3",
        "--max-tokens", "16", "--bootstrap", "20", "--no-progress", "--database-url",
        f"sqlite:///{tmp_path / 'ab.db'}",
    )  # fmt: skip
    assert code == 1, output
    report = report_of(out)
    assert report["baseline"] == "zantara-demo@v0"
    assert set(report["variants"]) == {"base", "zantara-demo@v0", "zantara-demo@v1"}
    assert {g["variant"] for g in report["gates"]} == {"zantara-demo@v1"}
    assert gate(report, "accuracy_improvement")["value"] == 0.0
    assert gate(report, "perplexity")["value"] == pytest.approx(1.0, abs=1e-3)
    assert gate(report, "corrections")["status"] == "fail"
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    corrected = [row for row in rows if row["set"] == "corrections"]
    assert len(corrected) == 2
    assert all(row["answers"]["zantara-demo@v0"] == row["answers"]["zantara-demo@v1"] for row in corrected)
