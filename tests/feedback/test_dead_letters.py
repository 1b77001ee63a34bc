"""A record the database refuses for its data is set aside, never taken for an outage (issue 19): the
rest of its batch is written, the refused record waits in `dead_letters` with the database's reason,
a poison entry of the spool is set aside after a bounded number of tries while the others replay in
order, and `/readyz` counts the dead letters and says `degraded` while the spool does not drain."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from database.engine import DirectConnections, create_db_engine, make_session_factory
from database.models import DeadLetter, Interaction, Rating
from feedback.records import InteractionRecord, RatingWrite
from feedback.spool import Entry, Spool
from feedback.writer import FeedbackWriter
from service.app import create_app
from service.state import ServiceState
from tests.conftest import running
from tests.database import interaction_record
from tests.service.helpers import chat_body, metric_samples, metric_total, settled


def _id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def _good() -> InteractionRecord:
    return interaction_record(_id())


def _refused(database_url: str) -> list[tuple[InteractionRecord, str | None]]:
    """Interactions the database refuses for their data, each with the SQLSTATE it says: a missing
    variant (NOT NULL, class 23) everywhere; on PostgreSQL also a variant over its 16 characters
    (class 22, as a NUL in text was)."""
    refused: list[tuple[InteractionRecord, str | None]] = []
    postgres = database_url.startswith("postgresql")
    refused.append((replace(_good(), variant=None), "23502" if postgres else None))  # type: ignore[arg-type]
    if postgres:
        refused.append((replace(_good(), variant="x" * 17), "22001"))
    return refused


def _database(database_url: str) -> tuple[dict[str, int | None], list[DeadLetter]]:
    """(stars per stored interaction, None when unrated; the dead letters in order)."""
    engine = create_db_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            stored: dict[str, int | None] = {key: None for key in session.scalars(select(Interaction.id))}
            stored |= {r.interaction_id: r.stars for r in session.scalars(select(Rating))}
            return stored, list(session.scalars(select(DeadLetter).order_by(DeadLetter.id)))
    finally:
        engine.dispose()


async def test_a_refused_interaction_is_set_aside_and_the_rest_of_its_batch_written(
    settings_factory: Any, database_url: str
) -> None:
    app = create_app(settings_factory(database_url=database_url))
    async with running(app) as client:
        writer = app.state.zantara.feedback
        good = [_good() for _ in range(3)]
        refused = _refused(database_url)
        for record in [good[0], *(r for r, _ in refused), *good[1:]]:  # one batch
            writer.record(record)
        await settled(client)
        answer = await client.post("/v1/chat/completions", json=chat_body(max_tokens=4))
        rated = await client.post("/v1/feedback", json={"response_id": answer.json()["id"], "rating": 2})
        assert rated.status_code == 200 and rated.json()["status"] == "stored", rated.text
        ready = (await client.get("/readyz")).json()
        got = metric_samples((await client.get("/metrics")).text)
    assert ready["status"] == "ready" and ready["checks"]["database"] and writer.database_up, ready
    assert ready["dead_letters"] == len(refused), ready
    assert metric_total(got, "zantara_feedback_dead_letters_total", kind="interaction") == len(refused)
    assert metric_total(got, "zantara_database_up") == 1
    stored, dead = _database(database_url)
    assert set(stored) == {r.id for r in good} | {answer.json()["id"]}
    assert [(d.kind, d.key, d.sqlstate, d.source) for d in dead] == [
        ("interaction", r.id, sqlstate, "writer") for r, sqlstate in refused
    ]
    assert all(d.error and "INSERT" not in d.error for d in dead), "the reason, not the statement"
    payloads = [json.loads(d.payload) for d in dead]
    assert all(p["fact_critical"] == 0 and p["fact_warnings"] == 0 for p in payloads), "checked first"
    unchecked = {"fact_critical": None, "fact_warnings": None, "fact_findings": None}
    assert [p | unchecked for p in payloads] == [r.to_json() for r, _ in refused]


async def test_a_refused_batch_of_ratings_is_written_rating_by_rating(
    sessions: sessionmaker[Session], direct: DirectConnections | None, database_url: str, tmp_path: Path
) -> None:
    counted: Counter[str] = Counter()
    # not started: the ratings' batch takes the buffered interactions with it
    writer = FeedbackWriter(
        sessions,
        tmp_path / "spool.sqlite3",
        direct=direct,
        on_dead_letter=lambda kind: counted.update([kind]),
    )
    good = [_good(), _good()]
    ((bad, sqlstate), *_) = _refused(database_url)
    for record in [good[0], bad, good[1]]:
        writer.record(record)
    outcomes = await asyncio.gather(
        *(writer.rate(RatingWrite(r.id, 2, "x")) for r in [good[0], bad, good[1]])
    )
    assert [o.queued for o in outcomes] == [False, True, False]
    assert writer.database_up and not any(writer.spooled().values()) and not writer.buffered
    again = await writer.rate(RatingWrite(bad.id, 4, None))  # its answer was set aside: so is it
    assert again.queued and writer.database_up
    await writer.close()
    stored, dead = _database(database_url)
    assert stored == {good[0].id: 2, good[1].id: 2}
    assert [(d.kind, d.key, d.sqlstate) for d in dead] == [
        ("interaction", bad.id, sqlstate),
        ("rating", bad.id, sqlstate),
        ("rating", bad.id, None),
    ]
    assert counted == {"interaction": 1, "rating": 2}


async def test_a_poison_entry_of_the_spool_is_set_aside_and_the_others_replay_in_order(
    settings_factory: Any, database_url: str
) -> None:
    settings = settings_factory(database_url=database_url, spool_max_tries=2, spool_retry_s=0.05)
    first, later = _good(), _good()
    poison, sqlstate = _refused(database_url)[-1]
    raw = replace(_good(), answer="kata\x00kata", messages=[{"role": "user", "content": "\ud800?"}])
    spool = Spool(settings.var_dir / "spool" / "feedback.sqlite3")  # as a run before the fix left it
    spool.append(
        [
            Entry("interaction", first.id, first.to_json()),
            Entry("rating", first.id, RatingWrite(first.id, 1, None).to_json()),
            Entry("interaction", poison.id, poison.to_json()),
            Entry("rating", poison.id, RatingWrite(poison.id, 2, None).to_json()),
            Entry("interaction", raw.id, raw.to_json()),
            Entry("rating", raw.id, RatingWrite(raw.id, 3, "ini\x00").to_json()),
            Entry("rating", "chatcmpl-damaged", {"stars": 9}),
            Entry("interaction", later.id, later.to_json()),
            Entry("rating", later.id, RatingWrite(later.id, 4, None).to_json()),
            Entry("rating", first.id, RatingWrite(first.id, 5, None).to_json()),
        ]
    )
    spool.close()
    app = create_app(settings)
    async with running(app) as client:
        await settled(client)
        ready = (await client.get("/readyz")).json()
        got = metric_samples((await client.get("/metrics")).text)
    assert ready["status"] == "ready" and ready["dead_letters"] == 3, ready
    assert metric_total(got, "zantara_feedback_dead_letters_total", kind="interaction") == 1
    assert metric_total(got, "zantara_feedback_dead_letters_total", kind="rating") == 2
    stored, dead = _database(database_url)
    assert stored == {first.id: 5, raw.id: 3, later.id: 4}
    assert [(d.kind, d.key, d.sqlstate, d.source) for d in dead] == [
        ("rating", "chatcmpl-damaged", None, "spool"),
        ("interaction", poison.id, sqlstate, "spool"),
        ("rating", poison.id, None, "spool"),
    ]
    engine = create_db_engine(database_url)
    with make_session_factory(engine)() as session:
        kept = session.get(Interaction, raw.id)
        assert kept is not None and kept.rating is not None
        assert (kept.answer, kept.messages[0]["content"], kept.rating.comment) == (
            "kata\ufffdkata",
            "\ufffd?",
            "ini\ufffd",
        )
    engine.dispose()


async def test_readyz_says_degraded_while_the_spool_does_not_drain(
    settings_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(settings_factory(database_url=f"sqlite:///{tmp_path / 'zantara.db'}"))
    async with running(app) as client:
        state: ServiceState = app.state.zantara
        writer = state.feedback
        monkeypatch.setattr(writer, "_stall_s", 0.2)

        async def broken() -> bool:
            raise RuntimeError("planted: every replay fails")

        monkeypatch.setattr(writer, "_replay", broken)
        record = _good()
        writer._spool.append([Entry("interaction", record.id, record.to_json())])
        for _ in range(200):
            ready = (await client.get("/readyz")).json()
            if ready["status"] == "degraded":
                break
            await asyncio.sleep(0.05)
        assert ready["status"] == "degraded" and not ready["spool_draining"], ready
        assert ready["checks"]["database"] and ready["spool"]["interaction"] == 1, ready
        monkeypatch.undo()
        await settled(client)
        assert (await client.get("/readyz")).json()["status"] == "ready"
