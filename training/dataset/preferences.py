"""Preference rows from the loop's signals: KTO (unpaired: one answer and whether it is desirable) and
DPO (paired: a chosen and a rejected answer to one prompt), each with its provenance.

Where the rows come from (`PreferenceOptions` holds the thresholds):

- a rated answer: KTO desirable at `desirable` stars or more, undesirable at `undesirable` or less,
  anything between left out; DPO pairs two answers to the same conversation, one desirable and one
  undesirable (best with worst, each answer used once);
- a correction: the corrected answer is desirable (DPO: chosen), the original one undesirable
  (DPO: rejected);
- an A/B pair: the variant its reviewers preferred (more verdicts for it than for the other, ties not
  counted) is desirable (chosen), the other undesirable (rejected); a pair with only ties, or as many
  verdicts each way, is left out.

A prompt is the conversation as chat messages, ZANTARA's system prompt first when it has no system
message (as the service puts it). Personal data is scrubbed in every text of a row, a name found in
one text replaced in the others too. The filters that follow (duplicates, leakage, checks, the per-user
cap) are in `preferences_filters`.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from feedback.preferences import BASE, ABVerdict, LoggedAnswer, PreferenceSignals
from knowledge.corrections import CorrectionRecord
from knowledge.pii import find_names, scrub
from knowledge.prompts import ZANTARA_SYSTEM_PROMPT

KINDS: tuple[str, ...] = ("kto", "dpo")
SOURCES: tuple[str, ...] = ("correction", "ab", "rating")
"""In order of precedence: when two rows say the same, the first source's row is kept."""
DEFAULT_DESIRABLE = 4
DEFAULT_UNDESIRABLE = 2
DEFAULT_PER_USER_CAP = 20

Message = tuple[str, str]
"""(role, content) of one chat message."""


@dataclass(frozen=True)
class PreferenceOptions:
    """Which ratings count: desirable at `desirable` stars or more, undesirable at `undesirable` or less."""

    desirable: int = DEFAULT_DESIRABLE
    undesirable: int = DEFAULT_UNDESIRABLE

    def __post_init__(self) -> None:
        if not 1 <= self.undesirable < self.desirable <= 5:
            raise ValueError(
                f"need 1 <= undesirable ({self.undesirable}) < desirable ({self.desirable}) <= 5 stars"
            )


@dataclass(frozen=True)
class Provenance:
    """Where a row came from. `users` (hashed user keys) count against the per-user cap and are never
    written out."""

    source: str
    interaction_ids: tuple[str, ...] = ()
    reviewers: tuple[str, ...] = ()
    adapters: tuple[str, ...] = ()
    """The model(s) that produced the answers of the row: `NAME@VERSION`, `base`, or the A/B base model."""
    stars: tuple[int, ...] = ()
    correction_id: int | None = None
    ab_pair_id: int | None = None
    users: tuple[str, ...] = field(default=(), compare=False)

    def to_json(self) -> dict[str, Any]:
        """The `meta` written with the row (the same keys on every row, so it loads as one column)."""
        return {
            "source": self.source,
            "interaction_ids": list(self.interaction_ids),
            "reviewers": list(self.reviewers),
            "adapters": list(self.adapters),
            "stars": list(self.stars),
            "correction_id": self.correction_id,
            "ab_pair_id": self.ab_pair_id,
        }


@dataclass(frozen=True)
class PreferenceRow:
    """One row: a KTO row has `chosen` (label true) or `rejected` (label false); a DPO row has both."""

    prompt: tuple[Message, ...]
    chosen: str | None
    rejected: str | None
    provenance: Provenance

    @property
    def kind(self) -> str:
        """`dpo` for a pair, `kto` for a single labelled answer."""
        return "dpo" if self.chosen is not None and self.rejected is not None else "kto"

    @property
    def label(self) -> bool:
        """KTO's label: whether the answer is desirable (a DPO row has a chosen one: true)."""
        return self.chosen is not None

    @property
    def question(self) -> str:
        """The last user message: what the answer replies to."""
        return next((content for role, content in reversed(self.prompt) if role == "user"), "")

    @property
    def system(self) -> str | None:
        """The prompt's system message, if it has one."""
        return next((content for role, content in self.prompt if role == "system"), None)

    @property
    def id(self) -> str:
        """A stable id from the content (`pref-` and 12 hex digits)."""
        text = json.dumps([self.prompt, self.chosen, self.rejected], ensure_ascii=False)
        return "pref-" + hashlib.sha256(text.encode()).hexdigest()[:12]

    def to_trl(self) -> dict[str, Any]:
        """The row in TRL's conversational format: `prompt` as chat messages; KTO `completion` (one
        assistant message) and `label`; DPO `chosen` and `rejected` (assistant messages); plus `meta`."""
        prompt = [{"role": role, "content": content} for role, content in self.prompt]
        meta = {"id": self.id, **self.provenance.to_json()}
        if self.kind == "dpo":
            return {
                "prompt": prompt,
                "chosen": [_assistant(self.chosen)],
                "rejected": [_assistant(self.rejected)],
                "meta": meta,
            }
        return {
            "prompt": prompt,
            "completion": [_assistant(self.chosen if self.label else self.rejected)],
            "label": self.label,
            "meta": meta,
        }

    def scrubbed(self) -> PreferenceRow:
        """The row with personal data replaced by placeholders in every text; a name found in one text
        (the question's "nama saya ...") is replaced in the others too."""
        texts = [content for _, content in self.prompt] + [t for t in (self.chosen, self.rejected) if t]
        names = [name for text in texts for name in find_names(text)]
        return replace(
            self,
            prompt=tuple((role, scrub(content, names)) for role, content in self.prompt),
            chosen=None if self.chosen is None else scrub(self.chosen, names),
            rejected=None if self.rejected is None else scrub(self.rejected, names),
        )


@dataclass
class Candidates:
    """Rows made from the signals, and what was left out before any filter (by reason)."""

    rows: list[PreferenceRow]
    left_out: Counter[str]


def _assistant(text: str | None) -> dict[str, str]:
    return {"role": "assistant", "content": text or ""}


def as_prompt(messages: Sequence[Message]) -> tuple[Message, ...]:
    """The conversation as the model saw it: ZANTARA's system prompt first when it has no system message,
    and no trailing assistant message."""
    prompt = list(messages)
    while prompt and prompt[-1][0] == "assistant":
        prompt.pop()
    if not any(role == "system" for role, _ in prompt):
        prompt.insert(0, ("system", ZANTARA_SYSTEM_PROMPT))
    return tuple(prompt)


def question_prompt(question: str) -> tuple[Message, ...]:
    """A one-question prompt (an A/B pair, a correction whose interaction is gone)."""
    return as_prompt([("user", question)])


def candidates(kind: str, signals: PreferenceSignals, options: PreferenceOptions) -> Candidates:
    """Every row of `kind` (`kto` or `dpo`) the signals give, corrections first, then A/B, then ratings,
    personal data scrubbed."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    left_out: Counter[str] = Counter()
    rows: list[PreferenceRow] = []
    for record in signals.corrections:
        rows += _from_correction(kind, record, signals.corrected.get(record.interaction_id or ""))
    rows += _from_verdicts(kind, signals.verdicts, left_out)
    rows += _from_ratings(kind, signals.rated, options, left_out)
    return Candidates([row.scrubbed() for row in rows], left_out)


def _from_correction(kind: str, record: CorrectionRecord, answer: LoggedAnswer | None) -> list[PreferenceRow]:
    prompt = as_prompt(answer.messages) if answer else question_prompt(record.query)
    provenance = Provenance(
        source="correction",
        interaction_ids=(answer.interaction_id,) if answer else (),
        reviewers=(record.reviewer,) if record.reviewer else (),
        adapters=(answer.adapter,) if answer else (),
        stars=(answer.stars,) if answer and answer.stars is not None else (),
        correction_id=record.database_id,
        users=(answer.user,) if answer and answer.user else (),
    )
    wrong = answer.answer if answer else record.model_answer_wrong
    return _rows(kind, prompt, record.correct_answer, wrong, provenance)


def _from_verdicts(kind: str, verdicts: list[ABVerdict], left_out: Counter[str]) -> list[PreferenceRow]:
    by_pair: dict[int, list[ABVerdict]] = defaultdict(list)
    for verdict in verdicts:
        by_pair[verdict.pair_id].append(verdict)
    rows: list[PreferenceRow] = []
    for pair_id, judged in by_pair.items():
        votes = Counter(verdict.winner for verdict in judged)
        left_out["ab_tie_verdicts"] += votes["tie"]
        if votes["tuned"] == votes["base"]:
            left_out["ab_pairs_undecided"] += 1
            continue
        winner = "tuned" if votes["tuned"] > votes["base"] else "base"
        first = judged[0]
        answers = {"tuned": first.adapter_answer, "base": first.base_answer}
        models = {"tuned": first.adapter, "base": first.base_model}
        loser = "base" if winner == "tuned" else "tuned"
        provenance = Provenance(
            source="ab",
            reviewers=tuple(sorted({v.reviewer for v in judged if v.winner == winner})),
            adapters=(models[winner], models[loser]),
            ab_pair_id=pair_id,
        )
        rows += _rows(kind, question_prompt(first.question), answers[winner], answers[loser], provenance)
    return rows


def _from_ratings(
    kind: str, rated: list[LoggedAnswer], options: PreferenceOptions, left_out: Counter[str]
) -> list[PreferenceRow]:
    good = [a for a in rated if a.stars is not None and a.stars >= options.desirable]
    bad = [a for a in rated if a.stars is not None and a.stars <= options.undesirable]
    left_out["ratings_between_thresholds"] += len(rated) - len(good) - len(bad)
    if kind == "kto":
        return [_rated_row(answer, True) for answer in good] + [_rated_row(answer, False) for answer in bad]
    return _rated_pairs(good, bad, left_out)


def _rated_row(answer: LoggedAnswer, desirable: bool) -> PreferenceRow:
    return PreferenceRow(
        prompt=as_prompt(answer.messages),
        chosen=answer.answer if desirable else None,
        rejected=None if desirable else answer.answer,
        provenance=Provenance(
            source="rating",
            interaction_ids=(answer.interaction_id,),
            adapters=(answer.adapter,),
            stars=(answer.stars,) if answer.stars is not None else (),
            users=(answer.user,) if answer.user else (),
        ),
    )


def _rated_pairs(
    good: list[LoggedAnswer], bad: list[LoggedAnswer], left_out: Counter[str]
) -> list[PreferenceRow]:
    """Per conversation, the best-rated desirable answer with the worst-rated undesirable one, then the
    next two, and so on (each answer in one pair); answers without a partner are counted."""
    groups: dict[tuple[Message, ...], tuple[list[LoggedAnswer], list[LoggedAnswer]]] = defaultdict(
        lambda: ([], [])
    )
    for answer in good:
        groups[as_prompt(answer.messages)][0].append(answer)
    for answer in bad:
        groups[as_prompt(answer.messages)][1].append(answer)
    rows: list[PreferenceRow] = []
    for prompt, (ups, downs) in groups.items():
        ups = sorted(ups, key=lambda a: (-(a.stars or 0), a.created_at))
        downs = sorted(downs, key=lambda a: (a.stars or 0, a.created_at))
        left_out["ratings_without_partner"] += abs(len(ups) - len(downs))
        for up, down in zip(ups, downs, strict=False):
            provenance = Provenance(
                source="rating",
                interaction_ids=(up.interaction_id, down.interaction_id),
                adapters=(up.adapter, down.adapter),
                stars=tuple(s for s in (up.stars, down.stars) if s is not None),
                users=tuple(u for u in (up.user, down.user) if u),
            )
            rows.append(PreferenceRow(prompt, up.answer, down.answer, provenance))
    return rows


def _rows(
    kind: str, prompt: tuple[Message, ...], good: str, bad: str, provenance: Provenance
) -> list[PreferenceRow]:
    if kind == "dpo":
        return [PreferenceRow(prompt, good, bad, provenance)]
    return [PreferenceRow(prompt, good, None, provenance), PreferenceRow(prompt, None, bad, provenance)]


def adapters_of(rows: Sequence[PreferenceRow]) -> dict[str, int]:
    """How many rows each model's answers appear in (`base` for the base model)."""
    counts: Counter[str] = Counter(a for row in rows for a in dict.fromkeys(row.provenance.adapters))
    return dict(sorted(counts.items(), key=lambda item: (item[0] != BASE, item[0])))
