"""Rule-based rephrasing: the offline generator's way to make more variations of a question.

Starting from hand-written questions in a register, it applies rules a native speaker uses when
asking the same thing again: register openers and closers ("Mohon penjelasan, ...", "Kak, ..."),
word-order swaps ("Apa saja persyaratan X?" -> "Persyaratan X apa saja?"), synonyms ("berkas" for
"dokumen"), particles for casual questions and -kah / standard words for formal ones. Every result
must still read as its register; the choice among candidates is seeded, so builds are reproducible.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Collection, Sequence
from functools import partial

from knowledge.lexicon import CASUAL_SWAPS, CLOSERS, FORMAL_SWAPS, OPENERS
from knowledge.register import question_register_problem, signals, swap_words, words
from training.dataset.similarity import normalize

SYNONYMS: dict[str, tuple[tuple[str, str], ...]] = {
    "formal": (
        ("syarat", "persyaratan"),
        ("dokumen", "berkas"),
        ("dibutuhkan", "diperlukan"),
        ("aturan", "ketentuan"),
        ("bisa", "dapat"),
        ("kalau", "apabila"),
        ("sekarang", "saat ini"),
        ("minimal", "minimum"),
        ("harus", "wajib"),
        ("mendapatkan", "memperoleh"),
        ("orang asing", "warga negara asing"),
        ("karyawan", "tenaga kerja"),
        ("buka", "mendirikan"),
    ),
    "business": (
        ("persyaratan", "syarat"),
        ("dokumen", "berkas"),
        ("diperlukan", "dibutuhkan"),
        ("warga negara asing", "WNA"),
        ("orang asing", "WNA"),
        ("minimum", "minimal"),
        ("wajib", "harus"),
        ("saat ini", "sekarang"),
        ("mendirikan", "membuka"),
        ("pegawai", "karyawan"),
    ),
    "casual": (
        ("persyaratan", "syarat"),
        ("dokumen", "berkas"),
        ("diperlukan", "dibutuhin"),
        ("dibutuhkan", "dibutuhin"),
        ("biaya", "ongkos"),
        ("warga negara asing", "WNA"),
        ("orang asing", "WNA"),
        ("mendirikan", "bikin"),
        ("membuat", "bikin"),
        ("perlu", "butuh"),
    ),
}
_GREETING = re.compile(
    r"^(?:halo|hai|mohon|dengan hormat|kak|min|permisi|selamat|izin|mau nanya|eh|btw)\b", re.IGNORECASE
)
_FRONTED_ADVERBIAL = re.compile(
    r"^(?:untuk|menurut|berdasarkan|kalau|kalo|sebagai|dari sisi|sebelum|jika|apabila)\b", re.IGNORECASE
)
_SENTENCE_BREAK = re.compile(r"[.!?]\s+\S")
_KAH = {
    "berapa": "Berapakah",
    "bagaimana": "Bagaimanakah",
    "kapan": "Kapankah",
    "siapa": "Siapakah",
    "mengapa": "Mengapakah",
}
_FRONTED = re.compile(r"^(apa saja|apa aja|berapa|bagaimana cara|gimana cara)\s+([^,?]+)\?$", re.IGNORECASE)


def rephrase(bases: Sequence[str], register: str, count: int, key: str, avoid: Collection[str]) -> list[str]:
    """Up to `count` new questions in `register` made from `bases`, none equal to `avoid` or a base.

    `key` seeds the choice (use the seed id), so the same input always gives the same output.
    """
    taken = {normalize(text) for text in [*avoid, *bases]}
    pools: list[list[str]] = []
    for rule in _rules(register):
        pool: list[str] = []
        for base in bases:
            candidate = _tidy(rule(base))
            if (
                candidate
                and normalize(candidate) not in taken
                and question_register_problem(register, candidate) is None
            ):
                pool.append(candidate)
        pools.append(pool)
    rng = random.Random(f"{key}/{register}")
    for pool in pools:
        rng.shuffle(pool)
    rng.shuffle(pools)
    chosen: list[str] = []
    while len(chosen) < count and any(pools):
        for pool in pools:
            while pool and len(chosen) < count:
                candidate = pool.pop()
                if normalize(candidate) not in taken:
                    taken.add(normalize(candidate))
                    chosen.append(candidate)
                    break
    return chosen


def to_register(question: str, register: str) -> str:
    """Carry a question into another register (standard words for formal, colloquial ones for casual)."""
    if register == "casual":
        text = swap_words(question, CASUAL_SWAPS)
        return text if signals(text).particles else _add_particle(text) or text
    if register == "formal":
        text = swap_words(question, FORMAL_SWAPS)
        return _polite(text) or text
    return swap_words(question, {k: v for k, v in FORMAL_SWAPS.items() if k not in ("kamu", "aku")})


def _rules(register: str) -> list[Callable[[str], str]]:
    rules: list[Callable[[str], str]] = [_reorder, lambda q: _synonyms(q, register)]
    rules += [partial(_open, opener=opener) for opener in OPENERS[register]]
    rules += [partial(_close, closer=closer) for closer in CLOSERS[register]]
    rules.append(lambda q: _open(_synonyms(q, register), OPENERS[register][0]))
    rules.append(lambda q: _close(_reorder(_synonyms(q, register) or q), CLOSERS[register][0]))
    if register == "casual":
        rules.append(_add_particle)
    if register == "formal":
        rules.append(_polite)
    return rules


def _open(question: str, opener: str) -> str:
    if not question or _GREETING.match(question):
        return ""
    if "{q}" in opener and (_FRONTED_ADVERBIAL.match(question) or _SENTENCE_BREAK.search(question)):
        return ""
    present = set(words(question))
    if any(len(word) >= 6 and word in present for word in words(opener)):
        return ""
    return opener.format(q=_lower_first(question), Q=question)


def _close(question: str, closer: str) -> str:
    return f"{question} {closer}" if question else ""


def _synonyms(question: str, register: str) -> str:
    for plain, other in SYNONYMS[register]:
        pattern = re.compile(rf"(?<!\w){re.escape(plain)}(?!\w)", re.IGNORECASE)
        if pattern.search(question):
            return pattern.sub(partial(_keep_capital, other), question, count=1)
    return ""


def _keep_capital(replacement: str, match: re.Match[str]) -> str:
    return replacement[0].upper() + replacement[1:] if match.group(0)[0].isupper() else replacement


def _reorder(question: str) -> str:
    match = _FRONTED.match(question.strip())
    if not match:
        return ""
    asked, rest = match.group(1).lower(), match.group(2)
    asked = asked.replace(" cara", "")
    return (
        f"{rest[0].upper()}{rest[1:]} {asked}?"
        if not asked.startswith(("bagaimana", "gimana"))
        else (f"Cara {_lower_first(rest)} {asked}?")
    )


def _add_particle(question: str) -> str:
    for pattern, replacement in (
        (r"\bapa aja\b", "apa aja sih"),
        (r"\bgimana\b", "gimana sih"),
        (r"\bberapa\b", "berapa sih"),
        (r"\?$", " ya?"),
    ):
        if re.search(pattern, question) and "sih" not in question:
            return re.sub(pattern, replacement, question, count=1)
    return ""


def _polite(question: str) -> str:
    first, _, rest = question.partition(" ")
    polite = _KAH.get(first.lower())
    if polite is None or re.match(r"(saja|aja|itu|yang|bedanya|perbedaan)\b", rest):
        return ""
    return f"{polite} {rest}"


def _lower_first(text: str) -> str:
    head = text.split(" ", 1)[0]
    if not text or head.isupper() or any(ch.isupper() for ch in head[1:]) or any(ch.isdigit() for ch in head):
        return text
    return text[0].lower() + text[1:]


def _tidy(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
