"""`zantara retrain` on the tiny demo model: nothing new, promotion through a real service, failing gates,
resuming after a crash or an unreachable service, and the lock that keeps two runs apart."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from database.migrate import upgrade
from database.models import Correction
from feedback import registry, retrain_runs
from feedback.records import InteractionRecord
from feedback.review_queue import list_queue
from feedback.store import save_interactions
from knowledge.paths import SEED_FILE
from tests.database import rate_interaction
from tests.served import demo_env, running_server
from tests.training.retrain_helpers import entry, hooks, retrain_options, sessions_for, write_gates
from training.evaluation.gates import GATES
from training.retrain.config import STEPS, RetrainOptions
from training.retrain.focus import write_focus_view
from training.retrain.pipeline import Pipeline, RetrainOutcome, retrain
from training.retrain.steps import default_name, gate_summary, pick_parent
from zantara.cli import app

TOKEN = "retrain-admin-token-0123456789"
CORRECTIONS = [
    {
        "query": "Apakah pemegang KITAS boleh membuka rekening bank di Indonesia?",
        "model_answer_wrong": "Tidak boleh, hanya WNI yang bisa membuka rekening bank.",
        "correct_answer": "Boleh. Pemegang KITAS dapat membuka rekening bank di Indonesia dengan membawa "
        "paspor, KITAS yang masih berlaku, dan NPWP bila bank memintanya. Setiap bank punya syarat "
        "tambahan, jadi sebaiknya tanyakan dulu ke cabang yang dituju.",
        "why_wrong": "Model mengira rekening bank hanya untuk WNI.",
        "lesson": "Orang asing dengan izin tinggal terbatas boleh membuka rekening bank.",
        "category": "immigration",
    },
    {
        "query": "Kalau PT saya belum ada transaksi, tetap wajib lapor SPT Masa?",
        "model_answer_wrong": "Tidak perlu lapor kalau tidak ada transaksi.",
        "correct_answer": "Tetap wajib. SPT Masa tetap dilaporkan walaupun nihil, karena kewajiban lapor "
        "tidak hilang hanya karena belum ada transaksi. Terlambat lapor bisa kena sanksi administrasi "
        "berupa denda.",
        "why_wrong": "Model mengira SPT nihil tidak perlu dilaporkan.",
        "lesson": "SPT nihil tetap wajib dilaporkan.",
        "category": "tax",
    },
]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite database for one test."""
    url = f"sqlite:///{tmp_path / 'zantara.db'}"
    upgrade(url)
    return url


@pytest.fixture
def adapters_dir(tmp_path: Path, demo_adapter_path: Path) -> Path:
    """A per-test adapters folder holding a copy of the demo adapter (zantara-demo/v1)."""
    root = tmp_path / "adapters"
    shutil.copytree(demo_adapter_path, root / "zantara-demo" / "v1")
    return root


@pytest.fixture
def make_options(tmp_path: Path, demo_base_path: Path, adapters_dir: Path) -> Callable[..., RetrainOptions]:
    """Options with small limits: a 12-question seed bank, 1 training step, 2 questions a set."""

    def make(database_url: str, **changes: Any) -> RetrainOptions:
        return retrain_options(
            tmp_path,
            database_url,
            demo_base_path,
            adapters_dir,
            admin_token=TOKEN,
            load_timeout_s=120,
            train_overrides={"eval_steps": 1, "max_length": 384},
            **changes,
        )

    return make


def plant_corrections(url: str) -> list[int]:
    """Store the reviewers' corrections; returns their ids."""
    with sessions_for(url).begin() as session:
        rows = [Correction(reviewer="ayu", **values) for values in CORRECTIONS]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


SEED = json.loads(SEED_FILE.read_text(encoding="utf-8").splitlines()[0])


def plant_failing_correction(url: str) -> int:
    """A low-rated answer whose reviewer corrected a formally asked question with the seed's own
    casual golden answer (the dataset's `tone` check fails it); returns the correction's id."""
    sessions = sessions_for(url)
    question = "Bagaimanakah prosedur pengajuan izin tinggal terbatas bagi penanam modal asing?"
    save_interactions(
        sessions,
        [
            InteractionRecord(
                id="chatcmpl-casual",
                user_hash="u",
                model_requested="zantara",
                routed=True,
                variant="tuned",
                adapter_name="zantara-demo",
                adapter_version="v1",
                messages=[{"role": "user", "content": question}],
                answer="Tidak ada syarat khusus.",
                finish_reason="stop",
                prompt_tokens=3,
                completion_tokens=3,
                latency_s=0.1,
                ttft_s=None,
                params={},
                streamed=False,
                target="canary",
            )
        ],
    )
    rate_interaction(sessions, interaction_id="chatcmpl-casual", stars=1, comment=None)
    with sessions.begin() as session:
        row = Correction(
            interaction_id="chatcmpl-casual",
            query=question,
            model_answer_wrong="Tidak ada syarat khusus.",
            correct_answer=SEED["golden_answer"],
            why_wrong="Jawaban model kosong.",
            lesson="Sebutkan syarat ITAS investor.",
            category="immigration",
            reviewer="ayu",
        )
        session.add(row)
        session.flush()
        return row.id


def register_parent(url: str, adapters_dir: Path, last_correction_id: int | None = None) -> None:
    """Record the demo adapter as the live version, as a service would have."""
    path = adapters_dir / "zantara-demo" / "v1"
    meta = json.loads((path / "zantara.json").read_text(encoding="utf-8"))
    with sessions_for(url).begin() as session:
        registry.record_version(
            session,
            name="zantara-demo",
            version="v1",
            path=str(path.resolve()),
            base_model=meta["base_model"],
            last_correction_id=last_correction_id,
            status="live",
        )


def runs(url: str) -> list[retrain_runs.RunRecord]:
    """Every retrain run, newest first."""
    with sessions_for(url)() as session:
        return retrain_runs.list_runs(session)


@pytest.fixture
def count_training(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every training the pipeline starts, by adapter version."""
    from training.train import trainer

    started: list[str] = []
    real = trainer.train

    def counted(config: Any, **kwargs: Any) -> Any:
        started.append(str(config.version))
        return real(config, **kwargs)

    monkeypatch.setattr(trainer, "train", counted)
    return started


def test_parent_is_live_then_canary_then_newest_not_rejected(sqlite_url: str, adapters_dir: Path) -> None:
    """The parent and default name rules on registry entries."""
    with sessions_for(sqlite_url).begin() as session:
        for version, status in (("v1", "retired"), ("v2", "live"), ("v3", "canary"), ("v4", "rejected")):
            registry.record_version(
                session, name="zantara", version=version, path=f"/a/{version}", base_model="b", status=status
            )
        registry.record_version(session, name="other", version="v9", path="/o", base_model="b")
        entries = registry.list_versions(session)
    assert default_name("zantara@v2", "zantara@v3", entries) == "zantara"
    assert default_name(None, None, entries) == "other"
    assert default_name(None, None, []) == "zantara"
    assert pick_parent("zantara", "zantara@v2", "zantara@v3", entries).key == "zantara@v2"  # type: ignore[union-attr]
    assert pick_parent("zantara", None, "zantara@v3", entries).key == "zantara@v3"  # type: ignore[union-attr]
    assert pick_parent("zantara", None, "zantara@v4", entries).key == "zantara@v3"  # type: ignore[union-attr]
    assert pick_parent("new", None, None, entries) is None


def _chat_row(question: str, answer: str, source: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ],
        "meta": {"source": source},
    }


def test_focus_view_holds_the_corrections_repeated_and_a_replay_sample(tmp_path: Path) -> None:
    """Continuing a parent trains on the new corrections x repeat plus a seeded replay of the train
    split, validated on a sample of the validation split; the manifest says so and keeps the version."""
    dataset = tmp_path / "ds"
    dataset.mkdir()
    train = [_chat_row(f"q{i}", f"a{i}", "variation") for i in range(40)]
    train.append(_chat_row("Boleh buka rekening?", "Boleh, dengan KITAS.", "correction"))
    for name, rows in (
        ("train", train),
        ("validation", [_chat_row(f"v{i}", f"b{i}", "variation") for i in range(30)]),
        ("test", [_chat_row("SPT nihil?", "Tetap wajib lapor.", "correction")]),
    ):
        (dataset / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (dataset / "manifest.json").write_text(json.dumps({"version": "ds-1", "counts": {}}), encoding="utf-8")
    corrections = tmp_path / "corrections.jsonl"
    asked = [
        {"id": 1, "question": "Boleh buka rekening?", "answer": "Boleh, dengan KITAS."},
        {"id": 2, "question": "SPT nihil?", "answer": "Tetap wajib lapor."},
        {"id": 3, "question": "Dropped by the build?", "answer": "Still trained on."},
    ]
    corrections.write_text("".join(json.dumps(item) + "\n" for item in asked), encoding="utf-8")

    def view() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        note = write_focus_view(dataset, corrections, tmp_path / "view", repeat=3, replay=10, validation=5)
        read = [
            [json.loads(line) for line in (tmp_path / "view" / f"{name}.jsonl").read_text().splitlines()]
            for name in ("train", "validation")
        ]
        assert note["train_rows"] == len(read[0])
        return read[0], read[1], note

    rows, validation, note = view()
    questions = [row["messages"][1]["content"] for row in rows]
    for item in asked:
        assert questions.count(item["question"]) == 3
    replayed = [q for q in questions if q.startswith("q")]
    assert len(replayed) == len(set(replayed)) == 10 and len(rows) == 19
    assert (
        next(r for r in rows if r["messages"][1]["content"] == "SPT nihil?")["meta"]["source"] == "correction"
    )
    assert len(validation) == 5 and all(r["messages"][1]["content"].startswith("v") for r in validation)
    manifest = json.loads((tmp_path / "view" / "manifest.json").read_text())
    assert manifest["version"] == "ds-1"
    assert manifest["training_view"]["corrections"] == 3 and manifest["training_view"]["replay_pairs"] == 10
    assert (note["corrections_repeat"], note["validation_pairs"]) == (3, 5)
    again, _, _ = view()
    assert again == rows  # seeded: a resumed run trains on the same view


def test_gate_summary_keeps_the_candidates_scores() -> None:
    """The registry's gate report keeps the candidate's test fact precision and consistency."""
    test = {"fact_precision": {"value": 0.5}, "consistency": {"value": 0.9}}
    report = {
        "passed": True,
        "baseline": "z@v1",
        "gates": [],
        "variants": {"base": {"test": {}}, "z@v1": {"test": {}}, "z@v2": {"test": test}},
    }
    assert gate_summary(report)["scores"] == {"fact_precision": 0.5, "consistency": 0.9}


def test_nothing_new_exits_3(
    sqlite_url: str, adapters_dir: Path, tmp_path: Path, demo_base_path: Path
) -> None:
    """Corrections the live version already learned from are not new: exit 3, status `nothing`."""
    ids = plant_corrections(sqlite_url)
    register_parent(sqlite_url, adapters_dir, last_correction_id=max(ids))
    result = CliRunner().invoke(
        app,
        [
            "retrain",
            "--database-url",
            sqlite_url,
            "--var-dir",
            str(tmp_path / "var"),
            "--adapters-dir",
            str(adapters_dir),
            "--base-model",
            str(demo_base_path),
            "--no-progress",
        ],
    )
    assert result.exit_code == 3, result.output
    assert "nothing new to learn from" in result.output
    [run] = runs(sqlite_url)
    assert (run.status, run.exit_code, run.parent_version, run.adapter_name) == (
        "nothing",
        3,
        "v1",
        "zantara-demo",
    )
    assert not (adapters_dir / "zantara-demo" / "v2").exists()


def test_crash_after_training_resumes_without_retraining_and_failing_gates_reject(
    sqlite_url: str,
    adapters_dir: Path,
    make_options: Callable[..., RetrainOptions],
    count_training: list[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """A correction failing a dataset check is left out (named with its rule in the log, the run and
    the registry; back in the review queue with the reason) and the run goes on. A crash right after
    training leaves the run resumable at `evaluate`; the rerun trains nothing, keeps the version, and
    gates that cannot pass keep it as `rejected` with its report (exit 1). Corrections stored after the
    run collected its own wait for the next run: the dataset does not read them either."""
    failing = plant_failing_correction(sqlite_url)
    ids = plant_corrections(sqlite_url)
    register_parent(sqlite_url, adapters_dir)
    impossible = write_gates(tmp_path / "impossible.yaml", {"accuracy_improvement": {"min_relative": 1000.0}})
    options = make_options(sqlite_url, gates=impossible)

    def crash(self: Pipeline) -> None:
        raise RuntimeError("simulated crash after training")

    late: list[int] = []
    build_dataset = Pipeline.step_dataset

    def dataset_after_late_corrections(self: Pipeline) -> None:
        late.extend(plant_corrections(sqlite_url))
        build_dataset(self)

    monkeypatch.setattr(Pipeline, "step_evaluate", crash)
    monkeypatch.setattr(Pipeline, "step_dataset", dataset_after_late_corrections)
    with caplog.at_level(logging.WARNING, logger="zantara.retrain"):
        crashed = retrain(options, hooks())
    assert crashed.exit_code == 2 and "simulated crash" in crashed.message
    assert any(f"correction #{failing}" in line and "tone:" in line for line in caplog.messages)
    [run] = runs(sqlite_url)
    assert (run.status, run.step, run.adapter_version) == ("running", "evaluate", "v2")
    [left] = run.details["corrections_left_out"]
    assert (left["correction_id"], left["interaction_id"], left["checks"]) == (
        failing,
        "chatcmpl-casual",
        ["tone"],
    )
    assert "formal question answered with casual words" in left["reason"]
    assert run.details["corrections"] == 2 and min(late) > max(ids)
    manifest = json.loads((Path(run.details["dataset_dir"]) / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["corrections_from_database"] == 3, "the failing one and `ids`, not `late`"
    taught = Path(run.details["corrections_file"]).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in taught] == ids
    (item,) = list_queue(sessions_for(sqlite_url)).items
    assert item.interaction_id == "chatcmpl-casual" and item.rejected is not None
    assert item.rejected.correction_id == failing and "tone: formal question" in item.rejected.reason
    assert (adapters_dir / "zantara-demo" / "v2" / "zantara.json").is_file()
    assert count_training == ["v2"]

    monkeypatch.undo()
    monkeypatch.setattr("training.train.trainer.train", _refuse_training)
    outcome = retrain(options, hooks())
    assert outcome.exit_code == 1, outcome.message
    assert outcome.adapter == "zantara-demo@v2"
    assert f"correction #{failing}" in outcome.message and "review queue" in outcome.message
    [run] = runs(sqlite_url)
    assert (run.id, run.status, run.exit_code) == (crashed.run_id, "rejected", 1)
    rejected = entry(sqlite_url, "zantara-demo@v2")
    assert rejected is not None and rejected.status == "rejected"
    assert rejected.parent_version == "v1" and rejected.last_correction_id == max(ids)
    assert rejected.gate_report["passed"] is False
    assert [c["correction_id"] for c in rejected.gate_report["corrections_left_out"]] == [failing]
    assert any(
        g["name"] == "accuracy_improvement" and g["status"] == "fail" for g in rejected.gate_report["gates"]
    )
    assert rejected.report_path and Path(rejected.report_path).is_file()
    assert not (adapters_dir / "zantara-demo" / "v3").exists()


def _refuse_training(config: Any, **_: Any) -> Any:
    raise AssertionError(f"trained {config.version} again")


def test_promotes_to_canary_through_the_service_and_resumes_when_it_was_unreachable(
    sqlite_url: str,
    adapters_dir: Path,
    make_options: Callable[..., RetrainOptions],
    count_training: list[str],
    demo_dirs: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    """New corrections -> v2 trained from v1, registered with its lineage; the service was down, so
    the run waits at `canary` (exit 2); the rerun asks the real service, which hot-loads v2 as the
    canary (exit 0) without training again; a third run has nothing new (exit 3)."""
    lenient = write_gates(tmp_path / "lenient.yaml", {name: {"enabled": False} for name in GATES})
    env = demo_env(
        tmp_path / "service-var", (demo_dirs[0], adapters_dir), sqlite_url, ZANTARA_ADMIN_TOKEN=TOKEN
    )
    with running_server({**env, "ZANTARA_ROLLOUT_CACHE_S": "0"}) as server:
        ids = plant_corrections(sqlite_url)
        down = retrain(make_options(sqlite_url, gates=lenient), hooks())
        assert down.exit_code == 2 and "cannot reach" in down.message, down.message
        [run] = runs(sqlite_url)
        assert (run.status, run.step, run.parent_version) == ("running", "canary", "v1")
        candidate = entry(sqlite_url, "zantara-demo@v2")
        assert candidate is not None and candidate.status == "candidate"
        assert (candidate.parent_version, candidate.last_correction_id) == ("v1", max(ids))
        assert candidate.dataset_version == run.dataset_version and candidate.gate_report["passed"]
        meta = json.loads((adapters_dir / "zantara-demo" / "v2" / "zantara.json").read_text())
        assert meta["parent"]["version"] == "v1"
        corrections = Path(run.details["corrections_file"]).read_text(encoding="utf-8").splitlines()
        assert [json.loads(line)["question"] for line in corrections] == [c["query"] for c in CORRECTIONS]

        promoted = retrain(make_options(sqlite_url, gates=lenient, services=(server.url,)), hooks())
        assert promoted.exit_code == 0, promoted.message
        assert count_training == ["v2"]
        headers = {"Authorization": f"Bearer {TOKEN}"}
        rollout = httpx.get(f"{server.url}/admin/rollout", headers=headers).json()
        assert (rollout["adapter"], rollout["percentage"]) == ("zantara-demo@v2", 20.0)
        models = [m["id"] for m in httpx.get(f"{server.url}/v1/models").json()["data"]]
        assert "zantara-demo@v2" in models
        canary = entry(sqlite_url, "zantara-demo@v2")
        assert canary is not None and canary.status == "canary"
        [run] = runs(sqlite_url)
        assert (run.status, run.exit_code, run.step) == ("promoted", 0, "done")
        assert set(run.details["seconds"]) == set(STEPS)

        again = retrain(make_options(sqlite_url, gates=lenient, services=(server.url,)), hooks())
        assert again.exit_code == 3, again.message
        assert runs(sqlite_url)[0].parent_version == "v2"


@pytest.fixture
def pg_url(postgres_database_url: str) -> Iterator[str]:
    """A migrated PostgreSQL database."""
    upgrade(postgres_database_url)
    yield postgres_database_url


def test_two_runs_at_once_one_is_refused_and_a_waiting_one_runs_after(
    pg_url: str,
    adapters_dir: Path,
    make_options: Callable[..., RetrainOptions],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two runs start together on PostgreSQL: the lease lets one in, the other exits 2 at once; a run
    with `wait` blocks until the holder is done, then runs (nothing new: exit 3)."""
    register_parent(pg_url, adapters_dir)
    options = make_options(pg_url, lease_ttl_s=3.0)
    gate, inside = threading.Event(), threading.Event()
    real = Pipeline.step_parent

    def held(self: Pipeline) -> None:
        inside.set()
        assert gate.wait(60), "the other run never came back"
        real(self)

    monkeypatch.setattr(Pipeline, "step_parent", held)
    outcomes: dict[str, RetrainOutcome] = {}

    def run(label: str, opts: RetrainOptions, barrier: threading.Barrier | None = None) -> None:
        if barrier is not None:
            barrier.wait()
        outcomes[label] = retrain(opts, hooks())
        if outcomes[label].status == "locked":
            gate.set()

    barrier = threading.Barrier(2)
    racers = [threading.Thread(target=run, args=(label, options, barrier)) for label in ("a", "b")]
    for thread in racers:
        thread.start()
    for thread in racers:
        thread.join(timeout=120)
    assert sorted(o.exit_code for o in outcomes.values()) == [2, 3], outcomes
    [refused] = [o for o in outcomes.values() if o.status == "locked"]
    assert "holds the lock" in refused.message and refused.run_id is None

    gate.clear()
    inside.clear()
    first = threading.Thread(target=run, args=("first", options))
    first.start()
    assert inside.wait(60)
    waiter = threading.Thread(target=run, args=("waiter", replace(options, wait=True)))
    waiter.start()
    waiter.join(timeout=3)
    assert waiter.is_alive(), outcomes.get("waiter")
    gate.set()
    first.join(timeout=120)
    waiter.join(timeout=120)
    assert (outcomes["first"].exit_code, outcomes["waiter"].exit_code) == (3, 3)
    assert [r.status for r in runs(pg_url)] == ["nothing"] * 3
