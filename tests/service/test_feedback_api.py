"""`POST /v1/feedback` over HTTP: stored durably, replaced, flagged, counted; bad input changes nothing."""

from __future__ import annotations

import httpx
import pytest

from database.engine import create_db_engine, make_session_factory
from feedback.review_queue import list_queue
from tests.database import get_interaction
from tests.service.helpers import assert_error, chat_body, row_counts


async def _answer_id(client: httpx.AsyncClient, **extra: object) -> str:
    response = await client.post("/v1/chat/completions", json={**chat_body(max_tokens=4), **extra})
    return str(response.json()["id"])


async def test_a_rating_is_stored_replaced_and_low_ones_go_to_review(
    app_client: httpx.AsyncClient, database_url: str
) -> None:
    answer_id = await _answer_id(app_client, model="zantara-demo@v1", user="siti")
    first = await app_client.post(
        "/v1/feedback", json={"response_id": answer_id, "rating": 2, "comment": "Modal PT PMA salah"}
    )
    assert first.status_code == 200, first.text
    assert first.json() | {} == {
        "response_id": answer_id,
        "rating": 2,
        "comment": "Modal PT PMA salah",
        "variant": "tuned",
        "replaced_rating": None,
        "needs_review": True,
        "status": "stored",
    }
    engine = create_db_engine(database_url)
    sessions = make_session_factory(engine)
    stored = get_interaction(sessions, answer_id)
    assert stored is not None and stored.rating is not None and stored.rating.stars == 2
    assert stored.adapter_name == "zantara-demo" and stored.adapter_version == "v1"
    assert stored.user_hash and "siti" not in stored.user_hash
    assert stored.messages == [{"role": "user", "content": chat_body()["messages"][0]["content"]}]  # type: ignore[index]
    assert [i.interaction_id for i in list_queue(sessions).items] == [answer_id]

    second = await app_client.post("/v1/feedback", json={"response_id": answer_id, "rating": 5})
    assert second.json()["replaced_rating"] == 2 and second.json()["needs_review"] is False
    assert list_queue(sessions).items == []
    assert row_counts(database_url) == (1, 1)
    engine.dispose()


async def test_streamed_answers_can_be_rated_too(app_client: httpx.AsyncClient) -> None:
    response = await app_client.post("/v1/chat/completions", json=chat_body(stream=True, max_tokens=4))
    first_chunk = response.text.splitlines()[0].removeprefix("data:").strip()
    answer_id = httpx.Response(200, content=first_chunk).json()["id"]
    rated = await app_client.post("/v1/feedback", json={"response_id": answer_id, "rating": 4})
    assert rated.status_code == 200, rated.text


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"response_id": "chatcmpl-unknown", "rating": 3}, 404),
        ({"response_id": "ID", "rating": 0}, 422),
        ({"response_id": "ID", "rating": 6}, 422),
        ({"response_id": "ID", "rating": 4.5}, 422),
        ({"response_id": "ID", "rating": "lima"}, 422),
        ({"response_id": "ID"}, 422),
        ({"rating": 3}, 422),
        ({"response_id": "ID", "rating": 3, "comment": "x" * 5000}, 422),
        # a NUL names no answer (a comment's is stored as U+FFFD: tests/service/test_unstorable_text.py)
        ({"response_id": "chatcmpl-\u0000", "rating": 3}, 422),
    ],
)
async def test_bad_feedback_gets_a_4xx_and_keeps_the_stored_rating(
    app_client: httpx.AsyncClient, database_url: str, body: dict[str, object], status: int
) -> None:
    answer_id = await _answer_id(app_client)
    await app_client.post("/v1/feedback", json={"response_id": answer_id, "rating": 4})
    before = row_counts(database_url)
    payload = {k: (answer_id if v == "ID" else v) for k, v in body.items()}
    assert_error(await app_client.post("/v1/feedback", json=payload), status)
    assert row_counts(database_url) == before
    engine = create_db_engine(database_url)
    stored = get_interaction(make_session_factory(engine), answer_id)
    engine.dispose()
    assert stored is not None and stored.rating is not None and stored.rating.stars == 4
