"""Register (formal, business, casual): telling it from the words used, and moving an answer into it.

The rules are deliberately simple and conservative: whole-word matches on the lists in
`lexicon.py`. They decide whether a question fits the register it is labelled with, whether an answer
keeps the tone of its question, and they lift or lower a golden answer's tone without touching its
content (figures, legal references and names stay as written).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from knowledge.lexicon import (
    CASUAL_PARTICLES,
    CASUAL_SOFT,
    CASUAL_STRONG,
    CASUAL_SWAPS,
    FORMAL_SWAPS,
    FORMAL_WORDS,
)

WORD = re.compile(r"[^\W_]+(?:-[^\W_]+)*")
_STRONG_PARTICLES = re.compile(r"[ \t]*\b(?:nih|dong|sih|deh|lho|loh|yuk|kok)\b[ \t]*", re.IGNORECASE)
_BANGET = re.compile(r"\b(\w+) banget\b", re.IGNORECASE)
_DOUBLE_MARK = re.compile(r"[,;]([.!?])")
_SPACE_BEFORE_MARK = re.compile(r"[ \t]+([.,!?;:])")
_CLAUSE_YA = re.compile(r",?[ \t]+ya\b(?=\s*[.!?,]|\s*$)", re.IGNORECASE)
_INTERJECTION = re.compile(r"(^|(?<=[.!?\n])[ \t]*)(?:wah|nah|eh|hmm|oh|yah|btw)\b[,!]?[ \t]*", re.IGNORECASE)
_SENTENCE_START = re.compile(r"(^|[.!?]\s+|\n\s*)([a-z])")
CASUAL_OPENER = "Oke, jadi gini ya. "


def words(text: str) -> list[str]:
    """The lower-case words of `text` (hyphenated words such as undang-undang stay whole)."""
    return WORD.findall(text.lower())


@dataclass(frozen=True)
class RegisterSignals:
    """The register markers found in a text."""

    casual_strong: tuple[str, ...]
    casual_soft: tuple[str, ...]
    formal: tuple[str, ...]

    @property
    def particles(self) -> tuple[str, ...]:
        """Casual particles proper (nih, dong, ya, ...), a subset of the casual markers."""
        return tuple(word for word in self.casual_strong + self.casual_soft if word in CASUAL_PARTICLES)


def signals(text: str) -> RegisterSignals:
    """Collect the casual and formal markers of `text` (-kah questions count as formal)."""
    tokens = words(text)
    formal = [t for t in tokens if t in FORMAL_WORDS or (len(t) > 5 and t.endswith("kah") and t != "langkah")]
    return RegisterSignals(
        casual_strong=tuple(t for t in tokens if t in CASUAL_STRONG),
        casual_soft=tuple(t for t in tokens if t in CASUAL_SOFT),
        formal=tuple(formal),
    )


def detect_register(text: str) -> str:
    """Best guess of a question's register: casual markers win, then formal ones, else business."""
    found = signals(text)
    if found.casual_strong:
        return "casual"
    if found.formal:
        return "formal"
    return "business"


def question_register_problem(register: str, question: str) -> tuple[str, str] | None:
    """(severity, message) when a question does not read like its labelled register, else None."""
    found = signals(question)
    if register == "formal" and found.casual_strong:
        return (
            "error",
            f"labelled formal but uses casual words: {', '.join(sorted(set(found.casual_strong)))}",
        )
    if register == "casual" and not (found.casual_strong or found.casual_soft):
        if found.formal:
            return "error", f"labelled casual but reads formal: {', '.join(sorted(set(found.formal)))}"
        return "warning", "labelled casual but has no casual word or particle"
    if register == "business" and len(set(found.casual_strong)) >= 2:
        return "warning", f"labelled business but reads casual: {', '.join(sorted(set(found.casual_strong)))}"
    return None


def answer_register_problem(register: str, answer: str) -> tuple[str, str] | None:
    """(severity, message) when an answer's tone does not suit the question's register, else None."""
    found = signals(answer)
    if register == "formal" and found.casual_strong:
        return (
            "error",
            f"formal question answered with casual words: {', '.join(sorted(set(found.casual_strong)))}",
        )
    if register == "casual" and not found.particles:
        return "warning", "casual question but the answer has no natural particle (nih, dong, ya, kok, ...)"
    if register == "business" and len(set(found.casual_strong)) >= 3:
        return (
            "warning",
            f"business question answered in slang: {', '.join(sorted(set(found.casual_strong)))}",
        )
    return None


def adapt_answer(answer: str, register: str) -> str:
    """Move an answer's tone into `register` by swapping colloquial and standard words.

    Formal and business: colloquial words become standard ones and strong particles go (business
    keeps a friendly "ya"). Casual: a few standard words become colloquial and, when the answer has
    no particle yet, a short casual opener is put in front. Numbers and references are never touched.
    """
    if register == "casual":
        text = swap_words(answer, CASUAL_SWAPS)
        return text if signals(text).particles else CASUAL_OPENER + text
    text = _BANGET.sub(_sangat, answer)
    text = swap_words(text, FORMAL_SWAPS)
    text = _STRONG_PARTICLES.sub(" ", text)
    text = _INTERJECTION.sub(lambda match: match.group(1), text)
    if register == "formal":
        text = _CLAUSE_YA.sub("", text)
    text = _SPACE_BEFORE_MARK.sub(r"\1", re.sub(r"(?<=\S)[ \t]{2,}", " ", text))
    text = _DOUBLE_MARK.sub(r"\1", text)
    return _SENTENCE_START.sub(lambda match: match.group(1) + match.group(2).upper(), text)


def _sangat(match: re.Match[str]) -> str:
    """Turn "bisa banget" into "sangat bisa", keeping a capital at the start of a sentence."""
    word = match.group(1)
    if word.isupper():
        return f"sangat {word}"
    return f"Sangat {word[0].lower()}{word[1:]}" if word[0].isupper() else f"sangat {word}"


def swap_words(text: str, table: dict[str, str]) -> str:
    """Replace whole words found in `table` (keys lower case), keeping a leading capital."""

    def replace(match: re.Match[str]) -> str:
        word = match.group(0)
        target = table.get(word.lower())
        if target is None:
            return word
        return target[0].upper() + target[1:] if word[0].isupper() else target

    return WORD.sub(replace, text)
