"""Synthetic questions varied by persona (investor, entrepreneur, employee), complexity and register.

With a model endpoint, the generator writes new questions on a seed's topic and drafts their answers
from the seed's golden answer. Offline, a persona's situation is put in front of an existing
variation ("Saya investor dari Singapura ... <question>") and the golden answer is kept. Either way
the pairs carry `source=synthetic` and `validated=false` until the team reviews them.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from knowledge.records import REGISTERS, Pair
from training.dataset.generator import Generator
from training.dataset.seed_bank import SeedQuestion
from training.dataset.variations import answer_in

PERSONAS: tuple[str, ...] = ("investor", "entrepreneur", "employee")
COMPLEXITIES: tuple[str, ...] = ("simple", "detailed", "multi-part")
PERSONA_WORDS: dict[str, str] = {"investor": "investor", "entrepreneur": "pengusaha", "employee": "karyawan"}
FRAMES: dict[tuple[str, str], tuple[str, ...]] = {
    ("investor", "formal"): (
        "Saya adalah investor asing yang berencana menanamkan modal di Indonesia.",
        "Saya mewakili investor dari Jepang yang tengah mengkaji peluang di Indonesia.",
    ),
    ("investor", "business"): (
        "Saya investor dari Singapura dan sedang menjajaki investasi di Indonesia.",
        "Kami investor asing yang sedang menilai beberapa proyek di Jawa Timur.",
    ),
    ("investor", "casual"): (
        "Aku investor asing nih, lagi mau tanam modal di Indonesia.",
        "Aku lagi kepikiran investasi di Indo nih.",
    ),
    ("entrepreneur", "formal"): (
        "Saya seorang pengusaha asing yang sedang merintis usaha di Indonesia.",
        "Saya pengusaha asal Australia yang hendak membuka usaha di Bali.",
    ),
    ("entrepreneur", "business"): (
        "Saya pemilik usaha kecil dan sedang menyiapkan ekspansi ke Bali.",
        "Saya menjalankan bisnis kuliner dan berencana membuka cabang di Jakarta.",
    ),
    ("entrepreneur", "casual"): (
        "Aku lagi rintis usaha kecil-kecilan di Bali nih.",
        "Aku mau buka kafe di Canggu nih.",
    ),
    ("employee", "formal"): (
        "Saya tenaga kerja asing yang baru menerima penawaran kerja di Jakarta.",
        "Saya karyawan asing yang ditugaskan oleh kantor pusat ke Surabaya.",
    ),
    ("employee", "business"): (
        "Saya karyawan asing yang akan ditempatkan di kantor Jakarta.",
        "Saya manajer asing di perusahaan manufaktur di Bekasi.",
    ),
    ("employee", "casual"): (
        "Aku baru dapat kerjaan di Jakarta nih, statusnya karyawan asing.",
        "Aku expat, kerja di startup di Jakarta nih.",
    ),
}


def synthetic_pairs(
    seed: SeedQuestion, variations: list[Pair], generator: Generator, count: int
) -> list[Pair]:
    """Up to `count` synthetic pairs for one seed, one persona/register/complexity mix each."""
    rng = random.Random(f"{seed.id}/synthetic")
    pairs: list[Pair] = []
    taken = [pair.question for pair in variations]
    for number in range(count):
        persona = PERSONAS[number % len(PERSONAS)]
        register = REGISTERS[(number + rng.randrange(len(REGISTERS))) % len(REGISTERS)]
        complexity = rng.choice(COMPLEXITIES)
        made = _from_model(seed, generator, persona, register, complexity, taken)
        if made is None:
            made = _offline(seed, variations, persona, register, rng)
            complexity = "detailed"
        if made is None:
            continue
        question, answer, made_by = made
        taken.append(question)
        pairs.append(
            Pair(
                id=f"{seed.id}-s{number + 1:02d}",
                question=question,
                answer=answer,
                category=seed.category,
                register=register,
                source="synthetic",
                validated=False,
                seed_id=seed.id,
                extra={
                    "persona": persona,
                    "complexity": complexity,
                    "generator": made_by,
                    "sources": list(seed.sources),
                    "facts": list(seed.facts),
                },
            )
        )
    return pairs


def build_synthetic(
    seeds: list[SeedQuestion],
    by_seed: dict[str, list[Pair]],
    generator: Generator,
    count: int,
    advance: Callable[[], None] = lambda: None,
) -> list[Pair]:
    """Synthetic pairs for every seed, calling `advance` after each seed (for a progress bar)."""
    pairs: list[Pair] = []
    for seed in seeds:
        pairs += synthetic_pairs(seed, by_seed.get(seed.id, []), generator, count)
        advance()
    return pairs


def _from_model(
    seed: SeedQuestion, generator: Generator, persona: str, register: str, complexity: str, taken: list[str]
) -> tuple[str, str, str] | None:
    questions = generator.synthetic(seed.question, PERSONA_WORDS[persona], register, complexity, 1, taken)
    if not questions:
        return None
    answer = generator.answer(questions[0], answer_in(seed, register)[0])
    return (questions[0], answer, generator.name) if answer else None


def _offline(
    seed: SeedQuestion, variations: list[Pair], persona: str, register: str, rng: random.Random
) -> tuple[str, str, str] | None:
    in_register = [pair for pair in variations if pair.register == register and pair.source == "variation"]
    hand = [pair.question for pair in in_register if pair.extra.get("generator") == "hand"]
    candidates = hand or [pair.question for pair in in_register]
    if not candidates:
        return None
    frame = rng.choice(FRAMES[(persona, register)])
    return f"{frame} {rng.choice(candidates)}", answer_in(seed, register)[0], "rules"
