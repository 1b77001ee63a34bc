"""Served answers' figures against the fact registry: what the feedback writer stores with each answer.

`AnswerFacts.check` reads an interaction's answer with its question (the conversation's last user
message) through `knowledge.fact_check.FactChecker` and returns the record with

- `fact_critical`: figures that contradict a verified fact (a critical error: the answer is wrong, and
  it goes to the review queue whatever its rating);
- `fact_warnings`: figures that disagree only with facts still waiting for the team's confirmation;
- `fact_findings`: each such figure as JSON (`severity`, the figure as written, the facts and their
  registry values), what the review queue shows.

The writer runs it in its background batch, in a worker thread, never on a chat request's path
(`feedback.writer.FeedbackWriter`, `check_facts`). A record the check has seen has both counts set
(0 and 0 for an answer that agrees with the registry or gives no figure); None means not checked.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from feedback.records import InteractionRecord
from feedback.review_queue import last_user_message
from knowledge.fact_check import FactChecker, FactFinding
from knowledge.facts import load_facts

Severity = Literal["critical", "warning"]
SEVERITIES: tuple[Severity, ...] = ("critical", "warning")


def severity(finding: FactFinding) -> Severity:
    """A figure against a verified fact is critical; against only unconfirmed facts, a warning."""
    return "critical" if finding.critical else "warning"


def finding_json(finding: FactFinding) -> dict[str, Any]:
    """One finding as stored in `interactions.fact_findings` (JSON)."""
    return {
        "severity": severity(finding),
        "stated": finding.quantity.text,
        "facts": [
            {
                "id": fact.id,
                "statement": fact.description,
                "value": fact.display,
                "source": fact.source,
                "verified": fact.verified,
            }
            for fact in finding.facts
        ],
        "message": finding.message(),
    }


class AnswerFacts:
    """The registry's checker for served answers (built once; keeps nothing per answer)."""

    def __init__(self, checker: FactChecker) -> None:
        self.checker = checker

    @classmethod
    def from_path(cls, facts_path: Path) -> AnswerFacts:
        """The checker of the registry at `facts_path` (raises `DatasetInputError` when unreadable)."""
        return cls(FactChecker(load_facts(facts_path), remember_answers=False))

    def check(self, record: InteractionRecord) -> InteractionRecord:
        """`record` with its fact counts and findings set (see the module docstring)."""
        findings = self.checker.check(last_user_message(record.messages), record.answer)
        stored = [finding_json(finding) for finding in findings]
        critical = sum(1 for finding in stored if finding["severity"] == "critical")
        return replace(
            record,
            fact_critical=critical,
            fact_warnings=len(stored) - critical,
            fact_findings=stored,
        )
