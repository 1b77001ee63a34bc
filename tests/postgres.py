"""A throw-away PostgreSQL server for the test session (no server runs on these machines).

As root, PostgreSQL refuses to start, so it runs as the `postgres` user with data and socket in a
folder that user owns. `initdb`/`pg_ctl` come from `PATH` or Debian's `/usr/lib/postgresql/N/bin`.
`ZANTARA_TEST_POSTGRES_URL` points the tests at an existing server instead; without it, when those
programs are missing or cannot start a server, a server already listening on 127.0.0.1:5432 is used
(user `PGUSER`, default `postgres`; password from `PGPASSWORD`). With none of these the tests fail,
never skip.
"""

from __future__ import annotations

import glob
import os
import random
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import URL, make_url

TEST_CONNECT_TIMEOUT_S = 30
"""PostgreSQL connect timeout in the URL of each test's database (see `fresh_database`)."""
WORKER_PORTS = range(10000, 32768)
"""The ports pytest-xdist workers share out among themselves: below the kernel's default ephemeral ports
(32768 and up), so no outgoing connection takes one (see `free_port`)."""
_handed_out: set[int] = set()
_random = random.SystemRandom()  # never replayed by a test's random.seed()


def free_port() -> int:
    """An unused TCP port on the loopback interface (free when handed out, not reserved).

    Under pytest-xdist (`PYTEST_XDIST_WORKER=gwN`) each worker picks at random in a slice of
    `WORKER_PORTS` of its own and never hands out a port twice, so neither the other worker nor an
    outgoing connection takes the port before the server it was meant for binds it. Otherwise the
    kernel picks one.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or int(worker.removeprefix("gw")) >= count:
        return _bound_port(0)
    size = len(WORKER_PORTS) // count
    mine = WORKER_PORTS[int(worker.removeprefix("gw")) * size :][:size]
    for _ in range(1000):
        port = _random.choice(mine)
        if port in _handed_out:
            continue
        try:
            _bound_port(port)
        except OSError:
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {mine}")


def _bound_port(port: int) -> int:
    """`port` (0: one the kernel picks) if it can be bound on 127.0.0.1 now; raises OSError otherwise."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        return int(sock.getsockname()[1])


def _run_as_postgres(args: list[str]) -> None:
    """Run a PostgreSQL program (as the `postgres` user when root) on any core: a pytest-xdist worker
    runs on a core of its own (tests/conftest.py), but the server it starts here need not wait behind
    that worker's busy core to start a backend (seen: a connection timing out after 5 s)."""
    command = ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args
    pinned = os.sched_getaffinity(0)
    os.sched_setaffinity(0, range(os.cpu_count() or 1))  # this thread's; the programs inherit it
    try:
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    finally:
        os.sched_setaffinity(0, pinned)
    if result.returncode:
        raise RuntimeError(f"{' '.join(args[:1])} failed ({result.returncode}):\n{result.stdout}")


def _program(name: str) -> str | None:
    """`name` from PATH, else from the newest `/usr/lib/postgresql/N/bin` (Debian keeps them there)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    return max(candidates, key=lambda path: int(Path(path).parts[-3]), default=None)


def _local_server() -> str | None:
    """The URL of a PostgreSQL on 127.0.0.1:5432 that accepts `PGUSER` (default `postgres`), else None."""
    url = URL.create(
        "postgresql+psycopg",
        username=os.environ.get("PGUSER", "postgres"),
        password=os.environ.get("PGPASSWORD"),
        host="127.0.0.1",
        port=5432,
        database="postgres",
    )
    try:
        psycopg.connect(_conninfo(url), connect_timeout=3).close()
    except psycopg.Error:
        return None
    return url.render_as_string(hide_password=False)


def _conninfo(url: URL) -> str:
    """libpq connection string of a SQLAlchemy URL (password included when it has one)."""
    return make_conninfo(
        host=url.host, port=url.port, user=url.username, password=url.password, dbname=url.database
    )


@contextmanager
def session_server() -> Iterator[str]:
    """The server the test session uses: `ZANTARA_TEST_POSTGRES_URL`, a throw-away one, or the one
    on 127.0.0.1:5432; raises (the tests fail) when there is none."""
    existing = os.environ.get("ZANTARA_TEST_POSTGRES_URL")
    if existing:
        yield existing
        return
    failure = "initdb/pg_ctl are not installed"
    with ExitStack() as stack:
        if _program("initdb") and _program("pg_ctl"):
            try:
                url = stack.enter_context(postgres_server())
            except RuntimeError as error:
                failure = str(error)
            else:
                yield url
                return
    local = _local_server()
    if local is None:
        raise RuntimeError(
            f"No PostgreSQL for the tests ({failure}): install PostgreSQL 15 (initdb/pg_ctl), run one "
            "on 127.0.0.1:5432, or set ZANTARA_TEST_POSTGRES_URL"
        )
    yield local


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start PostgreSQL in a fresh folder the `postgres` user owns; yield its URL; stop and remove it."""
    initdb, pg_ctl = _program("initdb"), _program("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise RuntimeError("PostgreSQL's initdb/pg_ctl are not installed: install PostgreSQL 15 (see README)")
    root = Path(tempfile.mkdtemp(prefix="zantara-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    try:
        _run_as_postgres([initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"])
        _run_as_postgres([pg_ctl, "-D", str(data), "-w", "-l", str(root / "log"), "-o", options, "start"])
    except RuntimeError:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        _run_as_postgres([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """Create an empty database on the server for one test; drop it afterwards. Its URL allows
    `TEST_CONNECT_TIMEOUT_S` to connect (the service's default, 5 s, was once exceeded by a fresh
    database's first connection while two pytest-xdist workers kept both cores busy)."""
    url = make_url(server_url)
    name = f"t_{uuid.uuid4().hex[:12]}"
    conninfo = _conninfo(url)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        database = url.set(database=name).update_query_dict({"connect_timeout": str(TEST_CONNECT_TIMEOUT_S)})
        yield database.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
