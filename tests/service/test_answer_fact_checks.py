"""Every served answer's figures are checked against the fact registry in the background (issue 22,
part 3): a figure contradicting a verified fact is a critical error stored with the interaction,
counted in `zantara_answer_fact_errors_total`, and puts the answer in the review queue without any
rating; a figure against a fact still waiting for confirmation is a warning. Through the real app and
the tiny demo model, on SQLite and PostgreSQL; the answer's text is planted through the engine's text
path, as a model would say it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from database.engine import create_db_engine, make_session_factory
from database.models import Interaction
from feedback.reviewers import add_reviewer
from service.app import create_app
from service.engines.decoding import TextAssembler
from tests.conftest import running
from tests.service.helpers import (
    bearer_headers,
    chat_body,
    csrf_of,
    metric_samples,
    metric_total,
    settled,
    sign_in,
)

PPN_QUESTION = "Berapa tarif PPN umum sekarang?"
WRONG = "Tarif PPN umum adalah 20%. Masa berlaku ITAS investor adalah 5 tahun. "
"""A critical error (PPN is a verified 11%) and a warning (the ITAS figure waits for confirmation)."""
RIGHT = "Tarif PPN umum adalah 11%. "


def _plant(monkeypatch: pytest.MonkeyPatch, said: list[str]) -> None:
    """The engine's first piece of text of each answer starts with `said[0]` (as the model says it)."""
    next_piece = TextAssembler._next_piece

    def planted(self: TextAssembler, token_id: int) -> str | None:
        piece = next_piece(self, token_id)
        return said[0] + piece if piece is not None and not self._produced else piece

    monkeypatch.setattr(TextAssembler, "_next_piece", planted)


def _checks(database_url: str) -> dict[str, tuple[int | None, int | None, list[dict[str, Any]] | None]]:
    """(critical, warnings, findings) per stored interaction."""
    engine = create_db_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            return {
                i.id: (i.fact_critical, i.fact_warnings, i.fact_findings)
                for i in session.scalars(select(Interaction))
            }
    finally:
        engine.dispose()


async def test_a_served_answer_contradicting_a_verified_fact_is_stored_counted_and_queued_unrated(
    settings_factory: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    said = [WRONG]
    _plant(monkeypatch, said)
    app = create_app(settings_factory(database_url=database_url))
    async with running(app) as client:
        wrong = await client.post("/v1/chat/completions", json=chat_body(PPN_QUESTION, max_tokens=4))
        streamed = await client.post(
            "/v1/chat/completions", json=chat_body(PPN_QUESTION, max_tokens=4, stream=True)
        )
        said[0] = RIGHT
        right = await client.post("/v1/chat/completions", json=chat_body(PPN_QUESTION, max_tokens=4))
        assert wrong.status_code == streamed.status_code == right.status_code == 200, wrong.text
        assert wrong.json()["choices"][0]["message"]["content"].startswith(WRONG)
        await settled(client)
        got = metric_samples((await client.get("/metrics")).text)
        reviewer = add_reviewer(app.state.zantara.sessions, "ana")[1]
        listed = await client.get("/review/api/queue", headers=bearer_headers(reviewer))
        await sign_in(client, reviewer)
        page = await client.get("/review/queue")
        fixed = await client.post(
            f"/review/api/queue/{wrong.json()['id']}",
            json={
                "action": "correct",
                "correct_answer": "Tarif PPN umum adalah 11% untuk barang dan jasa kena pajak pada umumnya.",
                "why_wrong": "Model menyebut tarif PPN yang salah.",
                "lesson": "Tarif PPN umum 11% (UU HPP).",
            },
            headers=bearer_headers(reviewer) | {"X-CSRF-Token": csrf_of(page.text)},
        )
        after = await client.get("/review/api/queue", headers=bearer_headers(reviewer))

    checks = _checks(database_url)
    wrong_id, right_id = wrong.json()["id"], right.json()["id"]
    (streamed_id,) = set(checks) - {wrong_id, right_id}
    for key in (wrong_id, streamed_id):
        critical, warnings, findings = checks[key]
        assert critical is not None and critical >= 1 and warnings is not None and warnings >= 1, checks[key]
        assert findings is not None
        (ppn,) = [f for f in findings if f["stated"] == "20%"]
        assert ppn["severity"] == "critical" and "ppn_rate_general" in {fact["id"] for fact in ppn["facts"]}
        assert any(f["severity"] == "warning" and f["stated"] == "5 tahun" for f in findings), findings
    assert checks[right_id][0] == 0, checks[right_id]

    labels = {"variant": wrong.headers["x-zantara-variant"], "severity": "critical"}
    assert metric_total(got, "zantara_answer_fact_errors_total", **labels) >= 1
    assert metric_total(got, "zantara_answer_fact_errors_total", severity="critical") >= 2
    assert metric_total(got, "zantara_answer_fact_errors_total", severity="warning") >= 2
    assert metric_total(got, "zantara_answers_fact_checked_total") == 3
    assert metric_total(got, "zantara_answers_fact_critical_total") == 2
    adapters = {wrong.headers.get("x-zantara-adapter", ""), streamed.headers.get("x-zantara-adapter", "")}
    served = [
        dict(pairs)
        for (name, pairs), value in got.items()
        if name == "zantara_answer_fact_errors_total" and value > 0
    ]
    assert served and all(s["adapter"] in adapters and s["target"] for s in served), served

    assert listed.status_code == 200, listed.text
    items = {item["interaction_id"]: item for item in listed.json()["items"]}
    assert set(items) == {wrong_id, streamed_id}, "unrated, yet in the queue; the right answer is not"
    item = items[wrong_id]
    assert item["stars"] is None and item["reason"] == "fact_error" and item["fact_critical"] >= 1
    assert any(f["stated"] == "20%" and f["severity"] == "critical" for f in item["fact_findings"])
    assert "Contradicts a verified fact" in page.text and "ppn_rate_general" in page.text
    assert "Not rated" in page.text
    assert fixed.status_code == 201, fixed.text
    assert [i["interaction_id"] for i in after.json()["items"]] == [streamed_id]


async def test_with_the_check_off_answers_are_stored_unchecked_and_stay_out_of_the_queue(
    settings_factory: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _plant(monkeypatch, [WRONG])
    app = create_app(settings_factory(database_url=database_url, fact_check_enabled=False))
    async with running(app) as client:
        wrong = await client.post("/v1/chat/completions", json=chat_body(PPN_QUESTION, max_tokens=4))
        await settled(client)
        got = metric_samples((await client.get("/metrics")).text)
        reviewer = add_reviewer(app.state.zantara.sessions, "ana")[1]
        listed = await client.get("/review/api/queue", headers=bearer_headers(reviewer))
    assert _checks(database_url)[wrong.json()["id"]] == (None, None, None)
    assert metric_total(got, "zantara_answers_fact_checked_total") == 0
    assert listed.json()["items"] == []


async def test_correction_rate_and_raters_per_adapter_are_exported(
    settings_factory: Any, database_url: str
) -> None:
    app = create_app(settings_factory(database_url=database_url, quality_refresh_s=0.05))
    async with running(app) as client:
        answers = [
            await client.post("/v1/chat/completions", json=chat_body(PPN_QUESTION, max_tokens=4, user=user))
            for user in ("ana", "budi")
        ]
        await settled(client)
        for answer in answers:
            rated = await client.post("/v1/feedback", json={"response_id": answer.json()["id"], "rating": 1})
            assert rated.status_code == 200, rated.text
        reviewer = add_reviewer(app.state.zantara.sessions, "ana")[1]
        fixed = await client.post(
            f"/review/api/queue/{answers[0].json()['id']}",
            json={
                "action": "correct",
                "correct_answer": "Tarif PPN umum adalah 11% untuk barang dan jasa kena pajak pada umumnya.",
                "why_wrong": "Model menyebut tarif PPN yang salah.",
                "lesson": "Tarif PPN umum 11% (UU HPP).",
            },
            headers=bearer_headers(reviewer),
        )
        assert fixed.status_code == 201, fixed.text
        adapters = {answer.headers.get("x-zantara-adapter", "") for answer in answers}
        assert len(adapters) == 1, "both users routed alike (the default rollout share)"
        (adapter,) = adapters
        for _ in range(500):
            got = metric_samples((await client.get("/metrics")).text)
            rate = got.get(("zantara_adapter_correction_rate", (("adapter", adapter),)))
            if rate == 0.5:
                break
            await asyncio.sleep(0.02)
    assert got[("zantara_adapter_correction_rate", (("adapter", adapter),))] == 0.5
    assert got[("zantara_adapter_raters", (("adapter", adapter),))] == 2
