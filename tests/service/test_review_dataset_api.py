"""The dataset validation JSON API and page over HTTP, on SQLite and PostgreSQL: reviewer tokens, the
next record, verdicts (once per reviewer), refusals in OpenAI's shape, the summary with agreement."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from feedback.dataset_review import record_key, submit_records, verdicts
from feedback.reviewers import add_reviewer
from service.app import create_app
from tests.conftest import running
from tests.service.helpers import PLANTED_HTML, assert_error, csrf_of


def refused(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    """OpenAI's error envelope with this status and code."""
    error = assert_error(response, status)
    assert error["code"] == code, error
    return error


@dataclass(frozen=True)
class Item:
    question: str
    answer: str
    category: str | None = "company"
    register: str | None = "casual"
    source: str = "synthetic"


ITEMS = [
    Item("Kak, NIB perlu diperbarui tiap tahun?", "Tidak perlu, kak; perbarui datanya kalau ada perubahan."),
    Item(
        f"Modal minimum PT PMA berapa? {PLANTED_HTML}", "Modal disetor minimal Rp10 miliar per bidang usaha."
    ),
]


@dataclass
class Review:
    """A running service (two reviews required per record), its sessions, and a client."""

    client: httpx.AsyncClient
    sessions: sessionmaker[Session]

    def reviewer(self, name: str) -> dict[str, str]:
        """Add a reviewer; bearer headers with their token."""
        return {"Authorization": f"Bearer {add_reviewer(self.sessions, name)[1]}"}


@pytest.fixture
async def served(settings_factory, database_url: str) -> AsyncIterator[Review]:  # type: ignore[no-untyped-def]
    app = create_app(settings_factory(database_url=database_url, dataset_reviews_required=2))
    async with running(app) as client:
        sessions = app.state.zantara.sessions
        submit_records(sessions, "ds-1", ITEMS[:1])
        submit_records(sessions, "ds-1", ITEMS[1:])
        yield Review(client, sessions)


async def test_the_api_needs_a_reviewer_token(served: Review) -> None:
    record = record_key(ITEMS[0].question, ITEMS[0].answer)
    for response in (
        await served.client.get("/review/api/dataset/next"),
        await served.client.get("/review/api/dataset/summary"),
        await served.client.post(f"/review/api/dataset/{record}", json={"action": "approve"}),
        await served.client.get("/review/api/dataset/next", headers={"Authorization": "Bearer zrv_wrong"}),
    ):
        refused(response, 401, "invalid_reviewer_token")
    assert verdicts(served.sessions)[record].reviews == 0


async def test_next_review_conflict_and_summary_with_two_reviewers(served: Review) -> None:
    ana, budi = served.reviewer("ana"), served.reviewer("budi")
    first = (await served.client.get("/review/api/dataset/next", headers=ana)).json()["record"]
    assert first["id"] == record_key(ITEMS[0].question, ITEMS[0].answer)
    assert (first["question"], first["register"], first["reviews"], first["required_reviews"]) == (
        ITEMS[0].question,
        "casual",
        0,
        2,
    )
    stored = await served.client.post(
        f"/review/api/dataset/{first['id']}", json={"action": "approve"}, headers=ana
    )
    assert stored.status_code == 201
    assert stored.json() == {
        "record_id": first["id"],
        "status": "stored",
        "record_status": "pending",
        "reviews": 1,
    }
    twice = await served.client.post(
        f"/review/api/dataset/{first['id']}", json={"action": "reject"}, headers=ana
    )
    refused(twice, 409, "already_reviewed")

    after = (await served.client.get("/review/api/dataset/next", headers=ana)).json()["record"]
    assert after["question"] == ITEMS[1].question, "the planted markup comes back as JSON text"
    same = (await served.client.get("/review/api/dataset/next", headers=budi)).json()["record"]
    assert (same["id"], same["reviews"]) == (first["id"], 1)
    edit = {
        "action": "edit",
        "answer": "Tidak. NIB tidak punya masa berlaku tahunan.",
        "reason": "lebih tegas",
    }
    decided = await served.client.post(f"/review/api/dataset/{first['id']}", json=edit, headers=budi)
    assert decided.status_code == 201 and decided.json()["record_status"] == "validated"
    assert verdicts(served.sessions, 2)[first["id"]].answer == edit["answer"]

    second = after["id"]
    for who, action in ((ana, "reject"), (budi, "reject")):
        response = await served.client.post(
            f"/review/api/dataset/{second}", json={"action": action}, headers=who
        )
        assert response.status_code == 201
    empty = (await served.client.get("/review/api/dataset/next", headers=budi)).json()
    assert empty["record"] is None and "every record has the reviews it needs" in empty["message"]

    summary = (await served.client.get("/review/api/dataset/summary", headers=ana)).json()
    assert {
        key: summary[key] for key in ("required_reviews", "records", "validated", "edited", "rejected")
    } == {
        "required_reviews": 2,
        "records": 2,
        "validated": 1,
        "edited": 1,
        "rejected": 1,
    }
    assert (summary["pending"], summary["reviews"]) == (0, 4)
    assert summary["agreement"]["records"] == 2
    assert summary["agreement"]["mean_share"] == pytest.approx(0.75)
    assert summary["agreement"]["krippendorff_alpha"] is not None


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "action"),
        ({"action": "maybe"}, "action"),
        ({"action": 1}, "action"),
        ({"action": "approve", "extra": True}, "extra"),
        ({"action": "approve", "answer": "x"}, None),
        ({"action": "edit"}, None),
        ({"action": "edit", "answer": ""}, "answer"),
        ({"action": "edit", "question": "q" * 4001}, "question"),
        ({"action": "reject", "reason": 5}, "reason"),
        ({"action": "reject", "reason": "r" * 2001}, "reason"),
    ],
)
async def test_malformed_verdicts_are_refused_with_422(
    served: Review, body: dict[str, object], param: str | None
) -> None:
    ana = served.reviewer("ana")
    record = record_key(ITEMS[0].question, ITEMS[0].answer)
    response = await served.client.post(f"/review/api/dataset/{record}", json=body, headers=ana)
    refused(response, 422, "invalid_value")
    if param:
        assert response.json()["error"]["param"] == param
    assert verdicts(served.sessions)[record].reviews == 0


async def test_unknown_records_bad_json_and_empty_edits(served: Review) -> None:
    ana = served.reviewer("ana")
    record = record_key(ITEMS[0].question, ITEMS[0].answer)
    for unknown in (record_key("not", "submitted"), "rec-%00", "x" * 200):
        response = await served.client.post(
            f"/review/api/dataset/{unknown}", json={"action": "approve"}, headers=ana
        )
        refused(response, 404, "record_not_found")
    too_long = await served.client.post(
        f"/review/api/dataset/{'x' * 201}", json={"action": "approve"}, headers=ana
    )
    refused(too_long, 422, "invalid_value")
    broken = await served.client.post(
        f"/review/api/dataset/{record}",
        content=b'{"action": ',
        headers={**ana, "Content-Type": "application/json"},
    )
    refused(broken, 400, "invalid_json")
    unchanged = {"action": "edit", "answer": ITEMS[0].answer + "\n"}
    response = await served.client.post(f"/review/api/dataset/{record}", json=unchanged, headers=ana)
    refused(response, 422, "invalid_review")
    surrogate = json.dumps({"action": "edit", "answer": "Tidak \ud800."}).encode()  # sent as \\ud800
    response = await served.client.post(
        f"/review/api/dataset/{record}",
        content=surrogate,
        headers={**ana, "Content-Type": "application/json"},
    )
    refused(response, 422, "invalid_value")
    nul = {"action": "edit", "answer": "Tidak\x00 perlu."}
    response = await served.client.post(f"/review/api/dataset/{record}", json=nul, headers=ana)
    assert response.status_code == 201, response.text
    assert verdicts(served.sessions)[record].answer == "Tidak\ufffd perlu."


async def test_the_page_signs_in_escapes_text_and_takes_the_form(served: Review) -> None:
    token = served.reviewer("ana")["Authorization"].removeprefix("Bearer ")
    signed_out = await served.client.get("/review/dataset")
    assert signed_out.headers["location"] == "/review/login?next=/review/dataset"
    login = await served.client.get("/review/login", params={"next": "/review/dataset"})
    signed = await served.client.post(
        "/review/login", data={"token": token, "csrf_token": csrf_of(login.text), "next": "/review/dataset"}
    )
    assert signed.status_code == 303 and signed.headers["location"] == "/review/dataset"

    page = await served.client.get("/review/dataset")
    assert page.status_code == 200 and ITEMS[0].question in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "Agreement shows once a record has two or more reviews." in page.text
    csrf, first = csrf_of(page.text), record_key(ITEMS[0].question, ITEMS[0].answer)
    forged = await served.client.post(
        "/review/dataset", data={"csrf_token": "x", "record_id": first, "action": "approve"}
    )
    assert forged.status_code == 403 and verdicts(served.sessions)[first].reviews == 0
    done = await served.client.post(
        "/review/dataset",
        data={
            "csrf_token": csrf,
            "record_id": first,
            "action": "approve",
            "question": "ignored",
            "answer": "",
        },
    )
    assert done.status_code == 303 and done.headers["location"] == "/review/dataset?saved=approved"

    page = await served.client.get("/review/dataset?saved=approved")
    assert "Saved: approved." in page.text
    assert (
        "&lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt;" in page.text
        and PLANTED_HTML not in page.text
    )
    second = record_key(ITEMS[1].question, ITEMS[1].answer)
    edit = {"csrf_token": csrf, "record_id": second, "action": "edit", "question": ITEMS[1].question}
    crlf = await served.client.post(
        "/review/dataset", data={**edit, "answer": "Modal disetor\r\nminimal Rp10 miliar."}
    )
    assert crlf.status_code == 303 and crlf.headers["location"] == "/review/dataset?saved=edited"
    edited = (await served.client.get("/review/api/dataset/summary")).json()
    assert edited["pending"] == 2, "two reviews are required"
    assert verdicts(served.sessions)[second].edits == 1
    empty = await served.client.get("/review/dataset")
    assert 'id="queue-empty"' in empty.text and "every record has the reviews it needs" in empty.text
    budi = served.reviewer("budi")
    second_opinion = await served.client.post(
        f"/review/api/dataset/{first}", json={"action": "reject"}, headers=budi
    )
    assert second_opinion.json()["record_status"] == "pending", "one approval, one rejection: a tie"
    page = await served.client.get("/review/dataset")
    assert (
        "Reviewers agree on 50% of verdicts" in page.text and "1 record with two or more reviews" in page.text
    )
    assert 'id="count-pending">2<' in page.text

    asset = await served.client.get("/review/dataset/assets/review_dataset.js")
    assert asset.status_code == 200 and asset.headers["content-type"].startswith("text/javascript")
    refused(await served.client.get("/review/dataset/assets/settings.py"), 404, "not_found")
    assert_error(await served.client.get("/review/dataset/assets/..%2F..%2Fsettings.py"), 404)
