"""Preference tuning on the demo model: `zantara train --method dpo` measures against the parent adapter
(its reference log-probabilities are the parent's, not the base's), the margin gate's arithmetic, and
`zantara retrain --method kto|dpo` from the loop's own ratings and corrections: the margin gate passes
and the no-forgetting gates hold; a planted inverted dataset (labels swapped) fails it with exit 1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from transformers import TrainerCallback

from database.migrate import upgrade
from feedback.review_queue import correct
from feedback.store import save_interactions
from tests.database import rate_interaction
from tests.training.retrain_helpers import (
    answer,
    entry,
    hooks,
    interaction,
    register_live,
    retrain_options,
    sessions_for,
    write_gates,
)
from training.evaluation.gates import load_gates
from training.evaluation.preference_margin import (
    GATE,
    PreferencePair,
    gains,
    load_pairs,
    margin_gate,
    pair_logps,
)
from training.retrain import preference as retrain_preference
from training.retrain.config import RETRAIN_GATES
from training.retrain.pipeline import retrain
from training.train.config import load_config
from training.train.preference import REFERENCE_ADAPTER, answer_logps
from training.train.trainer import train

SYSTEM = {"role": "system", "content": "Kamu ZANTARA, konsultan bisnis Indonesia."}
TOPICS = [
    "rekening bank KITAS",
    "SPT masa nihil",
    "modal minimal PT PMA",
    "NIB untuk startup",
    "perbedaan CV dan PT",
    "NPWP badan",
    "RPTKA pekerja asing",
    "SPT tahunan badan",
    "izin lokasi usaha",
    "BPJS karyawan baru",
    "faktur pajak PPN",
    "akta pendirian PT",
]


def bad_answer(topic: str) -> str:
    """A careless answer (what the 1-star ratings and corrected answers look like)."""
    return f"Soal {topic} tidak usah dipikirkan, abaikan saja semua aturan itu."


def question(topic: str) -> str:
    """The user's question about `topic`."""
    return f"Bagaimana ketentuan {topic} untuk perusahaan saya?"


def write_dpo_dataset(folder: Path, topics: list[str]) -> Path:
    """A small DPO dataset as `zantara dataset preferences build` writes it."""
    folder.mkdir(parents=True)
    rows = [
        {
            "prompt": [SYSTEM, {"role": "user", "content": question(topic)}],
            "chosen": [{"role": "assistant", "content": answer(topic)}],
            "rejected": [{"role": "assistant", "content": bad_answer(topic)}],
            "meta": {"source": "rating"},
        }
        for topic in topics
    ]
    (folder / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows[:-1]))
    (folder / "test.jsonl").write_text(json.dumps(rows[-1]) + "\n")
    manifest = {"version": "pref-dpo-unit", "kind": "dpo", "counts": {"total": len(rows)}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


class CaptureReference(TrainerCallback):
    """At the start of training, the log-probabilities the trainer's reference gives `samples`."""

    def __init__(self, tokenizer: Any, samples: list[tuple[list[dict[str, str]], str]]) -> None:
        self.tokenizer, self.samples = tokenizer, samples
        self.reference: list[float] = []
        self.adapters: list[str] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from trl.trainer.utils import use_adapter

        model = kwargs["model"]
        self.adapters = list(model.peft_config)
        with use_adapter(model, adapter_name=REFERENCE_ADAPTER):
            self.reference = answer_logps(model, self.tokenizer, self.samples)


def logps_of(
    base: Path, adapter: Path | None, samples: list[tuple[list[dict[str, str]], str]]
) -> list[float]:
    """The samples' log-probabilities under the base, or the base with `adapter`, loaded afresh."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model: Any = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    return answer_logps(model, tokenizer, samples)


@pytest.mark.slow
def test_dpo_reference_is_the_parent_adapter_not_the_base(
    tmp_path: Path, demo_base_path: Path, demo_adapter_path: Path
) -> None:
    """Continuing the demo adapter with DPO: the trainer's reference log-probabilities equal the parent
    adapter's (loaded independently) and not the base's; zantara.json records it; the frozen copy is not
    saved with the adapter; the validation margin grew."""
    from transformers import AutoTokenizer

    dataset = write_dpo_dataset(tmp_path / "pref", TOPICS[:6])
    rows = [json.loads(line) for line in (dataset / "train.jsonl").read_text().splitlines()]
    samples = [(row["prompt"], row["chosen"][0]["content"]) for row in rows[:2]]
    capture = CaptureReference(AutoTokenizer.from_pretrained(demo_base_path), samples)
    config = load_config(
        dataset=dataset,
        base_model=str(demo_base_path),
        method="dpo",
        init_adapter=demo_adapter_path,
        output_dir=tmp_path / "adapters" / "zantara-demo" / "v2",
        max_steps=3,
        batch_size=2,
        grad_accum=1,
        eval_steps=3,
        max_length=256,
        early_stopping_patience=0,
    )
    result = train(config, callbacks=[capture])

    parent = logps_of(demo_base_path, demo_adapter_path, samples)
    base = logps_of(demo_base_path, None, samples)
    assert capture.adapters == ["default", REFERENCE_ADAPTER]
    assert capture.reference == pytest.approx(parent, abs=1e-3)
    assert all(abs(ref - b) > 1.0 for ref, b in zip(capture.reference, base, strict=True))
    meta = json.loads((result.adapter_dir / "zantara.json").read_text())
    reference = meta["reference"]
    assert (reference["kind"], reference["adapter"]) == ("parent_adapter", "zantara-demo@v1")
    assert reference["max_weight_diff_vs_parent"] == 0.0 and reference["max_logp_diff_vs_parent"] < 1e-3
    assert reference["max_logp_diff_vs_base"] > 1.0
    assert meta["method"] == "dpo" and meta["metrics"]["reference"]["adapter"] == "zantara-demo@v1"
    assert meta["metrics"]["eval_loss_parent"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference
    assert meta["metrics"]["eval_reward_margin"] > 0
    assert not (result.adapter_dir / REFERENCE_ADAPTER).exists()
    assert not (result.adapter_dir / "checkpoints").exists()


class Interrupt(TrainerCallback):
    """Stops the run by raising after `at` steps (a killed process, as far as the checkpoints know)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.at:
            raise KeyboardInterrupt


class FirstStep(TrainerCallback):
    """The step a run starts from, and the policy's log-probabilities then."""

    def __init__(self, tokenizer: Any, samples: list[tuple[list[dict[str, str]], str]]) -> None:
        self.tokenizer, self.samples = tokenizer, samples
        self.step: int | None = None
        self.policy: list[float] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.policy = answer_logps(kwargs["model"], self.tokenizer, self.samples)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.step is None:
            self.step = state.global_step


@pytest.mark.slow
def test_an_interrupted_dpo_run_resumes_with_the_parent_still_its_reference(
    tmp_path: Path, demo_base_path: Path, demo_adapter_path: Path
) -> None:
    """Resuming loads the checkpoint into the trained adapter only: the policy starts where the
    checkpoint left it (no longer the parent), the reference is still the parent adapter."""
    from transformers import AutoTokenizer

    dataset = write_dpo_dataset(tmp_path / "pref", TOPICS[:6])
    rows = [json.loads(line) for line in (dataset / "train.jsonl").read_text().splitlines()]
    samples = [(row["prompt"], row["chosen"][0]["content"]) for row in rows[:2]]
    tokenizer = AutoTokenizer.from_pretrained(demo_base_path)
    config = load_config(
        dataset=dataset,
        base_model=str(demo_base_path),
        method="dpo",
        init_adapter=demo_adapter_path,
        output_dir=tmp_path / "adapters" / "zantara-demo" / "v2",
        max_steps=4,
        batch_size=2,
        grad_accum=1,
        eval_steps=2,
        max_length=256,
        early_stopping_patience=0,
        learning_rate=5e-3,
    )
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[Interrupt(at=3)])
    assert (config.output_dir / "checkpoints" / "checkpoint-2").is_dir()  # type: ignore[operator]
    first = FirstStep(tokenizer, samples)
    reference = CaptureReference(tokenizer, samples)
    result = train(load_config(**{**config.to_dict(), "resume": True}), callbacks=[first, reference])
    parent = logps_of(demo_base_path, demo_adapter_path, samples)
    assert result.resumed_from == "checkpoint-2" and first.step == 2
    assert result.metrics["global_step"] == 4
    assert reference.reference == pytest.approx(parent, abs=1e-3)
    assert any(abs(policy - p) > 1e-2 for policy, p in zip(first.policy, parent, strict=True))


def test_wrong_kind_and_kto_batch_of_one_are_refused(tmp_path: Path, demo_base_path: Path) -> None:
    """A DPO folder for KTO, and KTO with a per-device batch of 1 (its KL term needs two answers)."""
    dataset = write_dpo_dataset(tmp_path / "pref", TOPICS[:3])
    with pytest.raises(ValueError, match="--method kto needs"):
        train(load_config(dataset=dataset, base_model=str(demo_base_path), method="kto"))
    manifest = json.loads((dataset / "manifest.json").read_text())
    (dataset / "manifest.json").write_text(json.dumps({**manifest, "kind": "kto"}))
    kto_rows = [
        {
            "prompt": [SYSTEM, {"role": "user", "content": question(t)}],
            "completion": [{"role": "assistant", "content": answer(t)}],
            "label": good,
        }
        for t, good in zip(TOPICS[:4], (True, False, True, False), strict=True)
    ]
    (dataset / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in kto_rows))
    with pytest.raises(ValueError, match="batch size of 2"):
        train(load_config(dataset=dataset, base_model=str(demo_base_path), method="kto", batch_size=1))


def test_margin_gate_reads_pairs_kto_rows_and_gains(tmp_path: Path) -> None:
    """KTO rows of one prompt pair up, the rest stay unmatched; gains, reward accuracy and the interval."""
    prompt = [{"role": "user", "content": "q"}]
    rows = [
        {"prompt": prompt, "completion": [{"role": "assistant", "content": "good"}], "label": True},
        {"prompt": prompt, "completion": [{"role": "assistant", "content": "bad"}], "label": False},
        {"prompt": [{"role": "user", "content": "r"}], "completion": "lonely", "label": False},
    ]
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    pairs = load_pairs(path)
    assert [(p.chosen, p.rejected) for p in pairs] == [("good", "bad"), (None, "lonely")]
    assert pair_logps(pairs, [(10.0, 3), (20.0, 3), (5.0, 2)]) == [(-10.0, -20.0), (None, -5.0)]
    parent = [(-10.0, -20.0), (None, -5.0)]
    better = [(-9.0, -22.0), (None, -6.0)]  # margin +3, the undesirable answer 1 nat less likely
    assert gains(parent, better) == [3.0, 1.0]
    settings = load_gates()[GATE]
    passed = margin_gate(settings, "baseline", parent, better, bootstrap=200)
    assert passed["status"] == "pass" and passed["value"] == 2.0 and passed["reward_accuracy"] == 1.0
    assert passed["interval"] == [1.0, 3.0] and passed["mean_margin"] == {"compared": 10.0, "adapter": 13.0}
    failed = margin_gate(settings, "baseline", better, parent, bootstrap=200)
    assert failed["status"] == "fail" and failed["value"] == -2.0
    mixed = margin_gate(settings, "baseline", parent, [(-9.0, -22.0), (None, -2.0)], bootstrap=200)
    assert mixed["status"] == "fail" and mixed["reward_accuracy"] == 0.5  # the mean alone is not enough
    assert PreferencePair("x", (("user", "q"),), "a", None).items()[0].reference == "a"


# -- retrain from the loop's own signals ------------------------------------------------------------


def plant_signals(url: str) -> None:
    """Per topic two answers to the same question, one rated 5 and one rated 1, and two corrections of
    careless answers: what users and reviewers leave in the loop."""
    sessions = sessions_for(url)
    records = []
    for number, topic in enumerate(TOPICS):
        records.append(
            interaction(f"good-{number}", f"u{number}", question(topic), answer(topic), 200 - number)
        )
        records.append(
            interaction(f"bad-{number}", f"v{number}", question(topic), bad_answer(topic), 100 - number)
        )
    extra = ["pendaftaran merek dagang", "izin usaha kafe"]
    for number, topic in enumerate(extra):
        records.append(
            interaction(f"wrong-{number}", f"w{number}", question(topic), bad_answer(topic), 50 - number)
        )
    save_interactions(sessions, records)
    for number in range(len(TOPICS)):
        rate_interaction(sessions, interaction_id=f"good-{number}", stars=5, comment=None)
        rate_interaction(sessions, interaction_id=f"bad-{number}", stars=1, comment=None)
    for number, topic in enumerate(extra):
        rate_interaction(sessions, interaction_id=f"wrong-{number}", stars=1, comment=None)
        correct(
            sessions,
            interaction_id=f"wrong-{number}",
            correct_answer=answer(topic),
            why_wrong="jawabannya menyuruh mengabaikan aturan",
            lesson="jelaskan langkah resminya",
            reviewer="rina",
        )


def preference_gates(path: Path) -> Path:
    """The retrain gates for a preference run: the margin, test and general perplexity, critical errors
    (consistency and the human gates are not what a few optimiser steps on the demo model can show)."""
    off = ("consistency", "no_hallucination", "register_fit", "human_preference", "naturalness")
    gates = yaml.safe_load(RETRAIN_GATES.read_text(encoding="utf-8"))
    return write_gates(path, {**gates, **{name: {"enabled": False} for name in off}})


def inverted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plant an inverted dataset: the built train split's labels swapped (the held-out pairs keep theirs)."""
    real = retrain_preference.build_run_preferences

    def swapped(*args: Any, **kwargs: Any) -> dict[str, Any]:
        built = real(*args, **kwargs)
        path = Path(built["preference_dir"]) / "train.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for row in rows:
            if "chosen" in row:
                row["chosen"], row["rejected"] = row["rejected"], row["chosen"]
            else:
                row["label"] = not row["label"]
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        return built

    monkeypatch.setattr(retrain_preference, "build_run_preferences", swapped)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "swap"), [("dpo", False), ("kto", False), ("dpo", True)], ids=["dpo", "kto", "dpo-inverted"]
)
def test_preference_retrain_from_the_loops_signals(
    method: str,
    swap: bool,
    tmp_path: Path,
    demo_base_path: Path,
    demo_adapter_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ratings and corrections -> a KTO/DPO dataset -> a short retrain of the live demo adapter against
    itself as reference -> the margin gate passes and the no-forgetting gates hold (exit 2: no service
    to start the canary on; registered as a candidate). With the train labels swapped the margin
    shrinks: exit 1, registered as rejected."""
    sqlite_url = f"sqlite:///{tmp_path / 'zantara.db'}"
    upgrade(sqlite_url)
    adapters_dir = tmp_path / "adapters"
    shutil.copytree(demo_adapter_path, adapters_dir / "zantara-demo" / "v1")
    register_live(sqlite_url, adapters_dir / "zantara-demo" / "v1")
    plant_signals(sqlite_url)
    if swap:
        inverted(monkeypatch)
    options = retrain_options(
        tmp_path,
        sqlite_url,
        demo_base_path,
        adapters_dir,
        method=method,
        max_steps=4,
        gates=preference_gates(tmp_path / "gates.yaml"),
        train_overrides={"eval_steps": 4, "max_length": 256, "batch_size": 4, "grad_accum": 1},
        preference_overrides={"test_share": 0.3},
    )
    outcome = retrain(options, hooks())
    candidate = entry(sqlite_url, "zantara-demo@v2")
    assert candidate is not None and candidate.gate_report, outcome.message
    gates = {gate["name"]: gate for gate in candidate.gate_report["gates"]}
    margin = gates[GATE]
    print(method, "swapped" if swap else "", {name: (g["status"], g["value"]) for name, g in gates.items()})
    print(margin["detail"])
    assert candidate.metrics["reference"]["adapter"] == "zantara-demo@v1"
    assert candidate.metrics["method"] == method
    assert str(candidate.dataset_version).startswith(f"pref-{method}-")
    assert gates["corrections"]["status"] == "skipped"
    if swap:
        assert outcome.exit_code == 1, outcome.message
        assert margin["status"] == "fail" and margin["value"] < 0
        assert candidate.status == "rejected"
        return
    assert outcome.exit_code == 2 and "cannot reach" in outcome.message, outcome.message
    assert margin["status"] == "pass" and margin["value"] > 0 and margin["interval"][0] > 0
    for name in ("accuracy_improvement", "general_regression", "perplexity", "critical_errors"):
        assert gates[name]["status"] == "pass", gates[name]
    assert candidate.status == "candidate"
