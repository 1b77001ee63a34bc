"""The spool's bounds: its size in bytes is known without a scan (and survives a restart), and finding
the entries due never walks the table (`next_try` is indexed, in files from older versions too)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect

from feedback.spool import Entry, Spool


def _rating(key: str, comment: str = "") -> Entry:
    return Entry("rating", key, {"interaction_id": key, "stars": 5, "comment": comment})


def _plans(spool: Spool, limit: int) -> list[str]:
    """The query plan of every statement `spool.ready(limit)` runs, one line per step."""
    statements: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        statements.append((statement, parameters))

    event.listen(spool._engine, "before_cursor_execute", seen)
    try:
        spool.ready(limit)
    finally:
        event.remove(spool._engine, "before_cursor_execute", seen)
    with sqlite3.connect(spool.path) as connection:
        return [
            " ".join(row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {statement}", parameters))
            for statement, parameters in statements
        ]


def test_finding_the_due_entries_uses_the_next_try_index(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite3")
    spool.append([_rating(f"chatcmpl-{n:032x}") for n in range(50)])
    deferred = spool.ready(40)
    spool.settle([], deferred, defer_s=3600)  # 40 orphans wait an hour; 10 are due
    assert [e.key for e in spool.ready(100)] == [f"chatcmpl-{n:032x}" for n in range(40, 50)]
    plans = _plans(spool, 100)
    assert plans and all("USING INDEX ix_entries_next_try" in plan for plan in plans), plans
    assert not any("SCAN entries" in plan for plan in plans), plans
    spool.close()


def test_a_spool_file_from_an_older_version_gets_the_index(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    with sqlite3.connect(path) as connection:  # the table as the first spooling version made it
        connection.execute(
            "CREATE TABLE entries (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind VARCHAR(16) NOT NULL, "
            "key VARCHAR(64) NOT NULL, payload TEXT NOT NULL, created FLOAT NOT NULL, "
            "next_try FLOAT NOT NULL)"
        )
        connection.execute(
            "INSERT INTO entries (kind, key, payload, created, next_try) VALUES (?, ?, ?, ?, 0)",
            ("rating", "chatcmpl-old", '{"stars": 4}', time.time()),
        )
    spool = Spool(path)
    indexes = {index["name"] for index in inspect(spool._engine).get_indexes("entries")}
    assert "ix_entries_next_try" in indexes
    assert spool.size == len('{"stars": 4}') and [e.key for e in spool.ready(10)] == ["chatcmpl-old"]
    spool.close()


def test_the_size_is_the_payload_bytes_and_survives_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite3", max_bytes=1000)
    assert spool.size == 0 and not spool.full
    spool.append([_rating("a", "é" * 100), _rating("b")])
    size = spool.size
    assert size > 200  # bytes, not characters
    spool.close()
    again = Spool(tmp_path / "spool.sqlite3", max_bytes=size)
    assert again.size == size and again.full
    done = [e for e in again.ready(10) if e.key == "a"]
    again.settle(done, [], defer_s=1)
    assert 0 < again.size < 100 and not again.full
    again.close()


def test_entries_that_would_overflow_are_left_out(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite3", max_bytes=300)
    left_out = spool.append([_rating(f"k{n}", "x" * 50) for n in range(10)], within_cap=True)
    kept = spool.counts()["rating"]
    assert 0 < kept < 10 and len(left_out) == 10 - kept and spool.size <= 300
    assert [e.key for e in left_out] == [f"k{n}" for n in range(kept, 10)]
    spool.close()
