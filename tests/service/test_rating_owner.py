"""Who may rate an answer, and what a rating may cost the service: with API keys, only the key that
received the answer (any other gets the 404 of an unknown id, so ids cannot be probed); an id that
cannot be ours is a 404 before anything is spooled; a full spool refuses ratings with a 503."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import create_engine, select

from database.engine import DirectConnections, create_db_engine, make_session_factory
from database.models import Interaction, Rating
from service.app import create_app
from tests.conftest import running
from tests.database import UNREACHABLE_DATABASE_URL
from tests.service.helpers import (
    assert_error,
    chat_body,
    metric_samples,
    metric_total,
    service_state,
    settled,
    until,
)

KEY_A, KEY_B = "kunci-pertama-0123456789", "kunci-kedua-0123456789"
HASH_KEY = "user-hash-key-0123456789abcdef"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}


@asynccontextmanager
async def outage(app: FastAPI) -> AsyncIterator[None]:
    """The database unreachable for the service (as in `test_durability`), then back."""
    state = service_state(app)
    database, bind, direct = state.database, state.sessions.kw["bind"], state.feedback.direct
    unreachable, unreachable_direct = (
        create_engine(UNREACHABLE_DATABASE_URL),
        DirectConnections(UNREACHABLE_DATABASE_URL),
    )
    state.database = unreachable
    state.sessions.configure(bind=unreachable)
    state.feedback.direct = unreachable_direct
    try:
        yield
    finally:
        state.database = database
        state.sessions.configure(bind=bind)
        state.feedback.direct = direct
        unreachable.dispose()
        await unreachable_direct.close()


async def _answer(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> str:
    answer = await client.post("/v1/chat/completions", json=chat_body(max_tokens=2), headers=headers)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


async def _rate(
    client: httpx.AsyncClient, answer_id: str, stars: int, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.post(
        "/v1/feedback", json={"response_id": answer_id, "rating": stars}, headers=headers
    )


def _assert_unknown(response: httpx.Response, answer_id: str) -> None:
    """The 404 an id nobody has gets, word for word."""
    error = assert_error(response, 404)
    assert error["code"] == "response_not_found" and error["message"] == f"No answer with id {answer_id!r}."


def _stored(database_url: str) -> dict[str, tuple[str | None, int | None]]:
    engine = create_db_engine(database_url)
    with make_session_factory(engine)() as session:
        rows = session.execute(
            select(Interaction.id, Interaction.key_hash, Rating.stars).outerjoin(Rating)
        ).all()
    engine.dispose()
    return {key: (key_hash, stars) for key, key_hash, stars in rows}


async def test_only_the_key_that_received_an_answer_rates_it(
    settings_factory: Any, database_url: str
) -> None:
    settings = settings_factory(database_url=database_url, api_keys=[KEY_A, KEY_B], user_hash_key=HASH_KEY)
    async with running(create_app(settings)) as client:
        answer_id = await _answer(client, A)
        await settled(client)
        assert (await _rate(client, answer_id, 4, A)).status_code == 200
        _assert_unknown(await _rate(client, answer_id, 1, B), answer_id)
        unknown = f"chatcmpl-{uuid.uuid4().hex}"
        _assert_unknown(await _rate(client, unknown, 1, B), unknown)
        again = await _rate(client, answer_id, 5, A)
        assert again.status_code == 200 and again.json()["replaced_rating"] == 4, again.text
    ((key_hash, stars),) = _stored(database_url).values()
    assert stars == 5 and key_hash is not None
    assert key_hash not in (KEY_A, hashlib.sha256(KEY_A.encode()).hexdigest())  # keyed: not a plain hash
    assert key_hash != hmac.new(HASH_KEY.encode(), KEY_A.encode(), hashlib.sha256).hexdigest()  # not a user


async def test_while_the_database_is_down_another_key_cannot_rate_a_waiting_answer(
    settings_factory: Any, postgres_database_url: str
) -> None:
    settings = settings_factory(
        database_url=postgres_database_url, api_keys=[KEY_A, KEY_B], spool_retry_s=0.1
    )
    app = create_app(settings)
    async with running(app) as client:
        feedback = service_state(app).feedback
        async with outage(app):
            answer_id = await _answer(client, A)
            _assert_unknown(await _rate(client, answer_id, 1, B), answer_id)  # in the buffer, or spooled
            await until(lambda: feedback.buffered == 0 and feedback.spooled()["interaction"] == 1, "spooling")
            _assert_unknown(await _rate(client, answer_id, 1, B), answer_id)  # in the spool
            mine = await _rate(client, answer_id, 4, A)
            assert mine.status_code == 202 and mine.json()["status"] == "queued", mine.text
            assert feedback.spooled()["rating"] == 1
        await until(lambda: not any(feedback.spooled().values()), "the spool to drain")
    assert [stars for _, stars in _stored(postgres_database_url).values()] == [4]


async def test_with_no_keys_anyone_rates_any_answer(settings_factory: Any, database_url: str) -> None:
    async with running(create_app(settings_factory(database_url=database_url))) as client:
        answer_id = await _answer(client, A)
        await settled(client)
        for stars, headers in ((2, B), (3, None), (4, {"Authorization": "Bearer junk"})):
            assert (await _rate(client, answer_id, stars, headers)).status_code == 200
    assert list(_stored(database_url).values()) == [(None, 4)]


async def test_an_id_that_cannot_be_ours_is_a_404_and_nothing_is_spooled(
    settings_factory: Any, postgres_database_url: str
) -> None:
    app = create_app(settings_factory(database_url=postgres_database_url, spool_retry_s=0.1))
    async with running(app) as client, outage(app):
        ours = await _answer(client)
        for bad in ("chatcmpl-unknown", f"chatcmpl-{uuid.uuid4().hex.upper()}", f"x{ours}", f"{ours}0", "1"):
            _assert_unknown(await _rate(client, bad, 1), bad)
        assert service_state(app).feedback.spooled()["rating"] == 0
        queued = await _rate(client, ours, 1)
        assert queued.status_code == 202, queued.text


async def test_a_full_spool_refuses_ratings_with_a_503_and_counts_them(
    settings_factory: Any, postgres_database_url: str
) -> None:
    cap = 4096
    settings = settings_factory(database_url=postgres_database_url, spool_max_bytes=cap, spool_retry_s=0.1)
    app = create_app(settings)
    async with running(app) as client, outage(app):
        feedback = service_state(app).feedback
        refused = None
        for _ in range(200):  # ratings of answers nobody here knows: each waits in the spool
            rated = await _rate(client, f"chatcmpl-{uuid.uuid4().hex}", 5)
            if rated.status_code != 202:
                refused = rated
                break
        assert refused is not None, "the spool never filled"
        error = assert_error(refused, 503)
        assert error["code"] == "spool_full" and int(refused.headers["retry-after"]) > 0
        assert cap <= feedback.spool_bytes < 2 * cap
        ours = await _answer(client)
        await until(lambda: feedback.buffered == 0, "the answer to be dropped")
        assert_error(await _rate(client, ours, 5), 503)
        got = metric_samples((await client.get("/metrics")).text)
    assert metric_total(got, "zantara_feedback_refused_total", reason="spool_full") == 2
    assert metric_total(got, "zantara_feedback_dropped_total", kind="interaction") == 1
