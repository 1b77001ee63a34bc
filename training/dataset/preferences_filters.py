"""What a preference row must pass before it goes into a dataset, in order:

1. duplicates: one row per (prompt, chosen, rejected) as normalised text, the first source kept; rows
   that contradict each other (one answer both desirable and undesirable for a prompt, or a pair and
   its reverse) are all left out;
2. leakage: a row whose question is (or nearly is) a question of the evaluation sets (the test and
   validation splits of the dataset the evaluator uses, the general-Indonesian hold-out, the unknown
   set) is left out, so a preference retrain is never scored on what it learnt from;
3. the review checklist (`knowledge.checklist`, as `zantara dataset check`): the desirable/chosen
   answer must pass every check; an undesirable/rejected answer is wrong on purpose and is only checked
   for personal data;
4. the per-user cap: answers from one user count at most N times (earliest rows first), so one client
   cannot dominate a dataset.

Each step returns the rows kept and counts what it left out.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from knowledge.checklist import Issue, check_example
from knowledge.fact_check import FactChecker
from knowledge.paths import UNKNOWN_FILE
from knowledge.records import Example, parse_record
from training.dataset.checks import Report
from training.dataset.files import DatasetInputError, read_items
from training.dataset.preferences import Message, PreferenceRow, Provenance
from training.dataset.similarity import content_words, normalize, similar_pairs
from training.dataset.split import NEAR_DUPLICATE
from training.general_split import GENERAL_FILE, general_rows

EVAL_SPLITS: tuple[str, ...] = ("test", "validation")
"""The splits of the evaluator's dataset a preference row must not share a question with."""
KTO_BALANCE = (Fraction(1), Fraction(4, 3))
"""TRL's KTO guidance: weighted desirable : undesirable between 1:1 and 4:3."""


@dataclass
class Filtered:
    """The rows a step kept, and how many it left out per reason."""

    rows: list[PreferenceRow]
    left_out: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class EvalQuestions:
    """The questions a preference dataset must not contain, and where they were read from."""

    questions: list[str]
    dataset: Path
    dataset_version: str | None
    counts: dict[str, int]


def _prompt_key(row: PreferenceRow) -> str:
    return json.dumps([[role, normalize(content)] for role, content in row.prompt], ensure_ascii=False)


def _text_key(text: str | None) -> str | None:
    return None if text is None else normalize(text)


def deduplicate(rows: Sequence[PreferenceRow]) -> Filtered:
    """One row per (prompt, chosen, rejected), the first kept; contradicting rows all left out."""
    kept: dict[tuple[str, str | None, str | None], PreferenceRow] = {}
    left = Counter[str]()
    for row in rows:
        key = (_prompt_key(row), _text_key(row.chosen), _text_key(row.rejected))
        if key in kept:
            left["duplicate"] += 1
        else:
            kept[key] = row
    same = {key for key in kept if key[1] is not None and key[1] == key[2]}
    conflicts = {key for key in kept if (key[0], key[2], key[1]) != key and (key[0], key[2], key[1]) in kept}
    left["same_answer"] += len(same)
    left["contradicting"] += len(conflicts)
    conflicts |= same
    return Filtered([row for key, row in kept.items() if key not in conflicts], left)


def eval_questions(
    dataset: Path, general: Path = GENERAL_FILE, unknown: Path = UNKNOWN_FILE
) -> EvalQuestions:
    """The questions every evaluation asks: the test and validation splits of `dataset` (a folder from
    `zantara dataset build`), the held-out general-Indonesian set and the unknown set. Raises
    `DatasetInputError` when `dataset` is not a built dataset."""
    manifest_path = dataset / "manifest.json"
    if not manifest_path.is_file():
        raise DatasetInputError(manifest_path, None, "not a dataset built by `zantara dataset build`")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetInputError(manifest_path, None, f"cannot read the manifest ({exc})") from None
    counts: dict[str, int] = {}
    questions: list[str] = []
    for split in EVAL_SPLITS:
        path = dataset / f"{split}.jsonl"
        found = [
            parsed.question
            for item in read_items(path)
            if isinstance(parsed := parse_record(item.line, item.value), Example)
        ]
        counts[split], questions = len(found), questions + found
    held_out = [str(row["question"]) for row in general_rows(general, held_out=True)]
    unknown_questions = [str(item.value["question"]) for item in read_items(unknown)]
    counts["general"], counts["unknown"] = len(held_out), len(unknown_questions)
    version = manifest.get("version") if isinstance(manifest, dict) else None
    return EvalQuestions(questions + held_out + unknown_questions, dataset, version, counts)


def without_leakage(rows: Sequence[PreferenceRow], evaluation: EvalQuestions) -> Filtered:
    """Rows whose question is not an evaluation question, exactly or nearly (the split's own rule:
    the same normalised text, or content words at least `NEAR_DUPLICATE` alike)."""
    exact = {normalize(question) for question in evaluation.questions}
    sets = [content_words(question) for question in evaluation.questions]
    sets += [content_words(row.question) for row in rows]
    first_row = len(evaluation.questions)
    near = {
        max(i, j) - first_row
        for i, j, _ in similar_pairs(sets, NEAR_DUPLICATE)
        if min(i, j) < first_row <= max(i, j)
    }
    kept = [
        row for index, row in enumerate(rows) if index not in near and normalize(row.question) not in exact
    ]
    return Filtered(kept, Counter(eval_leakage=len(rows) - len(kept)))


def row_issues(line: int, row: PreferenceRow, facts: FactChecker | None) -> list[Issue]:
    """The checklist's findings on a row: every check on the desirable/chosen answer, the personal-data
    check on the undesirable/rejected one; `line` is the row's line in its file."""
    issues: list[Issue] = []
    if not row.question.strip():
        return [Issue(line, "error", "schema", "the prompt has no user message", row.id)]
    if row.chosen is not None:
        example = Example(line, "chat", row.question, row.chosen, row.system, {"id": row.id})
        issues += check_example(example, facts)
    if row.rejected is not None:
        example = Example(line, "chat", row.question, row.rejected, row.system, {"id": row.id})
        issues += [
            issue
            for issue in check_example(example, None)
            if issue.check == "pii" and issue.severity == "error"
        ]
        if not row.rejected.strip():
            issues.append(Issue(line, "error", "completeness", "the rejected answer is empty", row.id))
    return issues


def passing_checks(rows: Sequence[PreferenceRow], facts: FactChecker | None) -> tuple[Filtered, list[Issue]]:
    """The rows without an error from `row_issues`, and the warnings of those kept; left-out rows are
    counted as `check_<name>` (the first error's check)."""
    kept: list[PreferenceRow] = []
    warnings: list[Issue] = []
    left = Counter[str]()
    for line, row in enumerate(rows, start=1):
        issues = row_issues(line, row, facts)
        errors = [issue for issue in issues if issue.severity == "error"]
        if errors:
            left[f"check_{errors[0].check}"] += 1
            continue
        kept.append(row)
        warnings += [issue for issue in issues if issue.severity == "warning"]
    return Filtered(kept, left), warnings


def capped_per_user(rows: Sequence[PreferenceRow], cap: int) -> tuple[Filtered, int]:
    """At most `cap` rows per user, in order (a row with two users' answers counts for both, and goes in
    only while both are under the cap); answers without a known user are not capped. Returns the rows
    kept and how many users reached the cap."""
    used: Counter[str] = Counter()
    kept: list[PreferenceRow] = []
    capped: set[str] = set()
    for row in rows:
        users = set(row.provenance.users)
        full = {user for user in users if used[user] >= cap}
        if full:
            capped |= full
            continue
        used.update(users)
        kept.append(row)
    return Filtered(kept, Counter(per_user_cap=len(rows) - len(kept))), len(capped)


def kto_weights(desirable: int, undesirable: int) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) so that desirable_weight * desirable : undesirable_weight *
    undesirable lies within 1:1 and 4:3 (TRL's KTO guidance): both 1.0 when the counts already do; the
    minority's weight raised when not (rounded up to 4 decimals, so that the ratio computed in floating
    point, as TRL checks it, is inside too)."""
    if desirable <= 0 or undesirable <= 0:
        raise ValueError("KTO needs desirable and undesirable rows")
    ratio = Fraction(desirable, undesirable)
    low, high = KTO_BALANCE
    if low <= ratio <= high:
        return 1.0, 1.0
    if ratio < low:
        raised = _round_up(low / ratio)
        while weighted_ratio(desirable, undesirable, (raised, 1.0)) < low:  # float rounding: one step more
            raised = round(raised + 0.0001, 4)
        return raised, 1.0
    raised = _round_up(ratio / high)
    while weighted_ratio(desirable, undesirable, (1.0, raised)) > high:
        raised = round(raised + 0.0001, 4)
    return 1.0, raised


def weighted_ratio(desirable: int, undesirable: int, weights: tuple[float, float]) -> float:
    """desirable_weight * desirable / (undesirable_weight * undesirable)."""
    return weights[0] * desirable / (weights[1] * undesirable)


def _round_up(value: Fraction) -> float:
    scaled = value * 10_000
    whole = scaled.numerator // scaled.denominator + (scaled.numerator % scaled.denominator > 0)
    return whole / 10_000


def parse_trl_row(line: int, value: Any) -> PreferenceRow | Issue:
    """A row of a preference file in TRL's conversational format (KTO `prompt`/`completion`/`label`, DPO
    `prompt`/`chosen`/`rejected`), or a `schema` error saying what is wrong with it."""

    def problem(message: str) -> Issue:
        return Issue(line, "error", "schema", message)

    if not isinstance(value, dict):
        return problem(f"a row must be a JSON object, found {type(value).__name__}")
    prompt = _messages(value.get("prompt"))
    if prompt is None or not prompt:
        return problem("'prompt' must be a non-empty list of {role, content} messages")
    answers: dict[str, str] = {}
    keys = ("chosen", "rejected") if "chosen" in value or "rejected" in value else ("completion",)
    for key in keys:
        messages = _messages(value.get(key))
        if messages is None or len(messages) != 1 or messages[0][0] != "assistant":
            return problem(f"'{key}' must be a list of one assistant message")
        answers[key] = messages[0][1]
    if "completion" in answers:
        label = value.get("label")
        if not isinstance(label, bool):
            return problem("'label' must be true or false")
        good, bad = (answers["completion"], None) if label else (None, answers["completion"])
    else:
        good, bad = answers["chosen"], answers["rejected"]
    meta = value.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    provenance = Provenance(source=str(meta.get("source") or "file"))
    return PreferenceRow(prompt, good, bad, provenance)


def check_preference_file(path: Path, facts: FactChecker | None) -> Report:
    """The checklist on a preference file, as `zantara dataset check` on a training file: schema,
    each row's checks (`row_issues`) and duplicate or contradicting rows. Raises `DatasetInputError`
    when the file cannot be read."""
    items = read_items(path)
    issues: list[Issue] = []
    seen: dict[tuple[str, str | None, str | None], int] = {}
    for item in items:
        parsed = parse_trl_row(item.line, item.value)
        if isinstance(parsed, Issue):
            issues.append(parsed)
            continue
        issues += row_issues(item.line, parsed, facts)
        key = (_prompt_key(parsed), _text_key(parsed.chosen), _text_key(parsed.rejected))
        reverse = (key[0], key[2], key[1])
        if key in seen:
            issues.append(Issue(item.line, "error", "duplicate", f"duplicate of line {seen[key]}", parsed.id))
        elif reverse in seen:
            message = f"contradicts line {seen[reverse]} (the same answers with the preference reversed)"
            issues.append(Issue(item.line, "error", "duplicate", message, parsed.id))
        seen.setdefault(key, item.line)
    issues.sort(key=lambda issue: (issue.line, issue.severity != "error", issue.check))
    return Report(str(path), len(items), issues)


def _messages(value: Any) -> tuple[Message, ...] | None:
    if not isinstance(value, list):
        return None
    messages: list[Message] = []
    for message in value:
        if not isinstance(message, dict):
            return None
        role, content = message.get("role"), message.get("content")
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            return None
        messages.append((role, content))
    return tuple(messages)
