"""A local durable spool: what could not reach the database waits here, in order, until it can.

One SQLite file under the service's var dir, written with `synchronous=FULL` so every commit is
fsynced before it returns: a rating acknowledged from the spool survives a crash of the process or
the machine. Entries are replayed in the order they were written; an entry that cannot be applied yet
is deferred together with every later entry of the same key, so the order per key always holds.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import (
    Column,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    case,
    cast,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    inspect,
    select,
    update,
)

Kind = Literal["interaction", "rating"]
KINDS: tuple[Kind, ...] = ("interaction", "rating")

metadata = MetaData()
entries = Table(
    "entries",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("key", String(64), nullable=False, index=True),
    Column("payload", Text, nullable=False),
    Column("created", Float, nullable=False),
    Column("next_try", Float, nullable=False, default=0.0),
    Column("tries", Integer, nullable=False, server_default="0"),
    sqlite_autoincrement=True,
)
NEXT_TRY_INDEX = Index("ix_entries_next_try", entries.c.next_try)
"""Finds the entries due without a scan (`Spool.ready`): fresh ones (`next_try` 0) in order, and
whether any deferred one is due again."""
_PAYLOAD_BYTES = func.length(cast(entries.c.payload, LargeBinary))


@dataclass(frozen=True)
class Entry:
    """One spooled write: an interaction or a rating, keyed by the interaction id."""

    kind: Kind
    key: str
    payload: dict[str, Any]
    seq: int = 0
    created: float = 0.0
    tries: int = 0
    """Replays the database refused for this entry's data (not for an outage)."""


class SpoolFullError(Exception):
    """The spool holds its `max_bytes`: it takes no more ratings until it drains."""


class Spool:
    """Durable FIFO of pending writes in one SQLite file (thread-safe; every append is fsynced), of at
    most about `max_bytes` of payload (None: unbounded)."""

    def __init__(self, path: Path, max_bytes: int | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False})
        event.listen(self._engine, "connect", _durable_pragmas)
        metadata.create_all(self._engine)
        _add_missing_columns(self._engine)
        NEXT_TRY_INDEX.create(self._engine, checkfirst=True)  # a file from before the index has none
        owner = case(
            (
                and_(entries.c.kind == "interaction", func.json_valid(entries.c.payload)),
                func.json_extract(entries.c.payload, "$.key_hash"),
            )
        )
        with self._engine.connect() as connection:
            rows = connection.execute(select(entries.c.kind, entries.c.key, _PAYLOAD_BYTES, owner)).all()
        self._counts: Counter[str] = Counter(kind for kind, _, _, _ in rows)
        self._keys: Counter[str] = Counter(key for _, key, _, _ in rows)
        self._bytes = sum(size for _, _, size, _ in rows)
        self._owners: dict[str, str] = {key: owner for _, key, _, owner in rows if owner}

    def counts(self) -> dict[Kind, int]:
        """Entries waiting, per kind."""
        return {kind: self._counts[kind] for kind in KINDS}

    @property
    def pending(self) -> int:
        """Entries waiting, all kinds."""
        return sum(self._counts.values())

    @property
    def size(self) -> int:
        """Payload bytes waiting (kept in memory: counted at open, then on every write and removal)."""
        return self._bytes

    @property
    def full(self) -> bool:
        """True once the spool holds `max_bytes`: ratings are refused until it drains. Appends already
        under way still land, so the file can pass the cap by one batch of writes."""
        return self.max_bytes is not None and self._bytes >= self.max_bytes

    def append(self, new: list[Entry], *, within_cap: bool = False) -> list[Entry]:
        """Write `new` entries in one transaction; durable (fsynced) when this returns. With
        `within_cap`, only the leading entries that fit under `max_bytes` are written, and the others
        are returned (not written); without, every entry is written and [] returned."""
        now = time.time()
        payloads = [json.dumps(e.payload) for e in new]
        sizes = [len(payload.encode()) for payload in payloads]
        kept = len(new)
        if within_cap and self.max_bytes is not None:
            room, kept = self.max_bytes - self._bytes, 0
            while kept < len(new) and sizes[kept] <= room:
                room -= sizes[kept]
                kept += 1
        rows = [
            {"kind": e.kind, "key": e.key, "payload": payload, "created": e.created or now}
            for e, payload in zip(new[:kept], payloads, strict=False)
        ]
        if rows:
            with self._lock, self._engine.begin() as connection:
                connection.execute(insert(entries), rows)
                self._counts.update(e.kind for e in new[:kept])
                self._keys.update(e.key for e in new[:kept])
                self._bytes += sum(sizes[:kept])
                self._owners.update(
                    (e.key, e.payload["key_hash"])
                    for e in new[:kept]
                    if e.kind == "interaction" and e.payload.get("key_hash")
                )
        return new[kept:]

    def holds(self, key: str) -> bool:
        """True when any entry for this key waits (its interaction or an earlier rating).

        Answered from memory, without a query: while the spool drains, every new rating asks this. The
        index costs about 100 bytes per waiting entry (an hour's outage at 1,000 writes/s: ~360 MB)."""
        return self._keys[key] > 0

    def owner(self, key: str) -> str | None:
        """The `key_hash` of the interaction `key` while any entry for it waits here (None: open to any
        rating, or not spooled). Answered from memory, as `holds` is."""
        return self._owners.get(key)

    def ready(self, limit: int) -> list[Entry]:
        """The oldest entries due now, skipping keys that have an earlier entry deferred.

        Found through `NEXT_TRY_INDEX`, never by walking the entries deferred (orphan ratings wait there
        up to a day): while no deferred entry is due again, the due ones are the fresh ones (`next_try`
        0), read from the index in order. Once some are due again, the entries are read in order from
        the oldest, as many as it takes to find `limit` due ones: an index range would have to sort
        every entry due again on each call."""
        now = time.time()
        earlier = entries.alias("earlier")
        blocked = exists().where(
            and_(earlier.c.key == entries.c.key, earlier.c.seq < entries.c.seq, earlier.c.next_try > now)
        )
        due_again = select(exists().where(entries.c.next_try > 0, entries.c.next_try <= now))
        with self._engine.connect() as connection:
            due = entries.c.next_try <= now if connection.scalar(due_again) else entries.c.next_try == 0
            query = (
                select(
                    entries.c.seq,
                    entries.c.kind,
                    entries.c.key,
                    entries.c.payload,
                    entries.c.created,
                    entries.c.tries,
                )
                .where(due, ~blocked)
                .order_by(entries.c.seq)
                .limit(limit)
            )
            rows = connection.execute(query).all()
        return [
            Entry(kind, key, _decoded(payload), seq, created, tries)
            for seq, kind, key, payload, created, tries in rows
        ]

    def settle(
        self,
        done: list[Entry],
        deferred: list[Entry],
        defer_s: float,
        refused: Sequence[Entry] = (),
        retry_s: float = 0.0,
    ) -> None:
        """Remove entries applied (or dropped), push deferred ones `defer_s` into the future, and count
        one more try of each `refused` entry (the database refused its data), tried again in `retry_s`."""
        with self._lock, self._engine.begin() as connection:
            freed = 0
            if done:
                done_seqs = entries.c.seq.in_([e.seq for e in done])
                freed = connection.scalar(select(func.sum(_PAYLOAD_BYTES)).where(done_seqs)) or 0
            if refused:
                connection.execute(
                    update(entries)
                    .where(entries.c.seq.in_([e.seq for e in refused]))
                    .values(tries=entries.c.tries + 1, next_try=time.time() + retry_s)
                )
            if done:
                connection.execute(delete(entries).where(entries.c.seq.in_([e.seq for e in done])))
            if deferred:
                connection.execute(
                    update(entries)
                    .where(entries.c.seq.in_([e.seq for e in deferred]))
                    .values(next_try=time.time() + defer_s)
                )
            self._counts.subtract(e.kind for e in done)
            self._keys.subtract(e.key for e in done)
            self._bytes -= freed
            for entry in done:
                if self._keys[entry.key] <= 0:
                    del self._keys[entry.key]
                    self._owners.pop(entry.key, None)

    def close(self) -> None:
        """Close the file (entries stay for the next start)."""
        self._engine.dispose()


def _decoded(payload: str) -> dict[str, Any]:
    """The entry's payload; an entry whose text is not a JSON object (a damaged file) comes back as
    `{}`, which no record accepts, so the replay sets it aside instead of failing on it every time."""
    try:
        value = json.loads(payload)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _add_missing_columns(engine: Engine) -> None:
    """Bring a spool file written by an older version to this table's columns (`tries`)."""
    with engine.begin() as connection:
        present = {column["name"] for column in inspect(connection).get_columns(entries.name)}
        if "tries" not in present:
            tries = Column("tries", Integer, nullable=False, server_default="0")
            Operations(MigrationContext.configure(connection)).add_column(entries.name, tries)


def _durable_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL with `synchronous=FULL`: every commit is fsynced before it returns."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
