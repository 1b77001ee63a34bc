"""Do the figures in an answer agree with the fact registry?

Every figure (rupiah, dollars, percentages, durations) is read with its clause. A registry fact is in
play for that figure when the units match, one of the fact's keywords stands in the same clause, a
second one stands in the sentence or the question (so "modal minimal 50 juta" answering "Berapa modal
PT PMA?" is about the PT PMA facts; for a percentage one distinctive keyword such as "PPN" is
enough), and none of the things the fact does *not* apply to is named in the clause. A figure that
agrees with no fact in play, where no other figure of the clause already gives that fact's value,
contradicts the registry: a critical error when one of those facts is verified, a warning while
they all wait for the team's confirmation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from knowledge.facts import Fact
from knowledge.quantities import Quantity, find_quantities
from knowledge.register import words

_SENTENCE = re.compile(r"(?:[^.!?\n]|[.!?](?=[^\s.!?]))+[.!?]*")
_ABBREVIATION = re.compile(r"\b(no|nomor|jl|kec|kab|kel|hlm|dll|dsb|dr|ir|tbk|ps)\.(?=\s)", re.IGNORECASE)
_ESTIMATE = re.compile(
    r"(?:sekitar|kira-kira|kurang lebih|kisaran|rata-rata|around|approx\w*|±)\s*\S*\s*$", re.IGNORECASE
)
_CLAUSE = re.compile(r"[,;:](?=\s|$)")
_CLAUSE_BREAK = re.compile(r"\s(?=(?:sehingga|sedangkan|namun|tetapi|sementara|bukan)\s)", re.IGNORECASE)


@dataclass(frozen=True)
class FactFinding:
    """One figure that agrees with none of the registry facts in play for it."""

    quantity: Quantity
    facts: tuple[Fact, ...]

    @property
    def critical(self) -> bool:
        """Contradicting a verified fact is a critical error; unconfirmed facts only warn."""
        return any(fact.verified for fact in self.facts)

    def message(self) -> str:
        """A reviewer-readable explanation naming the figure, the registry values and their sources."""
        expected = "; ".join(
            f"{fact.display} for {', '.join(fact.applies_to)} ({fact.id}, {fact.source})"
            for fact in self.facts
        )
        text = f"says {self.quantity.text!r}, the registry has {expected}"
        if not self.critical:
            text += " [registry value still needs the team's confirmation]"
        return text


@dataclass(frozen=True)
class _Clause:
    """A clause of an answer with its figures and the registry keywords it contains (lower case)."""

    text: str
    quantities: tuple[Quantity, ...]
    hits: frozenset[str]


@dataclass(frozen=True)
class _Sentence:
    """A sentence of an answer, its keywords, those of the previous sentence too, and its clauses."""

    text: str
    hits: frozenset[str]
    nearby_hits: frozenset[str]
    clauses: tuple[_Clause, ...]


class FactChecker:
    """Checks answers against a loaded registry; build it once, call `check` per record.

    An answer's sentences, clauses, figures and keywords are worked out once and kept, since the
    same golden answer serves every variation of its seed question; `remember_answers=False` keeps
    nothing (served answers are each new, and a long-running service must not grow with them).
    """

    def __init__(self, facts: list[Fact], *, remember_answers: bool = True) -> None:
        self.facts = [fact for fact in facts if fact.checkable]
        self._remember = remember_answers
        self._keywords = {
            fact.id: frozenset(keyword.lower() for keyword in fact.keywords) for fact in self.facts
        }
        self._distinctive = {
            fact.id: frozenset(keyword.lower() for keyword in fact.keywords if _distinctive(keyword))
            for fact in self.facts
        }
        self._by_first_word: dict[str, list[str]] = {}
        for keyword in sorted({keyword for keywords in self._keywords.values() for keyword in keywords}):
            first = words(keyword)
            self._by_first_word.setdefault(first[0] if first else keyword, []).append(keyword)
        self._answers: dict[str, tuple[_Sentence, ...]] = {}

    def check(self, question: str, answer: str) -> list[FactFinding]:
        """Every figure of `answer` that contradicts the registry, given the `question` asked.

        Figures the question itself gives ("omzet saya Rp3 miliar") are the asker's and estimates
        ("sekitar Rp3 miliar") are not rules, so neither is flagged; a clause where one figure agrees
        with its fact is taken as right as a whole ("lebih dari 183 hari dalam 12 bulan").
        """
        findings: list[FactFinding] = []
        if not self.facts:
            return findings
        asked = find_quantities(question)
        question_hits = self._hits(question)
        for sentence in self._structure(answer):
            for clause in sentence.clauses:
                figures = [
                    (quantity, self._in_play(clause, sentence, question_hits, quantity))
                    for quantity in clause.quantities
                ]
                if any(_agrees(fact, quantity) for quantity, in_play in figures for fact in in_play):
                    continue
                for quantity, in_play in figures:
                    claimed = not _estimate(clause.text, quantity) and not any(
                        other.unit == quantity.unit and other.matches(quantity.low) for other in asked
                    )
                    if in_play and claimed and not self._named_nearby(quantity, sentence.nearby_hits):
                        findings.append(FactFinding(quantity, tuple(in_play)))
        return findings

    def _structure(self, answer: str) -> tuple[_Sentence, ...]:
        if not self._remember:
            return self._read(answer)
        if answer not in self._answers:
            self._answers[answer] = self._read(answer)
        return self._answers[answer]

    def _read(self, answer: str) -> tuple[_Sentence, ...]:
        """An answer's sentences with their clauses, figures and keywords."""
        sentences: list[_Sentence] = []
        previous: frozenset[str] = frozenset()
        for match in _SENTENCE.finditer(_ABBREVIATION.sub(r"\1 ", answer)):
            text = match.group(0)
            hits = self._hits(text)
            clauses = tuple(
                _Clause(clause, tuple(find_quantities(clause)), self._hits(clause))
                for clause in _clauses(text)
            )
            sentences.append(_Sentence(text, hits, hits | previous, clauses))
            previous = hits
        return tuple(sentences)

    def _hits(self, text: str) -> frozenset[str]:
        """The registry keywords (lower case) that stand in `text` as whole words."""
        candidates = {keyword for word in set(words(text)) for keyword in self._by_first_word.get(word, ())}
        return frozenset(keyword for keyword in candidates if _pattern(keyword).search(text))

    def _in_play(
        self, clause: _Clause, sentence: _Sentence, question_hits: frozenset[str], quantity: Quantity
    ) -> list[Fact]:
        """The facts a figure is about (see the module docstring)."""
        in_play: list[Fact] = []
        for fact in self.facts:
            if fact.unit != quantity.unit:
                continue
            keywords = self._keywords[fact.id]
            in_clause = keywords & clause.hits
            if not in_clause:
                continue
            anywhere = in_clause | (keywords & sentence.hits) | (keywords & question_hits)
            named = quantity.unit == "percent" and bool(in_clause & self._distinctive[fact.id])
            if (len(anywhere) >= 2 or named) and not any(
                _names(clause.text, sentence.text, excluded, fact.keywords)
                for excluded in fact.not_applies_to
            ):
                in_play.append(fact)
        return in_play

    def _named_nearby(self, quantity: Quantity, nearby_hits: frozenset[str]) -> bool:
        """Whether the figure is the value of a fact named in this or the previous sentence."""
        return any(
            fact.unit == quantity.unit and _agrees(fact, quantity) and self._keywords[fact.id] & nearby_hits
            for fact in self.facts
        )


def _clauses(sentence: str) -> list[str]:
    """A sentence's clauses: split at commas, semicolons, colons and words that turn to another subject."""
    return [chunk for part in _CLAUSE.split(sentence) for chunk in _CLAUSE_BREAK.split(part) if chunk.strip()]


def _names(clause: str, sentence: str, excluded: str, keywords: tuple[str, ...]) -> bool:
    """Whether the text names something the fact does not apply to.

    A one-word name must stand in the clause, not inside a longer keyword ("PT" inside "PT PMA"); a
    longer one counts when all its words appear in the sentence ("Pasal 284 KUHP lama").
    """
    parts = words(excluded)
    if len(parts) > 1:
        return set(parts) <= set(words(sentence))
    for keyword in keywords:
        if len(keyword) > len(excluded) and excluded.lower() in keyword.lower():
            clause = _pattern(keyword).sub(" ", clause)
    return bool(_pattern(excluded).search(clause))


def _estimate(clause: str, quantity: Quantity) -> bool:
    """Whether the figure is given as an estimate ("sekitar Rp3 miliar"), not as a rule."""
    return bool(_ESTIMATE.search(clause[: quantity.start]))


def _distinctive(keyword: str) -> bool:
    """A keyword that names one thing by itself: an acronym or code (PPN, PPh 26, 11%) or several words."""
    return " " in keyword or any(char.isupper() or char.isdigit() for char in keyword)


@cache
def _pattern(phrase: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", re.IGNORECASE)


def _agrees(fact: Fact, quantity: Quantity) -> bool:
    return any(quantity.matches(value) for value in fact.values)
