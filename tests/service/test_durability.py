"""The service when the database goes away, when a client goes away, and what the metrics say about
ratings: answers go on, nothing acknowledged is lost, the dashboard's satisfaction is the database's."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import create_engine, func, select

from database.engine import DirectConnections, create_db_engine, make_session_factory
from database.models import Interaction, Rating
from service.app import create_app
from service.chat import CANCELLED
from tests.conftest import running, served
from tests.database import UNREACHABLE_DATABASE_URL
from tests.service.helpers import (
    chat_body,
    metric_samples,
    metric_total,
    parse_sse,
    row_counts,
    service_state,
    until,
)


async def test_prepare_queries_and_tokenises_off_the_event_loop(
    settings_factory: Any, postgres_database_url: str
) -> None:
    app = create_app(settings_factory(database_url=postgres_database_url))
    async with running(app) as client:
        state = service_state(app)
        threads: dict[str, int] = {}

        def spy(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any, **kwargs: Any) -> Any:
                threads[name] = threading.get_ident()
                return real(*args, **kwargs)

            return call

        state.rollout.current = spy("rollout", state.rollout.current)  # type: ignore[method-assign]
        state.engine.prepare = spy("tokenise", state.engine.prepare)  # type: ignore[method-assign]
        response = await client.post("/v1/chat/completions", json=chat_body(max_tokens=2))
        assert response.status_code == 200, response.text
        assert set(threads) == {"rollout", "tokenise"}
        assert threading.get_ident() not in threads.values(), "blocking work ran on the event loop"


async def test_satisfaction_from_metrics_equals_the_database_after_re_ratings(
    settings_factory: Any, postgres_database_url: str
) -> None:
    app = create_app(settings_factory(database_url=postgres_database_url))
    async with running(app) as client:
        ids: dict[str, list[str]] = {"tuned": [], "base": []}
        for model, variant in (("zantara-demo@v1", "tuned"), ("zantara-demo-base", "base")):
            for _ in range(3):
                answer = await client.post("/v1/chat/completions", json=chat_body(model=model, max_tokens=2))
                ids[variant].append(answer.json()["id"])
        ratings = [("tuned", 0, 5), ("tuned", 1, 1), ("tuned", 0, 2), ("tuned", 0, 4), ("tuned", 2, 3)]
        ratings += [("base", 0, 1), ("base", 0, 5), ("base", 1, 2)]
        for variant, index, stars in ratings:
            rated = await client.post(
                "/v1/feedback", json={"response_id": ids[variant][index], "rating": stars}
            )
            assert rated.status_code == 200 and rated.json()["status"] == "stored", rated.text
        got = metric_samples((await client.get("/metrics")).text)

    engine = create_db_engine(postgres_database_url)
    with engine.connect() as connection:
        held = {
            variant: float(mean)
            for variant, mean in connection.execute(
                select(Interaction.variant, func.avg(Rating.stars))
                .join(Rating, Rating.interaction_id == Interaction.id)
                .group_by(Interaction.variant)
            )
        }
    engine.dispose()
    for variant in ("tuned", "base"):

        def value(name: str, variant: str = variant) -> float:
            return metric_total(got, name, variant=variant)

        # the dashboard's formula, on one replica's totals
        mean = (value("zantara_rating_stars_sum") - value("zantara_rating_stars_replaced_sum")) / (
            value("zantara_rating_stars_count") - value("zantara_rating_stars_replaced_count")
        )
        assert mean == pytest.approx(held[variant]), variant
    assert held["tuned"] != pytest.approx(sum(s for v, _, s in ratings if v == "tuned") / 5)


async def test_database_outage_answers_go_on_ratings_are_spooled_then_stored(
    settings_factory: Any, postgres_database_url: str
) -> None:
    app = create_app(settings_factory(database_url=postgres_database_url, spool_retry_s=0.1))
    async with running(app) as client:
        state = service_state(app)
        before = await client.post("/v1/chat/completions", json=chat_body(max_tokens=2))
        database, bind, direct = state.database, state.sessions.kw["bind"], state.feedback.direct
        unreachable, unreachable_direct = (
            create_engine(UNREACHABLE_DATABASE_URL),
            DirectConnections(UNREACHABLE_DATABASE_URL),
        )
        state.database = unreachable
        state.sessions.configure(bind=unreachable)
        state.feedback.direct = unreachable_direct

        answers = [await client.post("/v1/chat/completions", json=chat_body(max_tokens=2)) for _ in range(3)]
        streamed = await client.post("/v1/chat/completions", json=chat_body(max_tokens=2, stream=True))
        assert [a.status_code for a in [*answers, streamed]] == [200] * 4
        ids = [a.json()["id"] for a in answers] + [json.loads(parse_sse(streamed)[0])["id"]]
        acknowledged: dict[str, int] = {}
        for stars, answer_id in enumerate([before.json()["id"], *ids], start=1):
            rated = await client.post("/v1/feedback", json={"response_id": answer_id, "rating": stars})
            assert rated.status_code == 202 and rated.json()["status"] == "queued", rated.text
            acknowledged[answer_id] = stars
        rerated = await client.post("/v1/feedback", json={"response_id": ids[0], "rating": 5})
        assert rerated.status_code == 202 and rerated.json()["status"] == "queued"
        acknowledged[ids[0]] = 5

        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready.text
        assert ready.json()["checks"]["database"] is False and ready.json()["spool"]["rating"] == 6
        got = metric_samples((await client.get("/metrics")).text)
        assert got[("zantara_spool_pending", (("kind", "rating"),))] == 6
        assert got[("zantara_database_up", ())] == 0

        state.database = database
        state.sessions.configure(bind=bind)
        state.feedback.direct = direct
        await until(lambda: not any(state.feedback.spooled().values()), "the spool to drain")
        assert (await client.get("/readyz")).json()["status"] == "ready"
        unreachable.dispose()
        await unreachable_direct.close()
    assert row_counts(postgres_database_url) == (5, 5)
    engine = create_db_engine(postgres_database_url)
    with make_session_factory(engine)() as session:
        stored = {r.interaction_id: r.stars for r in session.scalars(select(Rating))}
    engine.dispose()
    assert stored == acknowledged


async def test_a_client_that_goes_away_mid_stream_leaves_its_partial_answer(
    settings_factory: Any, postgres_database_url: str
) -> None:
    app = create_app(settings_factory(database_url=postgres_database_url))
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        body = chat_body(model="zantara-demo-base", max_tokens=400, stream=True, temperature=1.0, seed=7)
        received: list[str] = []
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    received.append(line.removeprefix("data:").strip())
                if len(received) >= 4:
                    break
        answer_id = json.loads(received[0])["id"]
        state = service_state(app)
        await until(lambda: state.engine.running == 0, "generation to stop")  # type: ignore[attr-defined]
        await until(lambda: state.feedback.buffered == 0, "the interaction to be written")
        engine = create_db_engine(postgres_database_url)
        with make_session_factory(engine)() as session:
            stored = session.get(Interaction, answer_id)
        engine.dispose()
        assert stored is not None, "the disconnected stream left no interaction"
        assert stored.finish_reason == CANCELLED and stored.streamed
        shown = "".join(json.loads(p)["choices"][0]["delta"].get("content") or "" for p in received)
        assert stored.answer.startswith(shown) and stored.completion_tokens < 400
        rated = await client.post("/v1/feedback", json={"response_id": answer_id, "rating": 1})
        assert rated.status_code == 200, rated.text


async def test_rating_right_after_done_never_404s(settings_factory: Any, postgres_database_url: str) -> None:
    app = create_app(settings_factory(database_url=postgres_database_url))
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def stream_then_rate(n: int) -> int:
            body = chat_body(content=f"Pertanyaan {n}: apa itu KITAS?", max_tokens=6, stream=True)
            answer_id = None
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                async for line in response.aiter_lines():
                    payload = line.removeprefix("data:").strip()
                    if payload == "[DONE]":
                        break
                    if payload and answer_id is None:
                        answer_id = json.loads(payload)["id"]
            rated = await client.post("/v1/feedback", json={"response_id": answer_id, "rating": 4})
            return rated.status_code

        statuses = await asyncio.gather(*(stream_then_rate(n) for n in range(15)))
    assert statuses == [200] * 15


async def test_readyz_hides_the_start_up_error(settings_factory: Any, tmp_path: Any) -> None:
    secret = tmp_path / "no-model-here-s3cret"
    app = create_app(settings_factory(base_model=str(secret), database_url=f"sqlite:///{tmp_path / 'z.db'}"))
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://zantara.test") as client:
            await until(lambda: service_state(app).startup_error is not None, "start-up to fail")
            ready = await client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["error"]
    assert "s3cret" not in ready.text and "Error" not in ready.text
