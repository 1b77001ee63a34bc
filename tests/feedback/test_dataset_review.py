"""Dataset validation on SQLite and PostgreSQL: idempotent submission, several reviewers, majority,
edits, one verdict per reviewer, agreement."""

from __future__ import annotations

from dataclasses import dataclass

import krippendorff
import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from database.models import DatasetRecord
from feedback.dataset_review import (
    AlreadyReviewedError,
    UnknownRecordError,
    agreement,
    get_record,
    next_record,
    record_key,
    review,
    submit_records,
    summary,
    verdicts,
)
from feedback.reviewers import add_reviewer


@dataclass(frozen=True)
class Item:
    """A submitted pair (anything with these fields will do)."""

    question: str
    answer: str
    category: str | None = "company"
    register: str | None = "casual"
    source: str = "synthetic"


def item(n: int) -> Item:
    return Item(f"Kak, NIB perlu diperbarui tiap tahun? ({n})", f"Tidak perlu, kak. ({n})")


def reviewers(sessions: sessionmaker[Session], *names: str) -> list[int]:
    return [add_reviewer(sessions, name)[0].id for name in names]


def key(pair: Item) -> str:
    return record_key(pair.question, pair.answer)


def test_submission_is_idempotent_and_ids_follow_the_text(sessions: sessionmaker[Session]) -> None:
    assert record_key("q", "a") == record_key("q", "a") != record_key("q", "a.")
    assert submit_records(sessions, "ds-1", [item(1), item(2), item(2)]) == 2
    assert submit_records(sessions, "ds-2", [item(1), item(2), item(3)]) == 1
    assert submit_records(sessions, "ds-2", [item(1), item(2), item(3)]) == 0
    with sessions() as session:
        versions = {row.id: row.dataset_version for row in session.scalars(select(DatasetRecord))}
    assert versions == {key(item(1)): "ds-1", key(item(2)): "ds-1", key(item(3)): "ds-2"}
    planted = Item("nul\x00 and a lone \ud800 surrogate?", "answer")
    assert submit_records(sessions, "ds-2", [planted]) == 1
    stored = get_record(sessions, key(planted))
    assert stored is not None and stored.question == "nul\ufffd and a lone \ufffd surrogate?"


def test_one_review_decides_by_default_oldest_first(sessions: sessionmaker[Session]) -> None:
    ana, budi = reviewers(sessions, "ana", "budi")
    submit_records(sessions, "ds-1", [item(1)])
    submit_records(sessions, "ds-1", [item(2)])
    first = next_record(sessions, ana, 1)
    assert first is not None and first.id == key(item(1)) and first.reviews == 0
    assert review(sessions, first.id, ana, "approve").status == "validated"
    second = next_record(sessions, budi, 1)
    assert second is not None and second.id == key(item(2)), "a decided record is not handed out again"
    decided = review(sessions, second.id, budi, "reject", reason="salah kategori")
    assert (decided.status, decided.rejections) == ("rejected", 1)
    assert next_record(sessions, ana, 1) is None and next_record(sessions, budi, 1) is None


def test_two_reviewers_required_majority_rules_and_a_tie_waits(sessions: sessionmaker[Session]) -> None:
    ana, budi, citra = reviewers(sessions, "ana", "budi", "citra")
    submit_records(sessions, "ds-1", [item(1)])
    record = key(item(1))
    assert review(sessions, record, ana, "approve", required_reviews=2).status == "pending"
    assert next_record(sessions, ana, 2) is None, "never twice to one reviewer"
    shown = next_record(sessions, budi, 2)
    assert shown is not None and shown.reviews == 1
    tie = review(sessions, record, budi, "reject", required_reviews=2)
    assert (tie.status, tie.approvals, tie.rejections) == ("pending", 1, 1)
    assert next_record(sessions, citra, 2) is not None, "a tie goes to another reviewer"
    assert review(sessions, record, citra, "reject", required_reviews=2).status == "rejected"
    assert next_record(sessions, citra, 2) is None
    assert verdicts(sessions, 2)[record].status == "rejected"
    assert verdicts(sessions, 3)[record].status == "rejected"
    assert verdicts(sessions, 4)[record].status == "pending", "too few reviews for four required"


def test_an_edit_wins_with_the_latest_text_unless_the_majority_rejects(
    sessions: sessionmaker[Session],
) -> None:
    ana, budi, citra = reviewers(sessions, "ana", "budi", "citra")
    submit_records(sessions, "ds-1", [item(1), item(2)])
    kept, dropped = key(item(1)), key(item(2))
    review(sessions, kept, ana, "edit", answer="Tidak, NIB tidak punya masa berlaku tahunan.")
    after_two = review(sessions, kept, budi, "approve", required_reviews=2)
    assert (after_two.status, after_two.edited) == ("validated", True)
    assert after_two.answer == "Tidak, NIB tidak punya masa berlaku tahunan."
    assert after_two.question == item(1).question, "an edit without a question keeps the question"
    latest = review(sessions, kept, citra, "edit", question="NIB diperbarui tiap tahun?", answer="Tidak.")
    assert (latest.question, latest.answer, latest.edits, latest.approvals) == (
        "NIB diperbarui tiap tahun?",
        "Tidak.",
        2,
        1,
    )
    review(sessions, dropped, ana, "edit", answer="Ya.")
    review(sessions, dropped, budi, "reject")
    rejected = review(sessions, dropped, citra, "reject", required_reviews=2)
    assert (rejected.status, rejected.edited, rejected.answer) == ("rejected", False, item(2).answer)
    counts = summary(sessions, 2)
    assert (counts.records, counts.validated, counts.edited, counts.rejected, counts.pending) == (
        2,
        1,
        1,
        1,
        0,
    )
    assert counts.reviews == 6


def test_one_verdict_per_reviewer_and_malformed_verdicts_refused(sessions: sessionmaker[Session]) -> None:
    (ana,) = reviewers(sessions, "ana")
    submit_records(sessions, "ds-1", [item(1)])
    record = key(item(1))
    with pytest.raises(ValueError, match="changes nothing"):
        review(sessions, record, ana, "edit", answer=f"  {item(1).answer}\n")
    with pytest.raises(ValueError, match="only an edit"):
        review(sessions, record, ana, "approve", answer="x")
    with pytest.raises(ValueError, match="action"):
        review(sessions, record, ana, "maybe")
    with pytest.raises(UnknownRecordError):
        review(sessions, record_key("not", "submitted"), ana, "approve")
    with pytest.raises(UnknownRecordError):
        review(sessions, "rec-\x00; drop table", ana, "approve")
    review(sessions, record, ana, "approve")
    with pytest.raises(AlreadyReviewedError):
        review(sessions, record, ana, "reject")
    assert verdicts(sessions)[record].reviews == 1


def test_agreement_per_record_and_krippendorff_alpha(sessions: sessionmaker[Session]) -> None:
    ana, budi, citra = reviewers(sessions, "ana", "budi", "citra")
    items = [item(n) for n in range(4)]
    submit_records(sessions, "ds-1", items)
    assert agreement(sessions).krippendorff_alpha is None and agreement(sessions).records == 0
    votes = {
        0: {ana: "approve", budi: "approve", citra: "approve"},
        1: {ana: "reject", budi: "reject"},
        2: {ana: "approve", budi: "edit", citra: "approve"},
        3: {ana: "approve"},
    }
    for n, by in votes.items():
        for reviewer, action in by.items():
            if action == "edit":
                review(sessions, key(items[n]), reviewer, action, answer=f"Tidak perlu. ({n})")
            else:
                review(sessions, key(items[n]), reviewer, action)
    measured = agreement(sessions)
    assert measured.per_record == {
        key(items[0]): 1.0,
        key(items[1]): 1.0,
        key(items[2]): pytest.approx(2 / 3),
    }
    assert measured.mean_share == pytest.approx((1 + 1 + 2 / 3) / 3)
    labels = {"approve": 0.0, "edit": 1.0, "reject": 2.0}
    data = np.full((3, 3), np.nan)
    for column, n in enumerate((0, 1, 2)):
        for row, reviewer in enumerate((ana, budi, citra)):
            if reviewer in votes[n]:
                data[row, column] = labels[votes[n][reviewer]]
    expected = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    assert measured.krippendorff_alpha == pytest.approx(expected)
    assert 0 < expected < 1
    assert summary(sessions, 2).agreement.krippendorff_alpha == pytest.approx(expected)
