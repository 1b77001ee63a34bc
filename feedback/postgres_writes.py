"""PostgreSQL's writes of interactions and ratings: each batch is one statement, so one round trip.

A batch of ratings locks the rated interactions in id order (replicas rating the same answers at once
wait for each other instead of deadlocking), reads the stars they had, inserts or replaces each rating
and flags those under `REVIEW_THRESHOLD` for review, all in `UPSERT_RATINGS`. Both statements are
idempotent, so they may each commit on their own (autocommit) and be replayed from the spool.

The same SQL runs on a SQLAlchemy connection (the synchronous paths: the spool's replay, tools) and on
a psycopg asyncio connection (`DirectConnections`, the service's hot path). The batch travels as one
JSON parameter: psycopg dumps a list parameter element by element in Python, which cost more CPU than
the whole statement did on the database. Every table is reached through `= ANY(ARRAY(...))` on its
index, whatever the planner's estimates say of the JSON rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import psycopg
from sqlalchemy import Connection

from feedback.records import (
    REVIEW_THRESHOLD,
    InteractionRecord,
    RatedAnswer,
    RatingBatch,
    RatingWrite,
    StoredRating,
)

_INTERACTION_COLUMNS = ", ".join(f.name for f in fields(InteractionRecord))

INSERT_INTERACTIONS = f"""
INSERT INTO interactions ({_INTERACTION_COLUMNS}, needs_review)
SELECT {_INTERACTION_COLUMNS}, false FROM json_populate_recordset(NULL::interactions, %(rows)s::json)
ON CONFLICT (id) DO NOTHING
"""
"""Inserts the interactions whose id is new (`rows`: a JSON list of `InteractionRecord.to_json`)."""

UPSERT_RATINGS = f"""
WITH batch AS (
    SELECT * FROM json_to_recordset(%(batch)s::json)
        AS t(interaction_id varchar, stars int, comment text, created_at timestamptz, updated_at timestamptz)
), rated AS (
    SELECT id, variant, adapter_name, adapter_version, target FROM interactions
    WHERE id = ANY(ARRAY(SELECT interaction_id FROM batch)) ORDER BY id FOR NO KEY UPDATE
), previous AS (
    SELECT interaction_id, stars FROM ratings WHERE interaction_id = ANY(ARRAY(SELECT id FROM rated))
), stored AS (
    INSERT INTO ratings (interaction_id, stars, comment, created_at, updated_at)
    SELECT batch.* FROM batch JOIN rated ON rated.id = batch.interaction_id
    ON CONFLICT (interaction_id) DO UPDATE
    SET stars = excluded.stars, comment = excluded.comment, updated_at = excluded.updated_at
), flagged AS (
    UPDATE interactions SET needs_review = batch.stars < {REVIEW_THRESHOLD} FROM batch
    WHERE interactions.id = ANY(ARRAY(SELECT id FROM rated)) AND interactions.id = batch.interaction_id
        AND interactions.needs_review IS DISTINCT FROM (batch.stars < {REVIEW_THRESHOLD})
)
SELECT rated.id, rated.variant, rated.adapter_name, rated.adapter_version, rated.target, previous.stars
FROM rated LEFT JOIN previous ON previous.interaction_id = rated.id
"""
"""Applies the last rating per answer of `batch` (a JSON list, see `_ratings_parameters`) and returns
each rated interaction with its stars before. Unknown ids are skipped; an interaction whose review flag
already says the right thing is not rewritten (a rewrite updates every index of that wide row)."""


def _interactions_parameters(records: Sequence[InteractionRecord]) -> dict[str, str]:
    unique = {record.id: record for record in records}.values()
    return {"rows": json.dumps([record.to_json() for record in unique])}


def _ratings_parameters(batch: RatingBatch) -> dict[str, str]:
    rows = [
        {
            "interaction_id": key,
            "stars": write.stars,
            "comment": write.comment,
            "created_at": batch.first_at[key].isoformat(),
            "updated_at": write.rated_at.isoformat(),
        }
        for key, write in batch.latest.items()
    ]
    return {"batch": json.dumps(rows)}


def _rated(rows: Sequence[Sequence[Any]]) -> dict[str, RatedAnswer]:
    return {row[0]: RatedAnswer(*row[1:]) for row in rows}


def insert_interactions_on(connection: Connection, records: Sequence[InteractionRecord]) -> None:
    """`INSERT_INTERACTIONS` on a SQLAlchemy connection (in its transaction)."""
    if records:
        connection.exec_driver_sql(INSERT_INTERACTIONS, _interactions_parameters(records))


def upsert_ratings_on(connection: Connection, batch: RatingBatch) -> dict[str, RatedAnswer]:
    """`UPSERT_RATINGS` on a SQLAlchemy connection (in its transaction): the rated interactions."""
    if not batch.latest:
        return {}
    return _rated(connection.exec_driver_sql(UPSERT_RATINGS, _ratings_parameters(batch)).all())


async def insert_interactions(
    connection: psycopg.AsyncConnection[Any], records: Sequence[InteractionRecord]
) -> None:
    """`INSERT_INTERACTIONS` on a psycopg asyncio connection."""
    if records:
        await connection.execute(INSERT_INTERACTIONS, _interactions_parameters(records))


async def apply_ratings(
    connection: psycopg.AsyncConnection[Any],
    writes: Sequence[RatingWrite],
    interactions: Sequence[InteractionRecord] = (),
) -> list[StoredRating | None]:
    """`feedback.store.apply_ratings` on a psycopg asyncio connection in autocommit mode: the
    interactions first (those known only to this replica), then the ratings, each statement committing
    on its own. Returns, per write, what was stored, or None for an unknown id."""
    await insert_interactions(connection, interactions)
    batch = RatingBatch.of(writes)
    if not batch.latest:
        return []
    cursor = await connection.execute(UPSERT_RATINGS, _ratings_parameters(batch))
    return batch.outcomes(_rated(await cursor.fetchall()))
