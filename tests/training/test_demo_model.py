"""The tiny demo model: files, loading, chat template, Indonesian output, and a real adapter effect."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from training.demo.data import chat, load_general, load_seed
from training.demo.model import (
    GENERAL_STRIDE,
    answer_loss,
    ensure_demo_adapter,
    ensure_demo_base,
    generate_answer,
    opening,
)

pytestmark = pytest.mark.slow


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def test_base_directory_holds_model_tokenizer_and_generation_config(demo_base: Path) -> None:
    names = {p.name for p in demo_base.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= names
    tokenizer = AutoTokenizer.from_pretrained(demo_base)
    generation = json.loads((demo_base / "generation_config.json").read_text())
    assert tokenizer.convert_tokens_to_ids("<|eot_id|>") in generation["eos_token_id"]
    assert tokenizer.convert_tokens_to_ids("<|end_of_text|>") in generation["eos_token_id"]
    assert 1_000 < len(tokenizer) <= 4_000


def test_model_size_is_tiny(demo_base: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(demo_base)
    assert 3_000_000 < model.num_parameters() < 8_000_000
    assert model.config.model_type == "llama"


def test_tokenizer_is_byte_level_and_templates_llama3_chats(demo_base: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(demo_base)
    text = "Halo, KITAS ñ 漢字 🙂 Ω"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    prompt: Any = tokenizer.apply_chat_template(
        chat("Apa itu KITAS?"), add_generation_prompt=True, tokenize=False
    )
    assert prompt.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    assert prompt.endswith("Apa itu KITAS?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    enc: Any = tokenizer.apply_chat_template(
        chat("Apa itu KITAS?", "Izin tinggal terbatas."), return_dict=True, return_assistant_tokens_mask=True
    )
    answer = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(answer) == "Izin tinggal terbatas.<|eot_id|>"


def test_base_answers_in_indonesian_and_stops(demo_base: Path) -> None:
    # What any build holds by construction: the base fits the general chats it was trained on far
    # better than chance (uniform over the vocabulary is ln 4000 = 8.3 nats a token), and greedy answers
    # to those chats' questions are mostly Indonesian words and end on their own. One answer of one
    # build can be odd, so the words are pooled over eight questions (0.64 to 0.74 of them were known
    # words in builds with three different seeds).
    tokenizer = AutoTokenizer.from_pretrained(demo_base)
    model = AutoModelForCausalLM.from_pretrained(demo_base)
    general = load_general()
    trained_on = general[::GENERAL_STRIDE][:8]
    assert answer_loss(model, tokenizer, [(q, opening(a)) for q, a in trained_on]) < 4.0
    known = {w for q, a in general for w in _words(q + " " + a)}
    answers = [generate_answer(model, tokenizer, q, max_new_tokens=120) for q, _ in trained_on]
    words = [w for answer in answers for w in _words(answer)]
    assert len(words) >= 5 * len(answers)
    assert sum(w in known for w in words) / len(words) > 0.5, answers
    lengths = [len(tokenizer(answer, add_special_tokens=False)["input_ids"]) for answer in answers]
    assert sum(n < 100 for n in lengths) >= len(answers) // 2, lengths


def test_adapter_directory_is_standard_peft_with_metadata(demo_base: Path, demo_adapter: Path) -> None:
    names = {p.name for p in demo_adapter.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "zantara.json"} <= names
    config = json.loads((demo_adapter / "adapter_config.json").read_text())
    assert config["r"] == 16 and config["lora_alpha"] == 32
    assert set(config["target_modules"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    meta = json.loads((demo_adapter / "zantara.json").read_text())
    assert meta["name"] == "zantara-demo" and meta["version"] == "v1"
    assert meta["base_model"] == str(demo_base)
    assert meta["metrics"]["golden_loss_adapter"] < meta["metrics"]["golden_loss_base"]
    assert meta["dataset"].startswith("seed-bank@")


def test_adapter_answers_domain_questions_closer_to_golden(demo_base: Path, demo_adapter: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(demo_base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(demo_base), demo_adapter)
    seed = load_seed()
    golden = [(s.question, s.golden_answer) for s in seed]
    tuned = answer_loss(model, tokenizer, golden)
    with model.disable_adapter():
        base = answer_loss(model, tokenizer, golden)
    assert tuned < base - 2.0, (base, tuned)

    # Asked in other words (the adapter trained on every rephrasing too), the golden answers stay closer.
    # Greedy answers' chrF is no test of this: on one build in three it favoured the base.
    rephrased = [(s.variants[0], s.golden_answer) for s in seed]
    tuned_rephrased = answer_loss(model, tokenizer, rephrased)
    with model.disable_adapter():
        base_rephrased = answer_loss(model, tokenizer, rephrased)
    assert tuned_rephrased < base_rephrased - 2.0, (base_rephrased, tuned_rephrased)


def test_ensure_is_a_no_op_when_built(demo_base: Path, demo_adapter: Path) -> None:
    before = (demo_base / "model.safetensors").stat().st_mtime_ns
    started = time.perf_counter()
    assert ensure_demo_base(demo_base, progress=False) == demo_base
    assert ensure_demo_adapter(demo_base, demo_adapter, progress=False) == demo_adapter
    assert time.perf_counter() - started < 1.0
    assert (demo_base / "model.safetensors").stat().st_mtime_ns == before
    assert not [p for p in demo_base.parent.iterdir() if p.name.startswith(".")]
