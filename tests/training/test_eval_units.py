"""The evaluation's building blocks: metrics, fact precision, declining, consistency, gates, A/B mix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from knowledge.paths import GENERAL_FILE, SEED_FILE
from training.evaluation.ab import pick_mix
from training.evaluation.behaviour import declines, register_fits, repetitive
from training.evaluation.consistency import consistency
from training.evaluation.data import UNKNOWN_FILE, EvalInputError, EvalItem, general_holdout, spread
from training.evaluation.facts import RegistryCheck, error_records
from training.evaluation.gates import evaluate_gates, load_gates
from training.evaluation.metrics import corpus_scores, exact_match, mean_interval, normalize, ratio_interval


def item(index: int, **fields: object) -> EvalItem:
    values: dict[str, object] = {
        "id": f"Q{index}",
        "set": "test",
        "messages": (("user", f"pertanyaan {index}"),),
        "reference": "jawaban",
    }
    values.update(fields)
    return EvalItem(**values)  # type: ignore[arg-type]


def test_exact_match_ignores_case_punctuation_and_spacing() -> None:
    assert normalize("  Halo,   APA kabar?! ") == "halo apa kabar"
    assert exact_match("KITAS berlaku 1 tahun.", "kitas  berlaku 1 tahun") == 1.0
    assert exact_match("KITAS berlaku 2 tahun.", "kitas berlaku 1 tahun") == 0.0


def test_intervals_contain_the_value_and_collapse_on_constant_data() -> None:
    varied = mean_interval([0, 1, 1, 0, 1, 1, 0, 1], resamples=200)
    assert varied["low"] <= varied["value"] <= varied["high"]
    assert varied["low"] < varied["high"]
    assert mean_interval([1.0, 1.0, 1.0]) == {"value": 1.0, "low": 1.0, "high": 1.0}
    assert ratio_interval([0, 0], [0, 0])["value"] is None


def test_paired_bootstrap_gives_the_adapter_a_p_value_against_the_base() -> None:
    references = ["KITAS investor berlaku dua tahun dan bisa diperpanjang", "PPN sebesar sebelas persen"] * 5
    base = ["visa berlaku", "pajak"] * 5
    scores = corpus_scores([("base", base), ("tuned", references)], references, resamples=100)
    assert scores["base"]["chrf"]["p_value"] is None
    assert scores["tuned"]["chrf"]["value"] == pytest.approx(100.0)
    assert scores["tuned"]["chrf"]["p_value"] < 0.05
    assert scores["tuned"]["bleu"]["value"] > scores["base"]["bleu"]["value"]


def test_a_contradicted_verified_figure_is_a_critical_error_with_its_fact() -> None:
    registry = RegistryCheck()
    question = "Berapa denda overstay?"
    check = registry.check(question, "Denda overstay Rp300.000 per hari.")
    assert (check.checked, check.contradicted) == (1, 1)
    [row] = error_records("tuned", item(1, messages=(("user", question),)), check, critical=True)
    assert row["fact_id"] == "overstay_fine"
    assert row["stated"] == "Rp300.000"
    assert row["registry_value"].replace(".", "").startswith("Rp1000000") or "1" in row["registry_value"]
    right = registry.check(question, "Denda overstay Rp1.000.000 per hari.")
    assert (right.checked, right.contradicted) == (1, 0)


def test_an_ordinary_pt_figure_for_a_pt_pma_lists_only_the_verified_facts_as_critical() -> None:
    registry = RegistryCheck()
    check = registry.check(
        "Berapa modal PT PMA?", "Modal disetor PT PMA menurut aturan 2021 minimal Rp50 juta."
    )
    question = item(1, messages=(("user", "Berapa modal PT PMA?"),))
    critical = error_records("tuned", question, check, critical=True)
    assert {row["fact_id"] for row in critical} == {"pt_pma_paid_up_capital_2021"}
    assert all(row["fact_status"] == "verified" for row in critical)


def test_the_unknown_set_references_decline_and_golden_domain_answers_do_not() -> None:
    rows = [
        json.loads(line) for line in UNKNOWN_FILE.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    assert len(rows) >= 15
    assert all(declines(row["answer"]) for row in rows)
    assert not any(declines(row["question"]) for row in rows)
    seeds = SEED_FILE.read_text(encoding="utf-8").splitlines()
    assert not any(declines(json.loads(line)["golden_answer"]) for line in seeds)
    assert not declines("Tarif PPN adalah 11% sejak April 2022, dasarnya UU HPP.")


def test_register_fit_wants_particles_in_casual_answers_and_none_in_formal_ones() -> None:
    assert register_fits("casual", "Bisa banget, nih. Syaratnya paspor ya.") is True
    assert register_fits("casual", "Syaratnya adalah paspor yang masih berlaku.") is False
    assert register_fits("formal", "Gimana ya, syaratnya gampang kok.") is False
    assert register_fits("formal", "Syaratnya adalah paspor yang masih berlaku.") is True
    assert register_fits(None, "apa saja") is None


def test_consistency_counts_variation_pairs_that_state_the_same_key_facts() -> None:
    registry = RegistryCheck()
    facts = registry.by_id()
    questions = [
        item(i, seed_id="S1", facts=("overstay_fine",), messages=(("user", "Denda overstay?"),))
        for i in range(3)
    ]
    same = ["Denda overstay Rp1.000.000 per hari."] * 3
    checks = [registry.check(q.question, a) for q, a in zip(questions, same, strict=True)]
    assert consistency(questions, same, checks, facts, 100)["value"] == 1.0
    mixed = ["Denda overstay Rp1.000.000 per hari.", "Denda overstay Rp300.000 per hari.", "Ada dendanya."]
    checks = [registry.check(q.question, a) for q, a in zip(questions, mixed, strict=True)]
    assert consistency(questions, mixed, checks, facts, 100)["value"] == 0.0


def test_spread_takes_questions_two_at_a_time_round_robin_over_seeds() -> None:
    items = [item(i, seed_id=f"S{i % 3}") for i in range(12)]
    picked = spread(items, 8)
    assert [question.seed_id for question in picked] == ["S0", "S0", "S1", "S1", "S2", "S2", "S0", "S0"]


def test_the_general_holdout_is_a_stable_fifth_of_the_general_set() -> None:
    first, second = general_holdout(), general_holdout()
    assert [row.id for row in first] == [row.id for row in second]
    total = len(GENERAL_FILE.read_text(encoding="utf-8").splitlines())
    assert 0.1 * total < len(first) < 0.3 * total


def test_the_ab_mix_covers_every_register_and_complexity() -> None:
    items = [
        item(i, register=register, category=category)
        for i, (register, category) in enumerate(
            [(r, c) for r in ("casual", "business", "formal") for c in ("tax", "multi_domain")] * 4
        )
    ]
    picked = [items[position] for position in pick_mix(items, 6)]
    assert {(q.register, q.complexity) for q in picked} == {
        (r, c) for r in ("casual", "business", "formal") for c in ("simple", "multi-part")
    }


def variants(base: dict[str, float], tuned: dict[str, float], **extra: object) -> dict[str, dict]:
    def block(values: dict[str, float]) -> dict:
        metric = {name: {"value": value} for name, value in values.items()}
        return {
            "test": {
                **metric,
                "perplexity": {"value": values.get("ppl")},
                "consistency": {"value": 0.9},
                "register_fit": {"value": 0.9},
            },
            "general": {"n": 5, "chrf": {"value": values["general"]}},
            "unknown": {"no_hallucination": {"value": 0.9}},
            "critical_errors": 0,
        }

    result = {"base": block(base), "z@v1": block(tuned)}
    result["z@v1"].update(extra)
    return result


def test_gates_pass_fail_and_skip_with_their_reasons(tmp_path: Path) -> None:
    config = load_gates()
    good = variants({"chrf": 40, "general": 50, "ppl": 10}, {"chrf": 50, "general": 49, "ppl": 9})
    gates = {gate["name"]: gate for gate in evaluate_gates(config, good, {})}
    assert gates["accuracy_improvement"]["status"] == "pass"
    assert gates["accuracy_improvement"]["value"] == pytest.approx(0.25)
    assert gates["general_regression"]["status"] == "pass"
    assert gates["perplexity"]["status"] == "pass"
    assert gates["human_preference"]["status"] == "skipped"
    assert gates["no_hallucination"]["detail"] == "disabled in the gates file"
    bad = variants({"chrf": 40, "general": 50}, {"chrf": 45, "general": 40}, critical_errors=2)
    gates = {gate["name"]: gate for gate in evaluate_gates(config, bad, {})}
    assert gates["accuracy_improvement"]["status"] == "fail"
    assert gates["general_regression"]["status"] == "fail"
    assert gates["critical_errors"]["status"] == "fail"
    assert gates["perplexity"]["status"] == "skipped"
    few = {"z@v1": {"judgments": 3, "wins": 3, "losses": 0, "ties": 0, "win_rate": 1.0}}
    gates = {gate["name"]: gate for gate in evaluate_gates(config, good, few)}
    assert gates["human_preference"]["status"] == "skipped"
    assert gates["human_preference"]["detail"] == "3 A/B judgments, 30 needed"
    custom = tmp_path / "gates.yaml"
    custom.write_text("human_preference: {min_judgments: 3}\nnaturalness: {min_judgments: 3}\n")
    summary = {**few["z@v1"], "mean_ratings": {"tuned": {"naturalness": 7.5}}}
    gates = {gate["name"]: gate for gate in evaluate_gates(load_gates(custom), good, {"z@v1": summary})}
    assert gates["human_preference"]["status"] == "pass"
    assert gates["naturalness"]["status"] == "fail"


@pytest.mark.parametrize(
    "text", ["nonsense: {min: 1}\n", "critical_errors: 3\n", "critical_errors: {maximum: 1}\n", "[1, 2\n"]
)
def test_a_bad_gates_file_is_bad_input(tmp_path: Path, text: str) -> None:
    path = tmp_path / "gates.yaml"
    path.write_text(text)
    with pytest.raises(EvalInputError):
        load_gates(path)


def test_looping_answers_are_flagged_and_golden_answers_are_not() -> None:
    assert repetitive("Bisa, dan, dan, dan biar, dan biar, dan, dan, dan, dan Visa, dan, dan, dan, dan")
    assert not repetitive("Perlu. Kalau Anda menerima penghasilan di Indonesia, Anda punya kewajiban pajak.")
    seeds = SEED_FILE.read_text(encoding="utf-8").splitlines()
    assert not any(repetitive(json.loads(line)["golden_answer"]) for line in seeds)


def test_a_perplexity_gate_counts_a_fall_as_the_gain() -> None:
    from training.evaluation.gates import evaluate_gates, load_gates

    def variant(label: str, test: float, general: float, corrected: float) -> dict:  # type: ignore[type-arg]
        def block(value: float) -> dict:  # type: ignore[type-arg]
            return {"n": 5, "perplexity": {"value": value}, "chrf": {"value": 10.0}}

        return {
            "label": label,
            "test": {**block(test), "consistency": {"value": 1.0}, "register_fit": {"value": None}},
            "general": block(general),
            "corrections": {**block(corrected), "n": 2},
            "unknown": {"no_hallucination": {"value": None}},
            "critical_errors": 0,
        }

    from training.evaluation.gates import RETRAIN_GATES

    config = load_gates(RETRAIN_GATES)
    learned = {"base": variant("baseline p@v1", 40.0, 50.0, 80.0), "c@v2": variant("c@v2", 40.0, 51.0, 60.0)}
    gates = {g["name"]: g for g in evaluate_gates(config, learned, {})}
    assert gates["corrections"]["status"] == "pass" and gates["corrections"]["value"] == 0.25
    assert gates["general_regression"]["status"] == "pass" and gates["general_regression"]["value"] == -0.02
    forgot = {"base": variant("baseline p@v1", 40.0, 50.0, 80.0), "c@v2": variant("c@v2", 44.0, 60.0, 79.0)}
    failed = {g["name"] for g in evaluate_gates(config, forgot, {}) if g["status"] == "fail"}
    assert failed == {"corrections", "general_regression", "accuracy_improvement"}
