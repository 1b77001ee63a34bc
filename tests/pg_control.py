"""A dedicated throw-away PostgreSQL that a test or benchmark may stop and start again at will (the
session's shared server must never go away under other tests). Started as in `tests.postgres`."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.postgres import _program, _run_as_postgres, free_port


@dataclass(frozen=True)
class ControlledPostgres:
    """A running server: its URL, and `stop`/`start` to take it away and bring it back."""

    url: str
    data: Path
    log: Path
    options: str

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are cut)."""
        _run_as_postgres([_pg_ctl(), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def start(self) -> None:
        """Start it again on the same port and data."""
        _run_as_postgres(
            [_pg_ctl(), "-D", str(self.data), "-w", "-l", str(self.log), "-o", self.options, "start"]
        )


def _pg_ctl() -> str:
    pg_ctl = _program("pg_ctl")
    if pg_ctl is None:
        raise RuntimeError("PostgreSQL's pg_ctl is not installed: install PostgreSQL 15 (see README)")
    return pg_ctl


@contextmanager
def controlled_postgres(*, fsync: bool = False) -> Iterator[ControlledPostgres]:
    """Start a fresh server (`fsync` on for durability measurements); stop and remove it afterwards."""
    initdb = _program("initdb")
    if initdb is None:
        raise RuntimeError("PostgreSQL's initdb is not installed: install PostgreSQL 15 (see README)")
    root = Path(tempfile.mkdtemp(prefix="zantara-pg-ctl-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port, sync = free_port(), "on" if fsync else "off"
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync={sync} -c max_connections=200"
    server = ControlledPostgres(
        f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", root / "data", root / "log", options
    )
    try:
        _run_as_postgres([initdb, "-D", str(server.data), "-A", "trust", "-U", "postgres", "--no-sync"])
        server.start()
        yield server
    finally:
        with_server = (server.data / "postmaster.pid").exists()
        if with_server:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
