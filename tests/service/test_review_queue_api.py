"""The review queue's JSON API and page over HTTP (real app, tiny model), on SQLite and PostgreSQL:
reviewer auth, listing, correcting (checked against the fact registry and the dataset checks, with a
reviewer's override), dismissing, bad input."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from database.models import Correction
from feedback.records import InteractionRecord
from feedback.review_queue import corrections_after, reject_corrections
from feedback.reviewers import add_reviewer
from feedback.store import save_interactions
from knowledge.paths import SEED_FILE
from service.app import create_app
from tests.conftest import running
from tests.database import rate_interaction
from tests.service.helpers import (
    PLANTED_HTML,
    assert_error,
    bearer_headers,
    chat_body,
    csrf_of,
    settled,
    sign_in,
)

PPN_QUESTION = "Berapa tarif PPN umum sekarang?"
RIGHT = {
    "action": "correct",
    "correct_answer": "Tarif PPN umum adalah 11% untuk barang dan jasa kena pajak pada umumnya.",
    "why_wrong": "Model menyebut tarif yang salah.",
    "lesson": "Tarif PPN umum 11% (UU HPP).",
}


@dataclass
class Queue:
    """A running service, its database sessions, a reviewer's bearer headers."""

    client: httpx.AsyncClient
    sessions: sessionmaker[Session]
    auth: dict[str, str]

    def plant(
        self, key: str, stars: int, *, answer: str = "Tarif PPN 15%.", question: str = PPN_QUESTION
    ) -> str:
        save_interactions(
            self.sessions,
            [
                InteractionRecord(
                    id=key,
                    user_hash="u",
                    model_requested="zantara",
                    routed=True,
                    variant="tuned",
                    adapter_name="zantara-demo",
                    adapter_version="v1",
                    messages=[{"role": "user", "content": question}],
                    answer=answer,
                    finish_reason="stop",
                    prompt_tokens=3,
                    completion_tokens=3,
                    latency_s=0.1,
                    ttft_s=None,
                    params={},
                    streamed=False,
                    target="canary",
                )
            ],
        )
        rate_interaction(self.sessions, interaction_id=key, stars=stars, comment=f"salah ({key})")
        return key

    def corrections(self) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.count()).select_from(Correction)) or 0

    async def listed(self) -> list[str]:
        response = await self.client.get("/review/api/queue", headers=self.auth)
        assert response.status_code == 200, response.text
        return [item["interaction_id"] for item in response.json()["items"]]

    async def act(self, key: str, body: object, suffix: str = "") -> httpx.Response:
        return await self.client.post(f"/review/api/queue/{key}{suffix}", json=body, headers=self.auth)


@pytest.fixture
async def queue(settings_factory, database_url: str) -> AsyncIterator[Queue]:  # type: ignore[no-untyped-def]
    app = create_app(settings_factory(database_url=database_url))
    async with running(app) as client:
        sessions = app.state.zantara.sessions
        yield Queue(client, sessions, bearer_headers(add_reviewer(sessions, "ana")[1]))


async def test_a_low_rated_chat_answer_is_listed_corrected_and_leaves_the_queue(queue: Queue) -> None:
    chat = await queue.client.post("/v1/chat/completions", json=chat_body(PPN_QUESTION, user="siti"))
    assert chat.status_code == 200, chat.text
    answer_id = chat.json()["id"]
    await settled(queue.client)
    rated = await queue.client.post(
        "/v1/feedback", json={"response_id": answer_id, "rating": 1, "comment": "ngawur"}
    )
    assert rated.status_code == 200, rated.text
    queue.plant("two-stars", 2)
    queue.plant("four-stars", 4)

    listed = await queue.client.get("/review/api/queue", headers=queue.auth)
    assert listed.status_code == 200
    page = listed.json()
    assert (page["total"], page["limit"], page["offset"]) == (2, 50, 0)
    first, second = page["items"]
    assert (first["interaction_id"], second["interaction_id"]) == (answer_id, "two-stars")
    assert first["variant"] == chat.headers["x-zantara-variant"]
    assert first["adapter"] == chat.headers.get("x-zantara-adapter")
    assert first["answer"] == chat.json()["choices"][0]["message"]["content"]
    assert (first["stars"], first["comment"], first["query"]) == (1, "ngawur", PPN_QUESTION)
    assert first["messages"][-1] == {"role": "user", "content": PPN_QUESTION}
    assert second["adapter"] == "zantara-demo@v1" and second["target"] == "canary"
    paged = await queue.client.get("/review/api/queue", params={"limit": 1, "offset": 1}, headers=queue.auth)
    assert [i["interaction_id"] for i in paged.json()["items"]] == ["two-stars"] and paged.json()[
        "total"
    ] == 2

    stored = await queue.act(answer_id, RIGHT)
    assert stored.status_code == 201, stored.text
    assert stored.json()["status"] == "corrected" and stored.json()["category"] == "tax"
    assert await queue.listed() == ["two-stars"]
    (correction,) = corrections_after(queue.sessions, None)
    assert correction.database_id == stored.json()["correction_id"] and correction.reviewer == "ana"
    assert (correction.query, correction.correct_answer) == (PPN_QUESTION, RIGHT["correct_answer"])
    assert correction.model_answer_wrong == first["answer"]

    again = assert_error(await queue.act(answer_id, RIGHT), 409)
    assert again["code"] == "already_corrected" and again["type"] == "conflict_error"
    dismissed = await queue.act("two-stars", {"action": "dismiss", "reason": "Pertanyaan di luar topik."})
    assert dismissed.status_code == 201 and dismissed.json() == {
        "interaction_id": "two-stars",
        "status": "dismissed",
        "correction_id": None,
        "category": None,
    }
    assert await queue.listed() == []
    assert assert_error(await queue.act("two-stars", RIGHT), 409)["code"] == "already_dismissed"
    assert assert_error(await queue.act("four-stars", RIGHT), 409)["code"] == "not_in_queue"
    for unknown in ("no-such-id", "x" * 64):
        assert assert_error(await queue.act(unknown, RIGHT), 404)["code"] == "not_found"
        assert_error(await queue.act(unknown, {"action": "dismiss", "reason": "r"}), 404)
        assert_error(await queue.act(unknown, {"correct_answer": "a"}, "/check"), 404)
    assert queue.corrections() == 1


async def test_a_correction_contradicting_a_verified_fact_is_refused_with_the_fact(queue: Queue) -> None:
    queue.plant("ppn", 1)
    wrong = {**RIGHT, "correct_answer": "Tarif PPN umum adalah 15%."}

    checked = await queue.act("ppn", {"correct_answer": wrong["correct_answer"]}, "/check")
    assert checked.status_code == 200, checked.text
    result = checked.json()
    assert result["ok"] is False
    facts = {issue["fact_id"]: issue for issue in result["contradictions"]}
    assert "ppn_rate_general" in facts
    assert facts["ppn_rate_general"]["value"] == "11%" and facts["ppn_rate_general"]["stated"] == "15%"
    assert "PPN" in facts["ppn_rate_general"]["statement"] and "11%" in facts["ppn_rate_general"]["detail"]

    refused = assert_error(await queue.act("ppn", wrong), 422)
    assert refused["code"] == "fact_contradiction" and refused["param"] == "correct_answer"
    assert "ppn_rate_general" in str(refused["message"]) and "11%" in str(refused["message"])
    assert queue.corrections() == 0 and await queue.listed() == ["ppn"]

    fine = await queue.act("ppn", {"correct_answer": RIGHT["correct_answer"]}, "/check")
    assert fine.json() == {"ok": True, "contradictions": [], "warnings": [], "problems": []}
    assert (await queue.act("ppn", RIGHT)).status_code == 201
    assert queue.corrections() == 1


SEED = json.loads(SEED_FILE.open().readline())
FORMAL_QUESTION = SEED["variants"]["formal"][0]
"""A formally asked question of the seed bank, whose golden answer is written casually."""


async def test_a_correction_failing_a_dataset_check_is_refused_naming_the_rule_unless_overridden(
    queue: Queue,
) -> None:
    """The seed's own casual golden answer to a formal question fails the `tone` check, as the retrain's
    dataset build would find it: refused with the rule and the words; saved with a reviewer's reason."""
    queue.plant("formal", 1, question=FORMAL_QUESTION, answer="Tidak ada syarat khusus.")
    casual = {**RIGHT, "correct_answer": SEED["golden_answer"]}

    checked = (await queue.act("formal", {"correct_answer": casual["correct_answer"]}, "/check")).json()
    assert checked["ok"] is False and checked["contradictions"] == []
    [problem] = checked["problems"]
    assert (problem["check"], problem["overridable"]) == ("tone", True)
    assert "formal question answered with casual words" in problem["message"]
    assert "banget" in problem["message"] and "nggak" in problem["message"]

    refused = assert_error(await queue.act("formal", casual), 422)
    assert refused["code"] == "dataset_check_failed" and refused["param"] == "correct_answer"
    assert "tone: formal question answered with casual words" in str(refused["message"])
    assert "override_reason" in str(refused["message"])
    assert queue.corrections() == 0 and await queue.listed() == ["formal"]

    reason = "Pelanggan bertanya formal tetapi kami ingin jawaban yang ramah."
    saved = await queue.act("formal", {**casual, "override_reason": reason})
    assert saved.status_code == 201, saved.text
    queue.plant("fine", 1)
    assert (await queue.act("fine", {**RIGHT, "override_reason": "Tidak perlu."})).status_code == 201
    overridden, passed = corrections_after(queue.sessions, None)
    assert overridden.check_override == reason and overridden.correct_answer == SEED["golden_answer"]
    assert passed.check_override is None, "a correction that passes keeps no override"
    assert await queue.listed() == []

    assert passed.database_id is not None
    reject_corrections(queue.sessions, {passed.database_id: "completeness: the answer has only 4 words"})
    page = (await queue.client.get("/review/api/queue", headers=queue.auth)).json()
    [back] = page["items"]
    assert back["interaction_id"] == "fine" and back["rejected"]["correction_id"] == passed.database_id
    assert back["rejected"]["reason"] == "completeness: the answer has only 4 words"
    assert back["rejected"]["correct_answer"] == RIGHT["correct_answer"]


BAD_BODIES: list[object] = [
    {},
    {"action": "approve"},
    {"correct_answer": "x", "why_wrong": "y", "lesson": "z"},
    {**RIGHT, "correct_answer": ""},
    {**RIGHT, "correct_answer": "   "},
    {**RIGHT, "why_wrong": None},
    {**RIGHT, "lesson": 5},
    {**RIGHT, "correct_answer": "x" * 20_001},
    {**RIGHT, "correct_answer": "nul\x00byte"},
    {**RIGHT, "reason": "extra field"},
    {**RIGHT, "override_reason": "   "},
    {"action": "dismiss"},
    {"action": "dismiss", "reason": ""},
    {"action": "dismiss", "reason": "ok", "correct_answer": "x"},
    [RIGHT],
    "correct",
]


async def test_bad_requests_are_4xx_in_openai_shape_and_change_nothing(queue: Queue) -> None:
    queue.plant("item", 1)
    for body in BAD_BODIES:
        error = assert_error(await queue.act("item", body), 422)
        assert error["type"] == "invalid_request_error", body
    broken = await queue.client.post(
        "/review/api/queue/item",
        content=b'{"action": ',
        headers={**queue.auth, "Content-Type": "application/json"},
    )
    assert_error(broken, 400)
    for params in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "many"}):
        assert_error(await queue.client.get("/review/api/queue", params=params, headers=queue.auth), 422)
    assert_error(await queue.act("x" * 65, RIGHT), 422)
    assert_error(await queue.act("item", {"correct_answer": ""}, "/check"), 422)
    assert_error(await queue.act("item", {"correct_answer": "a", "extra": 1}, "/check"), 422)
    assert queue.corrections() == 0 and await queue.listed() == ["item"]


async def test_the_api_needs_a_reviewer_and_the_page_needs_csrf(queue: Queue) -> None:
    queue.plant("item", 1, answer=PLANTED_HTML)
    for call in (
        queue.client.get("/review/api/queue"),
        queue.client.post("/review/api/queue/item", json=RIGHT),
        queue.client.post("/review/api/queue/item/check", json={"correct_answer": "a"}),
        queue.client.get("/review/api/queue", headers=bearer_headers("zrv_wrong")),
    ):
        error = assert_error(await call, 401)
        assert error["code"] == "invalid_reviewer_token"

    signed_out = await queue.client.get("/review/queue")
    assert (
        signed_out.status_code == 303 and signed_out.headers["location"] == "/review/login?next=/review/queue"
    )
    token = add_reviewer(queue.sessions, "budi")[1]
    assert (await sign_in(queue.client, token)).status_code == 303
    page = await queue.client.get("/review/queue")
    assert page.status_code == 200 and "budi" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "<script>document.title" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt;" in page.text
    assert 'data-id="item"' in page.text and "salah (item)" in page.text and "zantara-demo@v1" in page.text
    for name, kind in (("review_queue.js", "javascript"), ("review_queue.css", "css")):
        static = await queue.client.get(f"/review/queue/static/{name}")
        assert static.status_code == 200 and kind in static.headers["content-type"]
    assert_error(await queue.client.get("/review/queue/static/..%2fsettings.py"), 404)

    listed = await queue.client.get("/review/api/queue")
    assert listed.status_code == 200 and listed.json()["total"] == 1, "the page's cookie reads the queue"
    forged = await queue.client.post("/review/api/queue/item", json=RIGHT)
    assert assert_error(forged, 403)["code"] == "csrf_failed"
    done = await queue.client.post(
        "/review/api/queue/item",
        json={"action": "dismiss", "reason": "Sudah benar."},
        headers={"X-CSRF-Token": csrf_of(page.text)},
    )
    assert done.status_code == 201, done.text
    empty = await queue.client.get("/review/queue")
    assert "no low-rated answers are waiting" in empty.text and 'data-id="item"' not in empty.text
