"""Seed questions into training pairs: the question itself plus variations in three registers.

Per seed and register: the hand-written variants from the seed bank, then generated ones (model or
rules) up to `per_register`. Every variation keeps its `seed_id` and answers with the seed's golden
answer, carried into the variation's register when that differs from the seed's (same content, tone
adjusted; see `register.adapt_answer`).
"""

from __future__ import annotations

from collections.abc import Callable

from knowledge.records import REGISTERS, Pair
from knowledge.register import adapt_answer
from training.dataset.generator import Generator
from training.dataset.rephrase import to_register
from training.dataset.seed_bank import SeedQuestion


def answer_in(seed: SeedQuestion, register: str) -> tuple[str, bool]:
    """The golden answer for a question in `register`, and whether its tone had to be adjusted."""
    if register == seed.register:
        return seed.golden_answer, False
    adapted = adapt_answer(seed.golden_answer, register)
    return adapted, adapted != seed.golden_answer


def seed_pairs(seed: SeedQuestion, generator: Generator, per_register: int) -> list[Pair]:
    """The seed question and its variations as pairs: `per_register` variations in each register."""
    pairs = [_pair(seed, "seed", seed.question, seed.register, "seed", "hand")]
    known = [seed.question, *(text for texts in seed.variants.values() for text in texts)]
    for register in REGISTERS:
        hand = list(seed.variants.get(register, ()))[:per_register]
        for number, text in enumerate(hand, start=1):
            pairs.append(_pair(seed, f"{register[0]}{number:02d}", text, register, "variation", "hand"))
        bases = hand + ([seed.question] if seed.register == register else [])
        if not bases:
            bases = [to_register(seed.question, register)]
        made = generator.variations(seed.question, bases, register, per_register - len(hand), seed.id, known)
        for number, (text, made_by) in enumerate(made, start=len(hand) + 1):
            known.append(text)
            pairs.append(_pair(seed, f"{register[0]}{number:02d}", text, register, "variation", made_by))
    return pairs


def build_seed_pairs(
    seeds: list[SeedQuestion],
    generator: Generator,
    per_register: int,
    advance: Callable[[], None] = lambda: None,
) -> list[Pair]:
    """Pairs for every seed question, calling `advance` after each seed (for a progress bar)."""
    pairs: list[Pair] = []
    for seed in seeds:
        pairs += seed_pairs(seed, generator, per_register)
        advance()
    return pairs


def _pair(seed: SeedQuestion, suffix: str, question: str, register: str, source: str, made_by: str) -> Pair:
    answer, adapted = answer_in(seed, register)
    return Pair(
        id=f"{seed.id}-{suffix}",
        question=question,
        answer=answer,
        category=seed.category,
        register=register,
        source=source,
        validated=not made_by.startswith("model:"),
        seed_id=seed.id,
        extra={
            "generator": made_by,
            "answer": "golden-adapted" if adapted else "golden",
            "sources": list(seed.sources),
            "facts": list(seed.facts),
        },
    )
