"""Database engine and session factory for SQLite (embedded default) and PostgreSQL, and the direct
asyncio connections of PostgreSQL's hot writes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

CONNECT_TIMEOUT_S = 5
"""PostgreSQL connect timeout when the URL sets none (`?connect_timeout=` overrides it)."""

DATABASE_ERRORS = (SQLAlchemyError, psycopg.Error, OSError)
"""What a failed database write raises: through SQLAlchemy, or on a `DirectConnections` connection."""

RECORD_ERRORS = (psycopg.DataError, psycopg.IntegrityError, DataError, IntegrityError)
"""What the database raises when it refuses a record for its data (SQLSTATE class 22: text it cannot
hold, a value too long; class 23: a constraint), directly or wrapped by SQLAlchemy (SQLite's too). Such
a write fails the same way every time: its record is set aside (`database.models.DeadLetter`) and the
rest of its batch written. Any other failure (a refused or broken connection, a timeout) means the
database is away: the writes wait in the spool."""


def is_record_error(error: BaseException) -> bool:
    """True when the database refused the data written, not the connection (`RECORD_ERRORS`)."""
    return isinstance(error, RECORD_ERRORS)


def describe(error: BaseException) -> tuple[str, str | None]:
    """The first line of a database error's message (no statement, no parameters) and its SQLSTATE
    (None where the driver has none, as SQLite's)."""
    cause = error.orig if isinstance(error, DBAPIError) else error
    message = str(cause).strip().splitlines()
    sqlstate = getattr(cause, "sqlstate", None)
    return (message[0] if message else type(cause).__name__), sqlstate


def create_db_engine(database_url: str) -> Engine:
    """Create the SQLAlchemy engine; for SQLite make the folder, enable WAL and foreign keys. Statement
    parameters (prompts, answers, user hashes) are kept out of error messages and so out of logs."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, **_postgres_options(database_url))


class DirectConnections:
    """A few psycopg asyncio connections to PostgreSQL for the service's hot writes (ratings, the
    interaction log; `feedback.postgres_writes`), awaited on the event loop.

    - Awaited, not in a worker thread: a thread has to win the GIL back from the busy event loop after
      every round trip (up to the 5 ms switch interval each).
    - Plain psycopg, not SQLAlchemy's asyncio engine: checking a connection out of that engine and
      running one statement through it cost about twice the CPU of the statement on psycopg alone
      (measured: 1.0-1.5 ms against 0.5-0.6 ms per batch of 10 ratings).
    - Not `psycopg_pool`: while the database refuses connections its `getconn` waits, up to its
      timeout, for its background reconnection; here a refused connect fails at once, so the writes
      go to the spool at once. A connection that failed is closed, never reused.
    - Autocommit: a write of several statements sends them in one message, which PostgreSQL runs as
      one transaction (`feedback.postgres_writes`); no BEGIN or COMMIT round trip."""

    def __init__(self, database_url: str, keep: int = 4) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._options = _connect_args(database_url)
        self._keep = keep
        self._idle: list[psycopg.AsyncConnection[Any]] = []

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """An idle connection, or a new one; closed instead of kept when the block raises (its state is
        unknown) or when `keep` are idle already."""
        connection = self._idle.pop() if self._idle else await self._connect()
        try:
            yield connection
        except BaseException:
            await connection.close()
            raise
        if len(self._idle) < self._keep and not connection.closed:
            self._idle.append(connection)
        else:
            await connection.close()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True, **self._options)

    async def close(self) -> None:
        """Close the idle connections."""
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.close()


def direct_connections(database_url: str) -> DirectConnections | None:
    """`DirectConnections` to the database, or None for SQLite (its writes run in worker threads)."""
    if make_url(database_url).get_backend_name() == "sqlite":
        return None
    return DirectConnections(database_url)


def _postgres_options(database_url: str) -> dict[str, Any]:
    return {
        "pool_pre_ping": True,
        "pool_size": 10,
        "max_overflow": 20,
        "hide_parameters": True,
        "connect_args": _connect_args(database_url),
    }


def _connect_args(database_url: str) -> dict[str, Any]:
    """psycopg's options on every PostgreSQL connection.

    - A connect timeout, unless the URL sets one: an unreachable host must fail fast (writes then go
      to the spool), not wait for the TCP timeout.
    - No server-side prepared statements: PostgreSQL plans each statement with its parameters and the
      tables' current sizes. A generic plan cached while `ratings` was small kept scanning it whole as
      it grew (measured: CPU per batch of ratings going from 2 to 11 ms over 2,400 batches on one
      connection). It also keeps the service usable behind PgBouncer's transaction pooling."""
    options: dict[str, Any] = {"prepare_threshold": None}
    if "connect_timeout" not in make_url(database_url).query:
        options["connect_timeout"] = CONNECT_TIMEOUT_S
    return options


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Session factory bound to `engine`; objects stay usable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def ping(engine: Engine) -> bool:
    """True when the database answers a trivial query (used by /readyz)."""
    try:
        with engine.connect() as connection:
            connection.execute(select(1))
        return True
    except Exception:  # noqa: BLE001 - any failure means "not ready"
        return False
