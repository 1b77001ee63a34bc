"""Duplicate and near-duplicate questions, found fast enough for thousands of records.

Questions are compared on their content words (register words, particles and question words are
left out, so "KITAS investor itu butuh dokumen apa aja sih?" and "Dokumen apa saja yang dibutuhkan
untuk KITAS investor?" look alike). Candidate pairs come from prefix filtering: two sets can only
reach the threshold if the rarest words of one of them appear in the other.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence

from knowledge.lexicon import CLOSERS, LEGAL_REFERENCE_WORDS, OPENERS, STOPWORDS
from knowledge.register import words

_TEMPLATE_WORDS = frozenset(
    word
    for texts in (*OPENERS.values(), *CLOSERS.values())
    for text in texts
    for word in words(text)
    if word not in ("q",)
)
_IGNORED = STOPWORDS | LEGAL_REFERENCE_WORDS | _TEMPLATE_WORDS
_SPACES = re.compile(r"\s+")
_PUNCTUATION = re.compile(r"[^\w\s]")


def normalize(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed: equal results mean duplicate texts."""
    return _SPACES.sub(" ", _PUNCTUATION.sub(" ", text.lower())).strip()


def content_words(text: str) -> frozenset[str]:
    """The content words of a question: no stopwords, particles, register openers, legal-reference
    words or bare numbers (so "menurut PP No. 18 Tahun 2021" does not make two questions alike)."""
    return frozenset(word for word in words(text) if word not in _IGNORED and not word.isdigit())


def similar_pairs(
    sets: Sequence[frozenset[str]], threshold: float, *, containment: bool = False, min_words: int = 3
) -> list[tuple[int, int, float]]:
    """Index pairs (i < j) whose similarity reaches `threshold`, with the score.

    Similarity is Jaccard (|A & B| / |A | B|) or, with `containment`, |A & B| / min(|A|, |B|).
    Sets smaller than `min_words` are never paired (too short to tell).
    """
    frequency = Counter(word for words_ in sets for word in words_)
    postings: dict[str, list[int]] = defaultdict(list)
    for index, words_ in enumerate(sets):
        for word in words_:
            postings[word].append(index)
    found: dict[tuple[int, int], float] = {}
    for index, words_ in enumerate(sets):
        if len(words_) < min_words:
            continue
        ordered = sorted(words_, key=lambda word: (frequency[word], word))
        prefix = ordered[: len(ordered) - math.ceil(threshold * len(ordered)) + 1]
        candidates = {other for word in prefix for other in postings[word] if other != index}
        for other in candidates:
            pair = (min(index, other), max(index, other))
            if pair in found or len(sets[other]) < min_words:
                continue
            score = _score(words_, sets[other], containment)
            if score >= threshold:
                found[pair] = score
    return sorted((i, j, score) for (i, j), score in found.items())


def _score(first: frozenset[str], second: frozenset[str], containment: bool) -> float:
    shared = len(first & second)
    if containment:
        return shared / min(len(first), len(second))
    return shared / len(first | second)
