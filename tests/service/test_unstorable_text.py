"""Text PostgreSQL cannot hold never stops the ratings (issue 19: one sampled answer with a NUL sent
every later rating to the spool for good). The client gets what the model said; the stored copy has
U+FFFD in place of each NUL or lone surrogate, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from database.engine import create_db_engine, make_session_factory
from database.models import DeadLetter, Interaction, Rating
from feedback.text import storable, storable_json
from service.app import create_app
from service.engines.decoding import TextAssembler
from tests.conftest import running
from tests.service.helpers import chat_body, parse_sse, settled, stream_text

SAMPLED = 48
"""Answers sampled at the default settings in the sampling test (each rated)."""


def test_storable_replaces_nul_and_lone_surrogates_in_place() -> None:
    assert storable("a\x00b\ud800c\udfffd") == "a\ufffdb\ufffdc\ufffdd"
    assert storable("Rp10 miliar 🇮🇩") == "Rp10 miliar 🇮🇩"
    messages = [{"role": "user", "content": "x\x00", "name\x00": ["\ud83d", 1, None]}]
    assert storable_json(messages) == [
        {"role": "user", "content": "x\ufffd", "name\ufffd": ["\ufffd", 1, None]}
    ]


def _stored(database_url: str) -> tuple[dict[str, str], dict[str, tuple[int, str | None]], int]:
    """(answer per interaction, (stars, comment) per rated interaction, dead letters)."""
    engine = create_db_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            answers = {i.id: i.answer for i in session.scalars(select(Interaction))}
            ratings = {r.interaction_id: (r.stars, r.comment) for r in session.scalars(select(Rating))}
            dead = len(session.scalars(select(DeadLetter)).all())
        return answers, ratings, dead
    finally:
        engine.dispose()


async def test_an_answer_with_a_nul_is_stored_with_u_fffd_and_its_rating_at_once(
    settings_factory: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    next_piece = TextAssembler._next_piece

    def with_nul(self: TextAssembler, token_id: int) -> str | None:
        """The engine's first piece of text starts with a NUL, as a byte-level tokenizer can decode."""
        piece = next_piece(self, token_id)
        return "\x00" + piece if piece and not self._produced else piece

    monkeypatch.setattr(TextAssembler, "_next_piece", with_nul)
    app = create_app(settings_factory(database_url=database_url))
    async with running(app) as client:
        whole = await client.post("/v1/chat/completions", json=chat_body(max_tokens=8))
        streamed = await client.post("/v1/chat/completions", json=chat_body(max_tokens=8, stream=True))
        assert whole.status_code == streamed.status_code == 200, whole.text
        payloads = parse_sse(streamed)
        said = {
            whole.json()["id"]: whole.json()["choices"][0]["message"]["content"],
            json.loads(payloads[0])["id"]: stream_text(payloads),
        }
        assert all(answer.startswith("\x00") for answer in said.values()), said  # what the model said
        for stars, answer_id in enumerate(said, start=1):
            rated = await client.post(
                "/v1/feedback", json={"response_id": answer_id, "rating": stars, "comment": "salah\x00 ini"}
            )
            assert rated.status_code == 200 and rated.json()["status"] == "stored", rated.text
        await settled(client)
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "ready" and ready["checks"]["database"], ready
        assert ready["dead_letters"] == 0 and not any(ready["spool"].values()), ready
    answers, ratings, dead = _stored(database_url)
    assert answers == {key: answer.replace("\x00", "\ufffd") for key, answer in said.items()}
    assert ratings == {key: (stars, "salah\ufffd ini") for stars, key in enumerate(said, start=1)}
    assert dead == 0


async def test_every_rating_of_sampled_answers_is_stored_whatever_they_hold(
    settings_factory: Any, postgres_database_url: str
) -> None:
    """The demo model sampled at the default settings (temperature 1, top-p 1; `seed` only makes a run
    repeatable) can say anything its byte-level tokenizer decodes, a NUL included: every answer is
    stored and every rating with it, at once (200, nothing in the spool), whatever this build says.
    The chat API has no `logit_bias` to push sampling towards the NUL byte's token."""
    settings = settings_factory(database_url=postgres_database_url, max_concurrent_requests_per_key=0)
    app = create_app(settings)  # all from one client address: no per-caller bound
    async with running(app) as client:

        async def sample(seed: int) -> httpx.Response:
            body = {"model": "zantara", "messages": [{"role": "user", "content": f"Halo {seed}"}]}
            return await client.post("/v1/chat/completions", json=body | {"max_tokens": 8, "seed": seed})

        answers = await asyncio.gather(*(sample(seed) for seed in range(SAMPLED)))
        assert [a.status_code for a in answers] == [200] * SAMPLED
        said = {a.json()["id"]: a.json()["choices"][0]["message"]["content"] for a in answers}
        rated = await asyncio.gather(
            *(
                client.post("/v1/feedback", json={"response_id": key, "rating": 1 + i % 5})
                for i, key in enumerate(said)
            )
        )
        assert [r.json().get("status") for r in rated] == ["stored"] * SAMPLED
        await settled(client)
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "ready" and ready["dead_letters"] == 0, ready
    stored_answers, ratings, dead = _stored(postgres_database_url)
    assert stored_answers == {key: storable(answer) for key, answer in said.items()}
    assert ratings == {key: (1 + i % 5, None) for i, key in enumerate(said)}
    assert dead == 0
    print(f"{sum(storable(a) != a for a in said.values())} of {SAMPLED} sampled answers held unstorable text")
