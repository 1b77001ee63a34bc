"""`zantara train` on the tiny demo model on CPU: learning, early stopping, resume, output, backends,
presets fitted to the model's size, continuing a parent adapter, registration."""

from __future__ import annotations

import json
import math
import shutil
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
from training.demo.data import GENERAL_FILE, chat, load_seed, read_jsonl
from training.demo.model import answer_loss, generate_answer
from training.evaluation.data import general_holdout
from training.train.backends import BackendError, Environment, select_backend
from training.train.cli import train as train_command
from training.train.config import PRESETS, load_config, model_scale, preset_for, read_parent
from training.train.trainer import TrainResult, default_output_dir, mix_general, train

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


LLAMA_8B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
}


def test_presets_keep_their_values_for_an_8b_model_and_scale_up_for_the_demo(
    tmp_path: Path, demo_base: Path
) -> None:
    big = tmp_path / "llama-8b"
    big.mkdir()
    (big / "config.json").write_text(json.dumps(LLAMA_8B))
    scale = model_scale(str(big))
    assert scale.lr_scale == 1.0 and 8.0e9 < (scale.parameters or 0) < 8.1e9  # Llama 3 8B: 8.03B
    for pairs, preset in ((500, "conservative"), (3_000, "balanced")):
        config = load_config(dataset=Path("d"), base_model=str(big)).resolve(pairs)
        assert (config.preset, config.learning_rate, config.lr_scale) == (
            preset,
            PRESETS[preset].learning_rate,
            1.0,
        )
    demo = model_scale(str(demo_base))
    actual = AutoModelForCausalLM.from_pretrained(demo_base).num_parameters()
    assert demo.parameters is not None and abs(demo.parameters - actual) < 0.01 * actual
    assert demo.lr_scale == float(f"{math.sqrt(7e9 / demo.parameters):.2g}") > 10
    resolved = load_config(dataset=Path("d"), base_model=str(demo_base)).resolve(500)
    assert (
        resolved.learning_rate == pytest.approx(2e-5 * demo.lr_scale) and resolved.lr_scale == demo.lr_scale
    )
    assert "parameters" in demo.reason
    explicit = load_config(dataset=Path("d"), base_model=str(demo_base), learning_rate=1e-4).resolve(500)
    assert (explicit.learning_rate, explicit.lr_scale) == (1e-4, None)  # an explicit rate is used as it is
    forced = load_config(dataset=Path("d"), base_model=str(demo_base), lr_scale=1.0).resolve(500)
    assert forced.learning_rate == 2e-5
    unknown = model_scale("nowhere")
    assert (unknown.parameters, unknown.lr_scale) == (None, 1.0)


def test_a_parent_adapter_must_share_the_base_model(
    demo_adapter: Path, demo_base: Path, tmp_path: Path
) -> None:
    parent = read_parent(demo_adapter, str(demo_base))
    assert (parent.key, parent.path) == ("zantara-demo@v1", demo_adapter.resolve())
    adapter_config = json.loads((demo_adapter / "adapter_config.json").read_text())
    assert parent.lora["lora_r"] == adapter_config["r"]
    assert set(parent.lora["target_modules"]) == set(adapter_config["target_modules"])
    copy = tmp_path / "copy"
    shutil.copytree(demo_base, copy)
    assert read_parent(demo_adapter, str(copy)).key == "zantara-demo@v1"  # same weights elsewhere
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}))
    with pytest.raises(ValueError, match="was trained on base model"):
        read_parent(demo_adapter, str(copy))
    with pytest.raises(ValueError, match="was trained on base model"):
        read_parent(demo_adapter, "GoToCompany/llama3-8b-cpt-sahabatai-v1-instruct")
    with pytest.raises(FileNotFoundError, match="not an adapter directory"):
        read_parent(tmp_path, str(demo_base))


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

    from database.models import AdapterVersion, Base

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
    assert (row.status, row.parent_version) == ("candidate", None) and row.created_by
    assert row.path == str((tmp_path / "a").resolve()) and "eval_loss" in row.metrics
    failed = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "b"), "--qlora"])
    assert failed.exit_code == 2 and "CUDA" in failed.output


@pytest.mark.slow
def test_cli_continues_the_parent_adapter_and_registers_its_lineage(
    seed_dataset: Path, demo_base: Path, demo_adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from database.models import AdapterVersion, Base

    monkeypatch.setenv("USER", "ayu")
    database_url = f"sqlite:///{tmp_path / 'zantara.db'}"
    engine = create_engine(database_url)
    Base.metadata.create_all(engine)
    app = typer.Typer()
    app.command()(train_command)
    app.command("noop")(lambda: None)
    args = [
        "train", "--dataset", str(seed_dataset), "--base-model", str(demo_base),
        "--out", str(tmp_path / "v2"), "--name", "zantara-demo", "--version", "v2",
        "--init-adapter", str(demo_adapter), "--max-steps", "2",
        "--eval-steps", "1", "--batch-size", "4", "--grad-accum", "1", "--database-url", database_url,
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "parent zantara-demo@v1" in result.output
    meta = json.loads((tmp_path / "v2" / "zantara.json").read_text())
    assert meta["parent"] == {
        "name": "zantara-demo",
        "version": "v1",
        "key": "zantara-demo@v1",
        "path": str(demo_adapter.resolve()),
    }
    assert meta["config"]["init_adapter"] == str(demo_adapter)
    assert meta["config"]["scale"]["lr_scale"] == meta["config"]["lr_scale"] > 1
    assert meta["created_by"] == "ayu"
    metrics = meta["metrics"]
    # two small steps from a fresh LoRA could never start this far below the base: the parent's weights
    assert metrics["eval_loss_parent"] < metrics["eval_loss_base"] - 1.0
    assert metrics["eval_loss"] < metrics["eval_loss_base"] - 1.0
    parent_weights = load_file(str(demo_adapter / "adapter_model.safetensors"))
    child_weights = load_file(str(tmp_path / "v2" / "adapter_model.safetensors"))
    assert set(child_weights) == set(parent_weights)
    assert any(not torch.equal(child_weights[key], parent_weights[key]) for key in parent_weights)
    with Session(engine) as session:
        row = session.scalars(select(AdapterVersion)).one()
    assert (row.name, row.version, row.parent_version, row.status) == (
        "zantara-demo",
        "v2",
        "v1",
        "candidate",
    )
    assert row.created_by == "ayu" and row.metrics["eval_loss_parent"] == metrics["eval_loss_parent"]
    other = CliRunner().invoke(
        app, [*args[:-2], "--base-model", "GoToCompany/llama3-8b-cpt-sahabatai-v1-instruct"]
    )
    assert other.exit_code == 2 and "was trained on base model" in " ".join(other.output.split())
