"""The review checklist on one record: what a reviewer looks for in a question and its answer, as
automated checks shared by the dataset build, the review API (a correction is checked when it is
saved) and the retrain.

Checks (name: what it catches):
- `schema`: an empty question;
- `register`: the question does not read like the register it is labelled with;
- `tone`: formal answers with casual words, casual answers without natural particles;
- `completeness`: empty, very short or broken-off answers, or answers that skip what was asked about;
- `facts`: figures that contradict the fact registry (critical when the fact is verified);
- `translationese`: phrases that read as word-for-word translations from English;
- `pii`: personal data left in (e-mail, phone, passport, NIK, NPWP, names with ID numbers, addresses);
- `system_prompt`: a system prompt that is not ZANTARA's.

The checks across records (duplicates) belong to the dataset build (`training/dataset/checks.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from knowledge.fact_check import FactChecker
from knowledge.lexicon import TRANSLATIONESE
from knowledge.pii import ID_KINDS, find_names, find_pii
from knowledge.prompts import ZANTARA_SYSTEM_PROMPT
from knowledge.records import Example
from knowledge.register import answer_register_problem, detect_register, question_register_problem, words

MIN_ANSWER_WORDS = 8
SHORT_ANSWER_WORDS = 25
_BROKEN_OFF = re.compile(
    r"(?:\b(?:dan|atau|yang|untuk|dengan|di|ke|dari|karena|seperti|yaitu|adalah|serta)"
    r"|[,:;(]|\.\.\.|…)\s*$",
    re.IGNORECASE,
)
_TERM = re.compile(r"\b[A-Z][A-Z0-9]{2,}(?:\s+[A-Z]{2,})?\b")
_SAME_TERM = {"KITAS": "ITAS", "KITAP": "ITAP", "WNA": "ASING", "WNI": "INDONESIA", "PMA": "ASING"}
_NAME_WINDOW = 60
_CAPITALISED_NAME = re.compile(r"\b[A-Z][a-z]+(?:[ \t]+[A-Z][a-z]+)+\b")
_NOT_NAME_START = frozenset({"Visa", "Kantor", "Direktorat", "Peraturan", "Undang", "Bapak", "Ibu", "Pasal"})
_PLACEHOLDER = re.compile(r"\[(?:NAMA|EMAIL|TELEPON|NIK|NPWP|PASPOR|ALAMAT)\]")


@dataclass(frozen=True)
class Issue:
    """One finding of the checklist on one record."""

    line: int
    severity: str
    check: str
    message: str
    record_id: str | None = None


def check_example(example: Example, facts: FactChecker | None) -> list[Issue]:
    """Every finding of the checklist on one record (unsorted)."""
    record_id = example.meta.get("id") if isinstance(example.meta.get("id"), str) else None

    def issue(severity: str, check: str, message: str) -> Issue:
        return Issue(example.line, severity, check, message, record_id)

    found: list[Issue] = []
    if not example.question.strip():
        return [issue("error", "schema", "the question is empty")]
    if (
        example.system is not None
        and example.system.strip() != ZANTARA_SYSTEM_PROMPT
        and example.shape != "qa"
    ):
        found.append(
            issue("warning", "system_prompt", "the system prompt/instruction is not ZANTARA's prompt")
        )
    declared = example.meta.get("register")
    if isinstance(declared, str):
        problem = question_register_problem(declared, example.question)
        if problem:
            found.append(issue(problem[0], "register", problem[1]))
    register = declared if isinstance(declared, str) else detect_register(example.question)
    problem = answer_register_problem(register, example.answer)
    if problem:
        found.append(issue(problem[0], "tone", problem[1]))
    found += [issue(severity, "completeness", message) for severity, message in _completeness(example)]
    if facts is not None:
        for finding in facts.check(example.question, example.answer):
            found.append(
                issue(
                    "error" if finding.critical else "warning",
                    "facts",
                    ("critical: " if finding.critical else "") + finding.message(),
                )
            )
    text = f"{example.question}\n{example.answer}"
    lowered = text.lower()
    for phrase, origin in TRANSLATIONESE.items():
        if phrase in lowered:
            found.append(
                issue("warning", "translationese", f"'{phrase}' reads like a translation of {origin}")
            )
    personal = dict.fromkeys(_personal_data(example.question) + _personal_data(example.answer))
    found += [issue(severity, "pii", message) for severity, message in personal]
    return found


def _completeness(example: Example) -> list[tuple[str, str]]:
    answer = example.answer.strip()
    count = len(words(answer))
    if count == 0:
        return [("error", "the answer is empty")]
    problems: list[tuple[str, str]] = []
    if count < MIN_ANSWER_WORDS:
        problems.append(("error", f"the answer has only {count} words"))
    elif count < SHORT_ANSWER_WORDS:
        problems.append(
            ("warning", f"short answer ({count} words): does it answer fully, with a tip or follow-up?")
        )
    if _BROKEN_OFF.search(answer):
        problems.append(("error", "the answer breaks off mid-sentence"))
    terms = {term for term in _TERM.findall(example.question) if not _PLACEHOLDER.fullmatch(f"[{term}]")}
    answer_upper = answer.upper()
    if len(terms) >= 2 and not any(
        term in answer_upper or _SAME_TERM.get(term, "\0") in answer_upper for term in terms
    ):
        problems.append(
            (
                "warning",
                f"the answer never mentions {', '.join(sorted(terms))}, which the question asks about",
            )
        )
    return problems


@lru_cache(maxsize=4096)
def _personal_data(text: str) -> tuple[tuple[str, str], ...]:
    spans = [span for span in find_pii(text) if not _PLACEHOLDER.fullmatch(span.text)]
    problems: dict[str, str] = {}
    for span in spans:
        if span.kind == "address":
            problems.setdefault(f"street address left in: {span.text!r}", "warning")
        elif span.kind != "name":
            problems.setdefault(f"{span.kind} left in: {span.text!r}", "error")
    for span in spans:
        if span.kind in ID_KINDS:
            window = text[max(0, span.start - _NAME_WINDOW) : span.start]
            names = [
                name for name in _CAPITALISED_NAME.findall(window) if name.split()[0] not in _NOT_NAME_START
            ]
            names += [name for name in find_names(text) if name in window]
            if names:
                problems.setdefault(f"name with ID number left in: {names[-1]!r}", "error")
    return tuple((severity, message) for message, severity in problems.items())
