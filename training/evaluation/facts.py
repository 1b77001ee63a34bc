"""Critical-fact precision: the figures an answer states, checked against the fact registry.

The checking itself is the dataset checklist's `FactChecker` (`training/dataset/fact_check.py`):
a figure is *checked* when a registry fact is in play for it (same unit, the fact's keywords in its
clause and sentence or question, nothing it does not apply to named), and *contradicted* when the
checker reports it. Precision is (checked - contradicted) / checked over all answers of a variant;
contradicting a verified fact is a critical error, contradicting an unconfirmed one a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowledge.errors import DatasetInputError
from knowledge.fact_check import FactChecker, FactFinding
from knowledge.facts import Fact, load_facts
from knowledge.paths import FACTS_FILE
from training.evaluation.data import EvalInputError, EvalItem


@dataclass(frozen=True)
class FactCheck:
    """One answer's figures: how many were checked against the registry and which contradict it."""

    checked: int
    findings: tuple[FactFinding, ...]

    @property
    def contradicted(self) -> int:
        """Figures that agree with none of the facts in play for them."""
        return len(self.findings)


class _CountingChecker(FactChecker):
    """The registry checker, also counting every figure that had a fact in play (checked figures)."""

    def __init__(self, facts: list[Fact]) -> None:
        super().__init__(facts)
        self.in_play: set[tuple[int, int]] = set()

    def _in_play(
        self, clause: Any, sentence: Any, question_hits: frozenset[str], quantity: Any
    ) -> list[Fact]:
        found = super()._in_play(clause, sentence, question_hits, quantity)
        if found:
            self.in_play.add((quantity.start, quantity.end))
        return found


@dataclass
class RegistryCheck:
    """Checks answers against `knowledge/data/facts.yaml` (load once, call `check` per answer)."""

    path: Path = FACTS_FILE
    facts: list[Fact] = field(init=False)
    _checker: _CountingChecker = field(init=False)

    def __post_init__(self) -> None:
        try:
            self.facts = load_facts(self.path)
        except DatasetInputError as exc:
            raise EvalInputError(str(exc)) from None
        self._checker = _CountingChecker(self.facts)

    def check(self, question: str, answer: str) -> FactCheck:
        """The answer's checked figures and its findings, given the question asked."""
        self._checker.in_play = set()
        findings = self._checker.check(question, answer)
        return FactCheck(len(self._checker.in_play), tuple(findings))

    def by_id(self) -> dict[str, Fact]:
        """The checkable facts by id."""
        return {fact.id: fact for fact in self._checker.facts}


def error_records(variant: str, item: EvalItem, check: FactCheck, *, critical: bool) -> list[dict[str, Any]]:
    """The report rows of an answer's critical errors (`critical=True`) or warnings: one per fact."""
    rows = []
    for finding in check.findings:
        if finding.critical != critical:
            continue
        for fact in finding.facts:
            if critical and not fact.verified:
                continue
            rows.append(
                {
                    "variant": variant,
                    "item_id": item.id,
                    "set": item.set,
                    "question": item.question,
                    "stated": finding.quantity.text,
                    "registry_value": fact.display,
                    "fact_id": fact.id,
                    "fact_status": fact.status,
                    "source": fact.source,
                    "message": finding.message(),
                }
            )
    return rows
