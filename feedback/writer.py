"""The service's only path to the database for interactions and ratings, built to survive its outages.

- Interactions are buffered in memory (bounded) and written in the background, in batches; a chat
  answer never waits on the database. When the database is down they move to the local spool
  (`feedback.spool`), so they also survive a restart of the service.
- A rating is acknowledged only once committed to the database or fsynced to the spool. Concurrent
  ratings share one transaction (group commit). A rating for an answer still waiting here (in the
  buffer or the spool) is stored with it, never refused as unknown.
- An answer that went to an API key (`InteractionRecord.key_hash`) takes ratings from that key only:
  checked here while it waits in the buffer or the spool, by the rating statements once stored; any
  other key is answered as for an unknown id.
- The spool holds at most `spool_max_bytes`: once full, ratings are refused (`SpoolFullError`) and
  interactions that would not fit are dropped (counted by `on_drop`).
- The spool is replayed in order as soon as the database answers again. Ratings of one answer are
  serialised: while an earlier write for it waits in the spool, later ones join it there, so the last
  rating always wins, and re-applying a replayed batch leaves the same rows.
- A rating for an id this replica does not know, sent while the database is down, cannot be checked:
  it is queued, and dropped (logged and counted) if that interaction has not appeared in the database
  after `orphan_ttl_s` (another replica may still hold it in its own spool).
- Text is stored as `feedback.text.storable` makes it (NUL and lone surrogates become U+FFFD).
- With `check_facts` (`feedback.answer_facts.AnswerFacts.check`), every interaction's figures are
  checked against the fact registry before it is stored or spooled: in the background batch, in a
  worker thread, never while the chat request waits (a rating that comes while its answer still waits
  here unchecked checks it first; a record spooled unchecked, at shutdown, is checked on replay).
  `on_checked` sees each record once, with its counts, for the metrics. A check that fails (a bug)
  is logged and the record stored unchecked: the check must never lose an answer.
- A record the database refuses for its data (`database.engine.RECORD_ERRORS`) is no outage: the batch it
  came in is written again record by record, and each refused record is set aside in `dead_letters`
  (counted by `on_dead_letter`). A spooled entry is set aside after `max_tries` refused replays; the
  entries behind it replay in order meanwhile. Only other failures (connections) mean "database down".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from database.engine import DATABASE_ERRORS, DirectConnections, describe, is_record_error
from feedback import postgres_writes
from feedback.batching import GroupCommit
from feedback.records import (
    REVIEW_THRESHOLD,
    InteractionRecord,
    RatingWrite,
    StoredRating,
    UnknownInteractionError,
)
from feedback.spool import Entry, Kind, Spool, SpoolFullError
from feedback.store import DeadLetterRecord, apply_ratings, save_dead_letters, save_interactions
from feedback.text import UNSTORABLE, storable, storable_record

log = logging.getLogger(__name__)

T = TypeVar("T")

REMEMBERED_REFUSALS = 10_000
"""How many ids of interactions set aside the writer remembers, so that their ratings are set aside
with them instead of waiting for (or being refused as) an unknown answer."""

Committed = StoredRating | None | DeadLetterRecord
"""A rating's fate in a batch: stored, unknown (None), or set aside (refused by the database)."""


@dataclass(frozen=True)
class RatingOutcome:
    """What `rate` did: committed to the database (`stored`), or fsynced to the spool (`queued`)."""

    write: RatingWrite
    stored: StoredRating | None
    variant: str | None

    @property
    def queued(self) -> bool:
        """True when the rating waits in the spool."""
        return self.stored is None

    @property
    def needs_review(self) -> bool:
        """Whether the answer goes to the review queue."""
        return self.write.stars < REVIEW_THRESHOLD


class FeedbackWriter:
    """Buffers interactions, commits ratings, and spools both while the database is away."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        spool_path: Path,
        *,
        buffer_limit: int = 10_000,
        batch_size: int = 256,
        commit_in_flight: int = 2,
        retry_s: float = 1.0,
        orphan_ttl_s: float = 86_400.0,
        on_rating: Callable[[StoredRating], None] | None = None,
        on_drop: Callable[[Kind], None] | None = None,
        direct: DirectConnections | None = None,
        max_tries: int = 3,
        stall_s: float = 10.0,
        on_dead_letter: Callable[[Kind], None] | None = None,
        spool_max_bytes: int | None = None,
        check_facts: Callable[[InteractionRecord], InteractionRecord] | None = None,
        on_checked: Callable[[InteractionRecord], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._check_facts = check_facts
        self._on_checked = on_checked or (lambda _record: None)
        self.direct = direct
        """The connections writes go through on PostgreSQL; None: worker threads through `sessions`."""
        self._spool = Spool(spool_path, spool_max_bytes)
        self._buffer: dict[str, InteractionRecord] = {}
        self._leaving: dict[str, asyncio.Event] = {}
        self._buffer_limit = buffer_limit
        self._batch_size = batch_size
        self._retry_s = retry_s
        self._orphan_ttl_s = orphan_ttl_s
        self._on_rating = on_rating or (lambda _stored: None)
        self._on_drop = on_drop or (lambda _kind: None)
        self._on_dead_letter = on_dead_letter or (lambda _kind: None)
        self._max_tries = max_tries
        self._stall_s = stall_s
        self._progress = time.monotonic()
        self._refused: dict[str, None] = {}
        self._db_up = True
        self._next_probe = 0.0
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._db_ratings: GroupCommit[tuple[RatingWrite, InteractionRecord | None], Committed]
        self._db_ratings = GroupCommit(self._commit_ratings, batch_size, in_flight=commit_in_flight)
        self._spool_writes: GroupCommit[list[Entry], None] = GroupCommit(self._append, batch_size)

    # --- state --------------------------------------------------------------------------------------

    @property
    def database_up(self) -> bool:
        """False from a failed write until the database answers again."""
        return self._db_up

    @property
    def buffered(self) -> int:
        """Interactions waiting in memory."""
        return len(self._buffer)

    def spooled(self) -> dict[Kind, int]:
        """Entries waiting in the spool, per kind."""
        return self._spool.counts()

    @property
    def spool_bytes(self) -> int:
        """Payload bytes waiting in the spool (capped by `spool_max_bytes`)."""
        return self._spool.size

    @property
    def spool_stalled(self) -> bool:
        """True while writes wait in the spool and do not drain: the database is down, or no round of
        replay has finished for `stall_s`."""
        stuck = not self._db_up or time.monotonic() - self._progress > self._stall_s
        return stuck and self._spool.pending > 0

    def status(self) -> dict[str, Any]:
        """A summary for `/readyz`."""
        return {
            "database_up": self._db_up,
            "buffered_interactions": self.buffered,
            "spool": self.spooled(),
            "spool_stalled": self.spool_stalled,
        }

    # --- life cycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background writer (it replays what an earlier run left in the spool)."""
        self._task = asyncio.create_task(self._run(), name="zantara-feedback-writer")

    async def close(self, timeout_s: float = 10.0) -> None:
        """Flush what waits to the database if it answers within `timeout_s`, spool the rest, stop."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        await self._db_ratings.close()
        await self._spool_writes.close()
        deadline = time.monotonic() + timeout_s
        while (self._buffer or self._spool.pending) and time.monotonic() < deadline:
            before = (self.buffered, self._spool.pending)
            if not await self._flush() or (self.buffered, self._spool.pending) == before:
                break
        if self._buffer:
            await self._spool_records(list(self._buffer.values()))
        left = self._spool.counts()
        if any(left.values()):
            log.warning("stopping with writes left in the spool %s: %s", self._spool.path, left)
        self._spool.close()

    # --- interactions -------------------------------------------------------------------------------

    def record(self, record: InteractionRecord) -> None:
        """Take an interaction for storage, its text made storable; returns at once (never blocks an
        answer)."""
        record = storable_record(record)
        if len(self._buffer) >= self._buffer_limit:
            oldest = next(iter(self._buffer))
            del self._buffer[oldest]
            self._left(oldest)
            self._on_drop("interaction")
            log.error("interaction buffer full (%d): dropped %s", self._buffer_limit, oldest)
        self._buffer[record.id] = record
        self._wake.set()

    async def left_memory(self, interaction_id: str, timeout_s: float) -> bool:
        """Wait until the interaction is stored or spooled, no longer only in this replica's memory:
        a rating sent right after its answer may reach another replica, which looks in the database.
        False when it still waits after `timeout_s`."""
        if interaction_id not in self._buffer:
            return True
        event = self._leaving.setdefault(interaction_id, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            return False
        finally:
            self._leaving.pop(interaction_id, None)
        return True

    def _left(self, interaction_id: str) -> None:
        """Wake whoever waits for the interaction to leave memory (`left_memory`)."""
        event = self._leaving.get(interaction_id)
        if event is not None:
            event.set()

    # --- ratings ------------------------------------------------------------------------------------

    async def rate(self, write: RatingWrite) -> RatingOutcome:
        """Commit the rating, or spool it durably; raise UnknownInteractionError when the database
        answers and nobody has that interaction. A rating the database refuses for its data is set
        aside (`dead_letters`) and answered as queued."""
        if write.comment is not None and UNSTORABLE.search(write.comment):
            write = replace(write, comment=storable(write.comment))
        key = write.interaction_id
        async with self._key_lock(key):
            local = self._buffer.get(key)
            if local is not None and not local.fact_checked:
                await self._checked([local])
                local = self._buffer.get(key) or local
            if not write.may_rate(local.key_hash if local is not None else self._spool.owner(key)):
                raise UnknownInteractionError(key)  # another key's answer: as if unknown
            if self._db_up and not self._spool.holds(key):
                try:
                    stored = await self._db_ratings.submit((write, local))
                    if stored is None and key in self._refused:
                        stored = await self._set_aside_rating(write, "writer")
                except DATABASE_ERRORS as error:
                    self._mark_down(error)
                else:
                    if stored is None:
                        raise UnknownInteractionError(key)
                    self._forget(local)
                    if isinstance(stored, DeadLetterRecord):
                        return RatingOutcome(write, None, local.variant if local is not None else None)
                    return RatingOutcome(write, stored, stored.variant)
            if self._spool.full:
                raise SpoolFullError(f"the spool holds {self._spool.size} bytes")
            # the background writer may have stored or spooled it meanwhile: spooled again, it is
            # replayed idempotently, and the answer keeps its variant
            local = self._buffer.get(key) or local
            entries = [Entry("interaction", key, local.to_json())] if local is not None else []
            await self._spool_writes.submit([*entries, Entry("rating", key, write.to_json())])
            self._forget(local)
            self._wake.set()
            return RatingOutcome(write, None, local.variant if local is not None else None)

    @asynccontextmanager
    async def _key_lock(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def _forget(self, record: InteractionRecord | None) -> None:
        """Drop a record from the buffer once it is stored or spooled (unless replaced meanwhile)."""
        if record is not None and self._buffer.get(record.id) is record:
            del self._buffer[record.id]
            self._left(record.id)

    async def _commit_ratings(
        self, items: list[tuple[RatingWrite, InteractionRecord | None]]
    ) -> list[Committed]:
        """One batch of ratings (with the interactions only this replica holds); when the database
        refuses the batch for its data, each rating again on its own, the refused ones set aside."""
        results: list[Committed]
        try:
            results = list(await self._apply_ratings(items))
        except DATABASE_ERRORS as error:
            if not is_record_error(error):
                raise
            results = [await self._commit_rating(item) for item in items]
        for stored in results:
            if isinstance(stored, StoredRating):
                self._on_rating(stored)
        return results

    async def _apply_ratings(
        self, items: list[tuple[RatingWrite, InteractionRecord | None]]
    ) -> list[StoredRating | None]:
        writes, records = [w for w, _ in items], [r for _, r in items if r is not None]
        return await self._write(postgres_writes.apply_ratings, apply_ratings, writes, records)

    async def _commit_rating(self, item: tuple[RatingWrite, InteractionRecord | None]) -> Committed:
        """One rating of a refused batch: stored, or set aside with its interaction when refused."""
        write, record = item
        try:
            (stored,) = await self._apply_ratings([item])
        except DATABASE_ERRORS as error:
            if not is_record_error(error):
                raise
            letters = [_letter("rating", write.interaction_id, write.to_json(), error, "writer")]
            if record is not None:
                letters.insert(0, _letter("interaction", record.id, record.to_json(), error, "writer"))
            await self._set_aside(letters)
            self._forget(record)
            return letters[-1]
        return stored

    async def _set_aside_rating(self, write: RatingWrite, source: str) -> DeadLetterRecord:
        """Set aside a rating of an interaction that was set aside (it can never be applied)."""
        letter = DeadLetterRecord(
            "rating", write.interaction_id, write.to_json(), "its interaction was refused", None, source
        )
        await self._set_aside([letter])
        return letter

    async def _set_aside(self, letters: list[DeadLetterRecord]) -> None:
        """Store refused writes in `dead_letters` (committed on return), log and count them."""
        await asyncio.to_thread(save_dead_letters, self._sessions, letters)
        for letter in letters:
            log.error(
                "set aside a %s write for %s refused by the database (%s, SQLSTATE %s): see dead_letters",
                letter.kind,
                letter.key,
                letter.error,
                letter.sqlstate,
            )
            self._on_dead_letter(letter.kind)  # type: ignore[arg-type]
            if letter.kind == "interaction":
                self._refused[letter.key] = None
                if len(self._refused) > REMEMBERED_REFUSALS:
                    del self._refused[next(iter(self._refused))]

    async def _write(
        self,
        direct: Callable[..., Awaitable[T]],
        in_thread: Callable[..., T],
        *args: Any,
    ) -> T:
        """`direct(connection, *args)` awaited on the event loop on PostgreSQL (an autocommit connection:
        each write is a transaction of its own), else `in_thread(sessions, *args)` in a worker thread
        (SQLite)."""
        if self.direct is not None:
            async with self.direct.connection() as connection:
                return await direct(connection, *args)
        return await asyncio.to_thread(in_thread, self._sessions, *args)

    def _append(self, groups: list[list[Entry]]) -> list[None]:
        self._spool.append([entry for group in groups for entry in group])
        return [None] * len(groups)

    # --- background ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
            with suppress(TimeoutError):
                async with asyncio.timeout(self._retry_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
            except Exception:  # noqa: BLE001 - the writer must outlive any one failure
                log.exception("feedback writer failed; retrying")
                await asyncio.sleep(self._retry_s)

    async def _flush(self) -> bool:
        """One round: buffered interactions to the database (or the spool), then replay the spool.
        Returns False when the database is down (what waits stays durable in the spool)."""
        async with self._flushing:
            return await self._flush_once()

    async def _flush_once(self) -> bool:
        batch = await self._checked(list(self._buffer.values())[: self._batch_size])
        if batch and self._db_up:
            try:
                await self._insert_interactions(batch)
            except DATABASE_ERRORS as error:
                self._mark_down(error)
        if not self._db_up and self._buffer:
            await self._spool_records(await self._checked(list(self._buffer.values())))
        if not self._db_up:
            if time.monotonic() < self._next_probe:
                return False
            self._next_probe = time.monotonic() + self._retry_s
            if not await self._probe():
                return False
        if self._spool.pending:
            try:
                more = await self._replay()
            except DATABASE_ERRORS as error:
                self._mark_down(error)
                return False
            if more:
                self._wake.set()
        self._progress = time.monotonic()
        return True

    async def _checked(self, records: list[InteractionRecord]) -> list[InteractionRecord]:
        """The records still buffered, those not checked yet checked against the fact registry (in a
        worker thread). A result counts (`on_checked`) and replaces the buffered record only while the
        buffer still holds the record it was made from, so a record checked by two paths at once (the
        batch and a rating) counts once."""
        unchecked = [record for record in records if not record.fact_checked]
        if self._check_facts is None or not unchecked:
            return [self._buffer.get(record.id, record) for record in records if record.id in self._buffer]
        check = self._check_facts
        try:
            results = await asyncio.to_thread(lambda: [check(record) for record in unchecked])
        except Exception:  # noqa: BLE001 - a failed check must never lose an answer
            log.exception("fact check of %d answers failed; stored unchecked", len(unchecked))
            results = unchecked
        for before, after in zip(unchecked, results, strict=True):
            if after.fact_checked and self._buffer.get(before.id) is before:
                self._buffer[before.id] = after
                self._on_checked(after)
        return [self._buffer[record.id] for record in records if record.id in self._buffer]

    async def _insert_interactions(self, batch: list[InteractionRecord]) -> None:
        """Write buffered interactions; when the database refuses the batch for its data, each one
        again on its own, the refused ones set aside."""
        try:
            await self._write(postgres_writes.insert_interactions, save_interactions, batch)
        except DATABASE_ERRORS as error:
            if not is_record_error(error):
                raise
            for record in batch:
                try:
                    await self._write(postgres_writes.insert_interactions, save_interactions, [record])
                except DATABASE_ERRORS as refusal:
                    if not is_record_error(refusal):
                        raise
                    await self._set_aside(
                        [_letter("interaction", record.id, record.to_json(), refusal, "writer")]
                    )
                self._forget(record)
        else:
            for record in batch:
                self._forget(record)

    async def _spool_records(self, records: list[InteractionRecord]) -> None:
        """Move interactions to the spool; those that would take it past `spool_max_bytes` are dropped
        (logged and counted)."""
        entries = [Entry("interaction", r.id, r.to_json()) for r in records]
        left_out = await asyncio.to_thread(self._spool.append, entries, within_cap=True)
        if left_out:
            log.error("spool full (%d bytes): dropped %d interactions", self._spool.size, len(left_out))
        for _ in left_out:
            self._on_drop("interaction")
        for record in records:
            self._forget(record)

    async def _probe(self) -> bool:
        """Mark the database up when it answers again. The direct connections kept from before the
        outage are closed first: after a restart of the database they are dead, and each would fail
        one batch of ratings back into the spool."""
        if self.direct is not None:
            await self.direct.close()
        try:
            await asyncio.to_thread(_ping, self._sessions)
        except DATABASE_ERRORS:
            return False
        log.warning("database answers again; replaying %s spooled writes", self._spool.pending)
        self._db_up = True
        return True

    def _mark_down(self, error: Exception) -> None:
        if self._db_up:
            log.warning("database unavailable (%s): writes go to the spool", type(error).__name__)
        self._db_up = False
        self._next_probe = time.monotonic() + self._retry_s

    async def _replay(self) -> bool:
        """Apply the oldest due spool entries (interactions, then ratings in order, as one batch; entry
        by entry when the database refuses the batch for its data); True when more are due."""
        entries = await asyncio.to_thread(self._spool.ready, self._batch_size)
        if not entries:
            return False
        settled = _Settled()
        try:
            decoded = [(entry, record) for entry in entries if (record := await self._decode(entry, settled))]
            try:
                await self._replay_batch(decoded, settled)
            except DATABASE_ERRORS as error:
                if not is_record_error(error):
                    raise
                await self._replay_one_by_one(decoded, settled)
        finally:
            await asyncio.to_thread(
                self._spool.settle,
                settled.done,
                settled.deferred,
                max(5.0, self._retry_s),
                settled.refused,
                self._retry_s,
            )
        return len(entries) == self._batch_size

    async def _decode(self, entry: Entry, settled: _Settled) -> InteractionRecord | RatingWrite | None:
        """The entry's record with its text made storable (an older version may have spooled it raw);
        None, the entry set aside, when it holds no record at all."""
        try:
            if entry.kind == "interaction":
                record = storable_record(InteractionRecord.from_json(entry.payload))
                return await self._checked_spooled(record)
            return storable_record(RatingWrite.from_json(entry.payload))
        except (TypeError, ValueError, KeyError) as error:
            letter = DeadLetterRecord(
                entry.kind, entry.key, entry.payload, f"not a {entry.kind}: {error}", None, "spool"
            )
            await self._set_aside([letter])
            settled.done.append(entry)
            return None

    async def _checked_spooled(self, record: InteractionRecord) -> InteractionRecord:
        """A replayed interaction spooled before its check (at shutdown, or by an older version),
        checked now and counted; a failed check leaves it unchecked."""
        if record.fact_checked or self._check_facts is None:
            return record
        try:
            checked = await asyncio.to_thread(self._check_facts, record)
        except Exception:  # noqa: BLE001 - a failed check must never lose an answer
            log.exception("fact check of spooled answer %s failed; stored unchecked", record.id)
            return record
        self._on_checked(checked)
        return checked

    async def _replay_batch(
        self, decoded: list[tuple[Entry, InteractionRecord | RatingWrite]], settled: _Settled
    ) -> None:
        interactions = [r for _, r in decoded if isinstance(r, InteractionRecord)]
        rated = [(e, r) for e, r in decoded if isinstance(r, RatingWrite)]
        results = await self._write(
            postgres_writes.apply_ratings, apply_ratings, [r for _, r in rated], interactions
        )
        settled.done += [e for e, r in decoded if isinstance(r, InteractionRecord)]
        for (entry, write), stored in zip(rated, results, strict=True):
            await self._replayed(entry, write, stored, settled)

    async def _replay_one_by_one(
        self, decoded: list[tuple[Entry, InteractionRecord | RatingWrite]], settled: _Settled
    ) -> None:
        """Each entry on its own, in order. One the database refuses counts a try and waits (with the
        later entries of its key) until `max_tries`, then is set aside; the other keys go on."""
        waiting: set[str] = set()
        for entry, record in decoded:
            if entry.key in waiting:
                continue
            try:
                if isinstance(record, InteractionRecord):
                    await self._write(postgres_writes.insert_interactions, save_interactions, [record])
                    settled.done.append(entry)
                else:
                    (stored,) = await self._write(postgres_writes.apply_ratings, apply_ratings, [record])
                    await self._replayed(entry, record, stored, settled)
            except DATABASE_ERRORS as error:
                if not is_record_error(error):
                    raise
                if entry.tries + 1 < self._max_tries:
                    settled.refused.append(entry)
                    waiting.add(entry.key)
                    continue
                await self._set_aside([_letter(entry.kind, entry.key, entry.payload, error, "spool")])
                settled.done.append(entry)

    async def _replayed(
        self, entry: Entry, write: RatingWrite, stored: StoredRating | None, settled: _Settled
    ) -> None:
        """Settle a replayed rating: stored; set aside with its refused interaction; dropped as an
        orphan after `orphan_ttl_s`; or deferred (its interaction may still come)."""
        if stored is not None:
            self._on_rating(stored)
        elif entry.key in self._refused:
            await self._set_aside_rating(write, "spool")
        elif time.time() - entry.created > self._orphan_ttl_s:
            log.error("dropping a spooled rating: no interaction %s appeared", entry.key)
            self._on_drop("rating")
        else:
            settled.deferred.append(entry)
            return
        settled.done.append(entry)


@dataclass
class _Settled:
    """What one round of replay did with its entries: applied or set aside (`done`), waiting for their
    interaction (`deferred`), or refused once more (`refused`)."""

    done: list[Entry] = field(default_factory=list)
    deferred: list[Entry] = field(default_factory=list)
    refused: list[Entry] = field(default_factory=list)


def _letter(
    kind: Kind, key: str, payload: dict[str, Any], error: BaseException, source: str
) -> DeadLetterRecord:
    """A refused write, with the database's reason."""
    message, sqlstate = describe(error)
    return DeadLetterRecord(kind, key, payload, message, sqlstate, source)


def _ping(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        session.execute(select(1))
