"""`zantara eval` over HTTP against a scripted OpenAI-compatible upstream: gates, exit codes, reports.

The upstream (a real uvicorn server on a free port) answers each question from the dataset's golden
answers, shaped per model: `base` gives the first third of the golden answer, `good@v1` the whole of
it, `liar@v1` the golden answer plus a wrong overstay fine (a verified registry figure), `forgetful@v1`
the golden answer on domain questions but a stock line on general-Indonesian ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request

from tests.training.helpers import gate, run_eval, serving
from training.dataset.build import BuildOptions, build
from training.dataset.generator import Generator
from training.evaluation.data import load_eval_data

PLANTED = " Catatan: denda overstay Rp300.000 per hari."
MODELS = ("base-model", "good@v1", "liar@v1", "forgetful@v1")


def scripted_app(golden: dict[str, tuple[str, str]], *, logprobs: bool) -> FastAPI:
    """An OpenAI-compatible server whose answers are derived from the golden answers."""
    upstream = FastAPI()

    @upstream.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model"} for name in MODELS]}

    @upstream.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        body = await request.json()
        messages = body["messages"]
        words = sum(len(m["content"].split()) for m in messages)
        question = messages[-2 if messages[-1]["role"] == "assistant" else -1]["content"]
        kind, reference = golden[question]
        model = body["model"]
        if model == "base-model":
            parts = reference.split()
            answer = " ".join(parts[: max(1, len(parts) // 3)])
        elif model == "liar@v1":
            answer = reference + PLANTED
        elif model == "forgetful@v1" and kind == "general":
            answer = "Maaf, saya hanya membahas bisnis."
        else:
            answer = reference
        response: dict[str, Any] = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": words, "completion_tokens": 1, "total_tokens": words + 1},
        }
        if logprobs and "prompt_logprobs" in body:
            value = -1.0 if model == "base-model" else -0.5
            response["prompt_logprobs"] = [None] + [{"7": {"logprob": value, "rank": 1}}] * (words - 1)
        return response

    return upstream


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset built from the project's data (knowledge/data/) with the offline generator."""
    out = tmp_path_factory.mktemp("eval") / "dataset"
    build(BuildOptions(), Generator(), out, progress=False)
    return out


@pytest.fixture(scope="module")
def golden(dataset: Path) -> dict[str, tuple[str, str]]:
    data = load_eval_data(dataset)
    return {item.question: (item.set, item.reference) for item in data.all()}


@pytest.fixture(scope="module")
def upstream(golden: dict[str, tuple[str, str]]) -> Iterator[str]:
    """The scripted upstream's URL (no prompt log-probabilities, like our own service)."""
    with serving(scripted_app(golden, logprobs=False)) as url:
        yield url


@pytest.fixture(scope="module")
def good_run(dataset: Path, upstream: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    """One evaluation of the better adapter, queueing 4 blind A/B pairs: (exit code, report folder)."""
    out = tmp_path_factory.mktemp("good") / "out"
    code, _ = http_eval(dataset, upstream, "good@v1", out, "--ab-sample", "4")
    return code, out


def http_eval(dataset: Path, upstream: str, adapter: str, out: Path, *extra: str | Path) -> tuple[int, dict]:
    code, output = run_eval(
        "--dataset", dataset, "--endpoint", upstream, "--base", "base-model", "--adapter", adapter,
        "--out", out, "--limit", "8", "--bootstrap", "50", "--no-progress",
        "--database-url", f"sqlite:///{out.parent / 'ab.db'}", *extra,
    )  # fmt: skip
    assert code in (0, 1), output
    return code, json.loads((out / "report.json").read_text(encoding="utf-8"))


def test_a_better_adapter_passes_every_gate_and_both_reports_are_written(good_run: tuple[int, Path]) -> None:
    code, out = good_run
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert code == 0
    assert report["passed"] is True
    assert set(report) >= {"dataset_version", "variants", "gates", "critical_errors", "passed"}
    assert report["dataset_version"].startswith("ds-")
    assert set(report["variants"]) == {"base", "good@v1"}
    tuned = report["variants"]["good@v1"]
    assert tuned["test"]["chrf"]["value"] == pytest.approx(100.0)
    assert tuned["test"]["chrf"]["p_value"] < 0.05
    assert tuned["test"]["exact_match"]["value"] == 1.0
    assert tuned["test"]["consistency"]["value"] == 1.0
    assert tuned["unknown"]["no_hallucination"]["value"] == 1.0
    assert set(tuned["test"]["by_category"]) <= {
        "immigration", "criminal_code", "company", "tax", "property", "multi_domain"
    }  # fmt: skip
    assert tuned["test"]["by_register"] and set(tuned["test"]["by_register"]) <= {
        "formal",
        "business",
        "casual",
    }
    assert tuned["critical_errors"] == 0
    assert not [row for row in report["critical_errors"] if row["variant"] == "good@v1"]
    for entry in report["gates"]:
        assert set(entry) >= {"name", "value", "threshold", "status"}
        assert entry["status"] in ("pass", "skipped")
    assert gate(report, "human_preference")["status"] == "skipped"
    assert gate(report, "perplexity")["status"] == "skipped"
    assert report["variants"]["base"]["test"]["perplexity"]["status"] == "unavailable"
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<svg" in html and "<rect" in html and "Critical errors" in html


def test_perplexity_over_http_comes_from_the_servers_prompt_logprobs(
    dataset: Path, golden: dict[str, tuple[str, str]], tmp_path: Path
) -> None:
    with serving(scripted_app(golden, logprobs=True)) as url:
        code, report = http_eval(dataset, url, "good@v1", tmp_path / "out", "--limit", "4")
    assert code == 0
    base, tuned = (report["variants"][key]["test"]["perplexity"]["value"] for key in ("base", "good@v1"))
    assert base == pytest.approx(2.7183, abs=1e-3)  # every answer token at log-prob -1
    assert tuned == pytest.approx(1.6487, abs=1e-3)  # ... and at -0.5
    assert gate(report, "perplexity")["status"] == "pass"


def test_a_planted_critical_error_fails_its_gate_with_exit_1(
    dataset: Path, upstream: str, tmp_path: Path
) -> None:
    code, report = http_eval(dataset, upstream, "liar@v1", tmp_path / "out")
    assert code == 1
    assert report["passed"] is False
    assert gate(report, "critical_errors")["status"] == "fail"
    assert gate(report, "accuracy_improvement")["status"] == "pass"
    errors = [row for row in report["critical_errors"] if row["variant"] == "liar@v1"]
    assert errors and all(
        row["fact_id"] == "overstay_fine" and row["stated"] == "Rp300.000" for row in errors
    )
    assert all(row["question"] and row["registry_value"] for row in errors)


def test_a_planted_general_regression_fails_its_gate_with_exit_1(
    dataset: Path, upstream: str, tmp_path: Path
) -> None:
    code, report = http_eval(dataset, upstream, "forgetful@v1", tmp_path / "out")
    assert code == 1
    failed = {g["name"] for g in report["gates"] if g["status"] == "fail"}
    assert failed == {"general_regression"}


def test_model_output_is_escaped_in_the_html_report(good_run: tuple[int, Path]) -> None:
    from training.evaluation.report import render_html

    _, out = good_run
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    for row in rows:
        row["answers"]["good@v1"] = "<script>alert(1)</script>"
    html = render_html(report, rows)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "/nonexistent/dataset"], "does not exist"),
        (["--adapter", "nobody@v9"], "unknown adapter 'nobody@v9'"),
        (["--endpoint", "http://127.0.0.1:9", "--base", "b", "--adapter", "a@v1"], "cannot reach"),
        (["--endpoint", "http://127.0.0.1:9", "--adapter", "a@v1"], "needs --base"),
        (["--gates", "/nonexistent/gates.yaml"], "does not exist"),
        (["--split", "nosuch"], "no 'nosuch' split"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    dataset: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    base = [] if "--dataset" in args else ["--dataset", str(dataset)]
    code, output = run_eval(*base, *args, "--out", tmp_path / "out", "--no-progress")
    assert code == 2, output
    assert message in " ".join(output.split())
    assert not (tmp_path / "out" / "report.json").exists()


def test_an_unknown_model_on_the_endpoint_exits_2(dataset: Path, upstream: str, tmp_path: Path) -> None:
    code, output = run_eval(
        "--dataset", dataset, "--endpoint", upstream, "--base", "base-model", "--adapter", "ghost@v1",
        "--out", tmp_path / "out", "--no-progress",
    )  # fmt: skip
    assert code == 2
    assert "does not serve 'ghost@v1'" in " ".join(output.split())


def test_ab_sample_queues_pairs_and_judgments_drive_the_human_gates(
    dataset: Path, upstream: str, good_run: tuple[int, Path], tmp_path: Path
) -> None:
    from database.engine import create_db_engine, make_session_factory
    from feedback.ab import next_pair, submit_judgment
    from feedback.reviewers import add_reviewer

    _, out = good_run
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert len(report["ab_queued"]["good@v1"]) == 4
    assert report["ab"]["good@v1"]["judgments"] == 0
    database = out.parent / "ab.db"
    engine = create_db_engine(f"sqlite:///{database}")
    sessions = make_session_factory(engine)
    for name in ("ayu", "budi"):
        reviewer, _ = add_reviewer(sessions, name)
        while shown := next_pair(sessions, reviewer.id, overlap=2, lease=timedelta(hours=1)):
            tuned_side = "A" if len(shown.answer_a) >= len(shown.answer_b) else "B"
            other = "B" if tuned_side == "A" else "A"
            ratings = {c: {tuned_side: 9, other: 5} for c in ("naturalness", "accuracy", "completeness")}
            submit_judgment(
                sessions, reviewer_id=reviewer.id, pair_id=shown.pair_id, choice=tuned_side, ratings=ratings
            )
    engine.dispose()
    gates_file = tmp_path / "gates.yaml"
    gates_file.write_text("human_preference: {min_judgments: 8}\nnaturalness: {min_judgments: 8}\n")
    code, report = http_eval(
        dataset, upstream, "good@v1", tmp_path / "again", "--gates", gates_file, "--limit", "4",
        "--database-url", f"sqlite:///{database}",
    )  # fmt: skip
    assert code == 0
    summary = report["ab"]["good@v1"]
    assert summary["judgments"] == 8 and summary["win_rate"] == 1.0
    assert gate(report, "human_preference")["status"] == "pass"
    assert gate(report, "naturalness")["value"] == 9.0
    assert gate(report, "naturalness")["status"] == "pass"
