"""Variations per register from the offline generator, tone-matched golden answers, synthetic questions."""

from __future__ import annotations

from pathlib import Path

import pytest

from knowledge.quantities import find_quantities
from knowledge.records import REGISTERS
from knowledge.register import adapt_answer, answer_register_problem, question_register_problem
from training.dataset.build import DEFAULT_SEED
from training.dataset.generator import Generator
from training.dataset.seed_bank import SeedQuestion, load_seed_bank
from training.dataset.similarity import normalize
from training.dataset.synthetic import synthetic_pairs
from training.dataset.variations import seed_pairs


@pytest.fixture(scope="module")
def seeds() -> list[SeedQuestion]:
    return load_seed_bank(DEFAULT_SEED)


def test_every_seed_gets_distinct_register_true_variations_linked_to_it(seeds: list[SeedQuestion]) -> None:
    for seed in seeds:
        pairs = seed_pairs(seed, Generator(), per_register=5)
        variations = [pair for pair in pairs if pair.source == "variation"]
        assert 10 <= len(variations) <= 20
        assert {pair.register for pair in variations} == set(REGISTERS)
        assert len({normalize(pair.question) for pair in pairs}) == len(pairs)
        for pair in variations:
            assert pair.seed_id == seed.id and pair.category == seed.category
            problem = question_register_problem(pair.register, pair.question)
            assert problem is None or (pair.extra["generator"] == "hand" and problem[0] == "warning"), (
                pair.question
            )


def test_generation_is_reproducible(seeds: list[SeedQuestion]) -> None:
    first = seed_pairs(seeds[3], Generator(), per_register=6)
    again = seed_pairs(seeds[3], Generator(), per_register=6)
    assert [pair.question for pair in first] == [pair.question for pair in again]


def test_answers_move_to_the_question_register_without_touching_figures(seeds: list[SeedQuestion]) -> None:
    for seed in seeds:
        for register in REGISTERS:
            adapted = adapt_answer(seed.golden_answer, register)
            assert [q.text for q in find_quantities(adapted)] == [
                q.text for q in find_quantities(seed.golden_answer)
            ]
            if register == "formal":
                assert answer_register_problem("formal", adapted) is None, adapted


def test_casual_answers_get_a_particle_and_formal_ones_lose_slang() -> None:
    casual = "Bisa banget, nih. Modal PT PMA gak perlu disetor sekaligus kok, cukup sebagian aja."
    expected = "Sangat bisa. Modal PT PMA tidak perlu disetor sekaligus, cukup sebagian saja."
    assert adapt_answer(casual, "formal") == expected
    formal = "Modal disetor dapat dilakukan secara bertahap sesuai ketentuan."
    assert "ya" in adapt_answer(formal, "casual").split(".")[0]


def test_synthetic_questions_carry_persona_and_stay_unvalidated(seeds: list[SeedQuestion]) -> None:
    seed = seeds[0]
    pairs = synthetic_pairs(seed, seed_pairs(seed, Generator(), 5), Generator(), count=3)
    assert [pair.extra["persona"] for pair in pairs] == ["investor", "entrepreneur", "employee"]
    for pair in pairs:
        assert pair.source == "synthetic" and pair.validated is False and pair.seed_id == seed.id
        assert question_register_problem(pair.register, pair.question) is None


def test_seed_bank_errors_name_the_line(tmp_path: Path) -> None:
    from training.dataset.files import DatasetInputError

    lines = DEFAULT_SEED.read_text(encoding="utf-8").splitlines()[:3]
    lines[2] = lines[2].replace('"category": "immigration"', '"category": "visas"')
    path = tmp_path / "questions.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DatasetInputError) as error:
        load_seed_bank(path)
    assert error.value.line == 3 and "unknown category 'visas'" in error.value.message
