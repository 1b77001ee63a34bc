"""`zantara train` on the tiny demo model on CPU: learning, early stopping, resume, output, backends."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import typer
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from typer.testing import CliRunner

from service.app import create_app
from service.settings import Settings
from tests.conftest import admin_headers, running
from training.backends import BackendError, Environment, select_backend
from training.demo_data import GENERAL_FILE, chat, load_seed, read_jsonl
from training.demo_model import answer_loss, generate_answer
from training.evaluation.data import general_holdout
from training.train_cli import train as train_command
from training.train_config import PRESETS, load_config, preset_for
from training.trainer import TrainResult, default_output_dir, mix_general, train

FAST: dict[str, Any] = {
    "max_length": 160,
    "batch_size": 4,
    "grad_accum": 1,
    "learning_rate": 3e-3,
    "general_ratio": 0.2,
}


def write_dataset(
    root: Path, train_pairs: list[tuple[str, str]], validation_pairs: list[tuple[str, str]]
) -> Path:
    """A dataset directory in the `zantara dataset build` format."""
    root.mkdir(parents=True)
    for split, pairs in (
        ("train", train_pairs),
        ("validation", validation_pairs),
        ("test", validation_pairs),
    ):
        lines = [
            json.dumps({"messages": chat(q, a), "meta": {"id": f"{split}-{i}", "source": "seed"}}) + "\n"
            for i, (q, a) in enumerate(pairs)
        ]
        (root / f"{split}.jsonl").write_text("".join(lines), encoding="utf-8")
    counts = {"train": len(train_pairs), "validation": len(validation_pairs)}
    (root / "manifest.json").write_text(json.dumps({"version": "sha256:test", "counts": counts}))
    return root


@pytest.fixture(scope="module")
def seed_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten seed questions: variants for training, one held-out rephrasing each for validation."""
    seeds = load_seed()[::7]
    train_pairs = [(q, s.golden_answer) for s in seeds for q in s.questions[:-1]]
    validation_pairs = [(s.questions[-1], s.golden_answer) for s in seeds]
    return write_dataset(tmp_path_factory.mktemp("data") / "seed", train_pairs, validation_pairs)


@pytest.fixture(scope="module")
def trained(seed_dataset: Path, demo_base: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """One training run: two epochs on the seed dataset, metrics logged as JSON lines."""
    out = tmp_path_factory.mktemp("adapters")
    config = load_config(
        dataset=seed_dataset,
        base_model=str(demo_base),
        output_dir=out / "zantara" / "v1",
        log_jsonl=out / "train.jsonl",
        epochs=2,
        **FAST,
    )
    return train(config)


def test_presets_follow_dataset_size_and_fields_override() -> None:
    assert [preset_for(n) for n in (500, 1_999, 2_000, 5_000, 9_000)] == [
        "conservative",
        "conservative",
        "balanced",
        "balanced",
        "balanced",
    ]
    config = load_config(dataset=Path("d"), base_model="m", learning_rate=1e-4).resolve(pairs=3_000)
    assert (config.preset, config.epochs, config.batch_size, config.grad_accum) == ("balanced", 3, 4, 4)
    assert config.learning_rate == 1e-4
    aggressive = load_config(dataset=Path("d"), base_model="m", preset="aggressive").resolve(pairs=100)
    assert (aggressive.epochs, aggressive.learning_rate) == (PRESETS["aggressive"].epochs, 5e-4)


def test_yaml_config_is_overridden_by_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("dataset: data/v1\nbase_model: base\nepochs: 5\nlora-r: 8\ngeneral_ratio: 0.3\n")
    config = load_config(path, epochs=2, general_ratio=None)
    assert (config.epochs, config.lora_r, config.general_ratio, config.dataset) == (
        2,
        8,
        0.3,
        Path("data/v1"),
    )
    path.write_text("dataset: d\nbase_model: b\nlearning_rat: 1\n")
    with pytest.raises(ValueError, match="learning_rat"):
        load_config(path)
    with pytest.raises(ValueError, match="preset"):
        load_config(dataset=Path("d"), base_model="b", preset="wild")


def test_backend_selection() -> None:
    cpu = Environment(cuda=False, unsloth=False, bitsandbytes=False)
    gpu = Environment(cuda=True, unsloth=True, bitsandbytes=True)
    gpu_plain = Environment(cuda=True, unsloth=False, bitsandbytes=False)
    assert select_backend("auto", qlora=False, env=cpu) == "peft"
    assert select_backend("auto", qlora=True, env=gpu) == "unsloth"
    assert select_backend("auto", qlora=False, env=gpu_plain) == "peft"
    assert select_backend("peft", qlora=True, env=gpu) == "peft"
    with pytest.raises(BackendError, match=r"pip install 'zantara\[gpu\]'"):
        select_backend("unsloth", qlora=False, env=gpu_plain)
    with pytest.raises(BackendError, match=r"pip install 'zantara\[gpu\]'"):
        select_backend("auto", qlora=True, env=gpu_plain)
    with pytest.raises(BackendError, match="CUDA"):
        select_backend("auto", qlora=True, env=cpu)
    with pytest.raises(BackendError, match="CUDA"):
        select_backend("unsloth", qlora=False, env=Environment(cuda=False, unsloth=True, bitsandbytes=True))
    here = Environment.detect()
    assert select_backend("auto", qlora=False, env=here) == (
        "unsloth" if here.cuda and here.unsloth else "peft"
    )


def test_general_chats_make_the_configured_share_of_the_mix() -> None:
    config = load_config(dataset=Path("d"), base_model="b")
    general = mix_general(400, config)
    assert len(general) == 100  # 100 of 500 = 20 %
    assert general[0]["prompt"][0]["role"] == "system" and general[0]["completion"][0]["role"] == "assistant"
    assert mix_general(400, load_config(dataset=Path("d"), base_model="b", general_ratio=0)) == []


def test_the_general_regression_set_is_never_trained_on() -> None:
    held_out = {item.reference for item in general_holdout()}
    trained = {
        row["completion"][0]["content"]
        for row in mix_general(2000, load_config(dataset=Path("d"), base_model="b"))
    }
    assert held_out and trained and not held_out & trained
    assert len(held_out) + len(trained) == len({row["answer"] for row in read_jsonl(GENERAL_FILE)})


def test_default_versions_count_up_and_resume_reuses_the_unfinished_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(dataset=Path("d"), base_model="b", name="demo")
    assert default_output_dir(config) == Path("var/adapters/demo/v1")
    (tmp_path / "var/adapters/demo/v1").mkdir(parents=True)
    (tmp_path / "var/adapters/demo/v1/adapter_config.json").write_text("{}")
    (tmp_path / "var/adapters/demo/v2/checkpoints").mkdir(parents=True)
    assert default_output_dir(config) == Path("var/adapters/demo/v3")
    assert default_output_dir(
        load_config(dataset=Path("d"), base_model="b", name="demo", resume=True)
    ) == Path("var/adapters/demo/v2")


@pytest.mark.slow
def test_training_lowers_the_loss_and_changes_only_the_adapter(trained: TrainResult, demo_base: Path) -> None:
    metrics = trained.metrics
    assert metrics["eval_loss"] < metrics["eval_loss_base"] - 1.0
    assert metrics["eval_history"][-1]["eval_loss"] < metrics["eval_history"][0]["eval_loss"]
    weights = load_file(str(trained.adapter_dir / "adapter_model.safetensors"))
    lora_b = [w for key, w in weights.items() if "lora_B" in key]
    assert len(lora_b) == 4 * 7 and all(w.abs().sum() > 0 for w in lora_b)  # B starts at zero
    base_weights = load_file(str(demo_base / "model.safetensors"))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(demo_base), trained.adapter_dir)
    state = {k.replace(".base_layer", ""): v for k, v in model.get_base_model().state_dict().items()}
    assert all(torch.equal(state[key], value) for key, value in base_weights.items())


@pytest.mark.slow
def test_trained_adapter_answers_training_questions_closer_to_golden(
    trained: TrainResult, demo_base: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(demo_base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(demo_base), trained.adapter_dir)
    pairs = [(s.question, s.golden_answer[:400]) for s in load_seed()[::7]]
    tuned = answer_loss(model, tokenizer, pairs)
    with model.disable_adapter():
        base = answer_loss(model, tokenizer, pairs)
    assert tuned < base - 1.0, (base, tuned)


@pytest.mark.slow
def test_output_directory_metadata_and_jsonl_log(trained: TrainResult, demo_base: Path) -> None:
    out = trained.adapter_dir
    assert {"adapter_config.json", "adapter_model.safetensors", "zantara.json"} <= {
        p.name for p in out.iterdir()
    }
    assert not (out / "checkpoints").exists()
    meta = json.loads((out / "zantara.json").read_text())
    assert meta["name"] == "zantara" and meta["version"] == "v1" and meta["base_model"] == str(demo_base)
    assert meta["dataset"]["version"] == "sha256:test"
    assert meta["config"]["preset"] == "conservative" and meta["config"]["learning_rate"] == 3e-3
    assert meta["hardware"]["device"] == "cpu" and meta["backend"] == "peft"
    assert meta["metrics"]["general_pairs"] == round(meta["metrics"]["train_pairs"] * 0.25)
    assert meta["metrics"]["tokens_per_second"] > 0
    records = [json.loads(line) for line in (out.parent.parent / "train.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in records) and any("eval_loss" in r for r in records)
    assert all({"step", "epoch", "time"} <= set(r) for r in records)


@pytest.mark.slow
async def test_trained_adapter_is_served_as_the_tuned_variant(
    trained: TrainResult, settings_factory: Callable[..., Settings]
) -> None:
    # A running service loads the new adapter without a restart, and the router sends users to it.
    question = {"role": "user", "content": load_seed()[0].question}
    async with running(create_app(settings_factory())) as client:
        key = {"name": "zantara", "version": "v1", "path": str(trained.adapter_dir)}
        loaded = await client.post("/admin/adapters", headers=admin_headers(), json=key)
        assert loaded.status_code == 201, loaded.text
        change = {"percentage": 100, "adapter": "zantara@v1", "reason": "new adapter"}
        assert (await client.put("/admin/rollout", headers=admin_headers(), json=change)).status_code == 200
        served = {}
        for model in ("zantara", "zantara-demo-base"):
            body = {"model": model, "user": "u-1", "messages": [question], "max_tokens": 12, "temperature": 0}
            response = await client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            served[model] = (
                response.headers["X-Zantara-Variant"],
                response.headers.get("X-Zantara-Adapter"),
                response.json()["choices"][0]["message"]["content"],
            )
    assert served["zantara"][:2] == ("tuned", "zantara@v1")
    assert served["zantara-demo-base"][:2] == ("base", None)
    assert served["zantara"][2] != served["zantara-demo-base"][2]


@pytest.mark.slow
def test_early_stopping_triggers_on_a_planted_overfitting_run(demo_base: Path, tmp_path: Path) -> None:
    # Validation asks the training questions but expects the answers the base model gave before
    # training, which are not the training answers. Whatever the build, validation starts at the base's
    # own greedy answers, and the closer the adapter gets to the training answers, the less probability
    # is left for the validation ones: validation loss cannot but rise while training loss falls.
    tokenizer = AutoTokenizer.from_pretrained(demo_base)
    base_model = AutoModelForCausalLM.from_pretrained(demo_base)
    seeds = load_seed()[:4]
    train_pairs = [(s.question, s.golden_answer) for s in seeds]
    validation_pairs = [
        (s.question, generate_answer(base_model, tokenizer, s.question, max_new_tokens=40)) for s in seeds
    ]
    assert all(t[1] != v[1] for t, v in zip(train_pairs, validation_pairs, strict=True))
    dataset = write_dataset(tmp_path / "data", train_pairs, validation_pairs)
    config = load_config(
        dataset=dataset,
        base_model=str(demo_base),
        output_dir=tmp_path / "out",
        log_jsonl=tmp_path / "train.jsonl",
        epochs=40,
        eval_steps=1,
        **{**FAST, "general_ratio": 0, "learning_rate": 1e-2},
    )
    metrics = train(config).metrics
    losses = [e["eval_loss"] for e in metrics["eval_history"]]
    assert metrics["early_stopped"] and metrics["global_step"] < metrics["max_steps"]
    assert losses[-1] > min(losses) and len(losses) - 1 - losses.index(min(losses)) == 3
    assert metrics["eval_loss"] == pytest.approx(min(losses), abs=1e-3)  # the best checkpoint is kept
    assert (
        metrics["best_checkpoint"]
        == f"checkpoint-{metrics['eval_history'][losses.index(min(losses))]['step']}"
    )
    records = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    train_losses = [r["loss"] for r in records if "loss" in r]
    assert train_losses[-1] < train_losses[0], train_losses  # it is overfitting, not diverging


class _Interrupt(TrainerCallback):
    """Stops the process-like run by raising after `at` steps."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.at:
            raise KeyboardInterrupt


class _FirstStep(TrainerCallback):
    def __init__(self) -> None:
        self.first: int | None = None

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.first is None:
            self.first = state.global_step


@pytest.mark.slow
def test_an_interrupted_run_resumes_from_its_last_checkpoint(
    seed_dataset: Path, demo_base: Path, tmp_path: Path
) -> None:
    config = load_config(
        dataset=seed_dataset,
        base_model=str(demo_base),
        output_dir=tmp_path / "out",
        max_steps=8,
        eval_steps=2,
        **FAST,
    )
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[_Interrupt(at=5)])
    assert (tmp_path / "out" / "checkpoints" / "checkpoint-4").is_dir()
    assert not (tmp_path / "out" / "adapter_config.json").exists()
    first = _FirstStep()
    result = train(load_config(**{**config.to_dict(), "resume": True}), callbacks=[first])
    assert result.resumed_from == "checkpoint-4" and first.first == 4
    assert result.metrics["global_step"] == 8


@pytest.mark.slow
def test_cli_trains_merges_and_registers(seed_dataset: Path, demo_base: Path, tmp_path: Path) -> None:
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from feedback.models import AdapterVersion, Base

    database_url = f"sqlite:///{tmp_path / 'zantara.db'}"
    engine = create_engine(database_url)
    Base.metadata.create_all(engine)
    app = typer.Typer()
    app.command()(train_command)
    app.command("noop")(lambda: None)  # a second command keeps `train` a named subcommand
    common = ["train", "--dataset", str(seed_dataset), "--base-model", str(demo_base)]
    args = [*common, "--out", str(tmp_path / "a"), "--version", "v7", "--max-steps", "2", "--eval-steps", "1"]
    result = CliRunner().invoke(app, [*args, "--merge", "--database-url", database_url])
    assert result.exit_code == 0, result.output
    assert "adapter zantara@v7" in result.output
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "a" / "merged")
    assert merged.num_parameters() == AutoModelForCausalLM.from_pretrained(demo_base).num_parameters()
    with Session(engine) as session:
        row = session.scalars(select(AdapterVersion)).one()
    assert (row.name, row.version, row.dataset_version) == ("zantara", "v7", "sha256:test")
    assert row.path == str((tmp_path / "a").resolve()) and "eval_loss" in row.metrics
    failed = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "b"), "--qlora"])
    assert failed.exit_code == 2 and "CUDA" in failed.output
