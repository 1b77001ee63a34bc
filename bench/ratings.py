"""Durable ratings per second through `POST /v1/feedback` at concurrency 32, beside the floor the
database itself sets: one psycopg INSERT+COMMIT per row at the same concurrency, against the same
PostgreSQL (its own throw-away server, fsync on) in the same run. Then the same load with the database
stopped for the middle third of the run (ratings go to the local spool) and started again.

The raw inserts, `GET /healthz` (the HTTP ceiling) and the ratings take turns in short slices
(`--slices`), each over connections kept open, so that every phase sees the same machine: on a shared
2-core machine the speed drifts by a third within a minute, and phases run one after the other measured
that drift as much as the service.

Each rating phase counts what was acknowledged (200 stored or 202 queued) against the rows the database
holds at the end, after the spool drained: `lost` must be 0.

    python bench/ratings.py [--seconds 8] [--slices 4] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import psycopg
from server import running_server
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from database.engine import create_db_engine, make_session_factory
from database.migrate import upgrade
from database.models import Rating
from feedback.records import InteractionRecord
from feedback.store import save_interactions
from tests.conftest import _demo_fingerprint
from tests.pg_control import ControlledPostgres, controlled_postgres


@dataclass
class Phase:
    """One measured phase, possibly over several slices: acknowledged writes and their latencies."""

    name: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failed: int = 0
    stored: int | None = None

    @property
    def rate(self) -> float:
        """Acknowledged writes per second."""
        return len(self.latencies) / self.seconds

    def p(self, q: float) -> float:
        """Latency quantile in milliseconds."""
        return 1000 * statistics.quantiles(self.latencies, n=1000)[int(q * 1000) - 1]

    def line(self, reference: Phase | None = None) -> str:
        """One row of the results table."""
        lost = "" if self.stored is None else f"{len(self.latencies) - self.stored}"
        ratio = f"{self.rate / reference.rate:.2f}" if reference else "1.00"
        return (
            f"| {self.name} | {len(self.latencies)} | {self.rate:,.0f} | {ratio} | {self.p(0.5):.1f} | "
            f"{self.p(0.99):.1f} | {self.failed} | {lost} |"
        )


def _interactions(count: int) -> list[InteractionRecord]:
    return [
        InteractionRecord(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            user_hash=None,
            model_requested="zantara",
            routed=True,
            variant="base",
            adapter_name=None,
            adapter_version=None,
            messages=[{"role": "user", "content": "Apa itu KITAS?"}],
            answer="KITAS adalah izin tinggal terbatas.",
            finish_reason="stop",
            prompt_tokens=10,
            completion_tokens=8,
            latency_s=0.1,
            ttft_s=0.01,
            params={},
            streamed=False,
        )
        for _ in range(count)
    ]


@asynccontextmanager
async def raw_connections(url: str, concurrency: int) -> AsyncIterator[list[psycopg.AsyncConnection]]:
    """`concurrency` psycopg connections, and a copy of `ratings` to insert into."""
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as admin:
        await admin.execute("CREATE TABLE IF NOT EXISTS bench_ratings (LIKE ratings INCLUDING ALL)")
    connections = [await psycopg.AsyncConnection.connect(conninfo) for _ in range(concurrency)]
    try:
        yield connections
    finally:
        for connection in connections:
            await connection.close()


async def raw_inserts(phase: Phase, connections: list[psycopg.AsyncConnection], seconds: float) -> None:
    """One INSERT+COMMIT per row for `seconds`, on each connection at once."""
    deadline = time.perf_counter() + seconds

    async def worker(connection: psycopg.AsyncConnection) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await connection.execute(
                    "INSERT INTO bench_ratings (interaction_id, stars, comment, created_at, updated_at) "
                    "VALUES (%s, %s, NULL, now(), now())",
                    (uuid.uuid4().hex, 4),
                )
                await connection.commit()
            except psycopg.Error:
                phase.failed += 1
                continue
            phase.latencies.append(time.perf_counter() - started)

    await _timed(phase, *(worker(connection) for connection in connections))


async def http_ceiling(
    phase: Phase, client: aiohttp.ClientSession, base_url: str, concurrency: int, seconds: float
) -> None:
    """`GET /healthz` (no work at all) for `seconds` with the same client and concurrency: what the HTTP
    stack and this machine allow any endpoint, the ceiling the ratings run under."""
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            async with client.get(f"{base_url}/healthz") as response:
                await response.read()
            phase.latencies.append(time.perf_counter() - started)

    await _timed(phase, *(worker() for _ in range(concurrency)))


@dataclass
class Ratings:
    """Rates distinct answers, `ids` in order, remembering the stars acknowledged per answer."""

    client: aiohttp.ClientSession
    base_url: str
    ids: Iterator[str]
    acknowledged: dict[str, int] = field(default_factory=dict)

    async def run(
        self, phase: Phase, concurrency: int, seconds: float, database: ControlledPostgres | None = None
    ) -> None:
        """POST /v1/feedback at `concurrency` for `seconds`; with `database`, stop it for the middle
        third of that time, then start it again."""
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            for answer_id in self.ids:
                if time.perf_counter() >= deadline:
                    return
                stars = 1 + int(answer_id[-2:], 16) % 5
                started = time.perf_counter()
                try:
                    async with self.client.post(
                        f"{self.base_url}/v1/feedback", json={"response_id": answer_id, "rating": stars}
                    ) as response:
                        await response.read()
                except aiohttp.ClientError:
                    phase.failed += 1
                    continue
                if response.status in (200, 202):
                    phase.latencies.append(time.perf_counter() - started)
                    self.acknowledged[answer_id] = stars
                else:
                    phase.failed += 1

        async def outage() -> None:
            assert database is not None
            await asyncio.sleep(seconds / 3)
            await asyncio.to_thread(database.stop)
            await asyncio.sleep(seconds / 3)
            await asyncio.to_thread(database.start)

        await _timed(phase, *(worker() for _ in range(concurrency)), *([outage()] if database else []))

    async def drained(self) -> None:
        """Wait until the service's spool is empty and the database up."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as http:
            while True:
                ready = (await http.get("/readyz")).json()
                if ready["status"] == "ready" and not any(ready["spool"].values()):
                    return
                await asyncio.sleep(0.2)


async def _timed(phase: Phase, *work: Awaitable[None]) -> None:
    started = time.perf_counter()
    await asyncio.gather(*work)
    phase.seconds += time.perf_counter() - started


async def measure(
    database: ControlledPostgres, base_url: str, ids: tuple[list[str], list[str]], args: argparse.Namespace
) -> tuple[Phase, Phase, Phase, Phase]:
    """The raw inserts, `/healthz` and the ratings in turns (`args.slices` each), then the outage run;
    the rating phases' `stored` counted once the spool drained."""
    c = args.concurrency
    raw = Phase(f"psycopg INSERT+COMMIT per row, c={c}")
    ceiling = Phase(f"GET /healthz, c={c} (HTTP ceiling)")
    served = Phase(f"POST /v1/feedback, c={c}")
    spooled = Phase(f"POST /v1/feedback, c={c}, database stopped for the middle third")
    slice_s = args.seconds / args.slices
    connector = aiohttp.TCPConnector(limit=c)
    async with (
        raw_connections(database.url, c) as connections,
        aiohttp.ClientSession(connector=connector) as client,
    ):
        ratings = Ratings(client, base_url, iter(ids[0]))
        for _ in range(args.slices):
            await raw_inserts(raw, connections, slice_s)
            await http_ceiling(ceiling, client, base_url, c, slice_s / 2)
            await ratings.run(served, c, slice_s)
        await ratings.drained()
        served.stored = stored_matching(database.url, ratings.acknowledged)
        outage = Ratings(client, base_url, iter(ids[1]))
        await outage.run(spooled, c, args.seconds, database)
        await outage.drained()
        spooled.stored = stored_matching(database.url, outage.acknowledged)
    return raw, ceiling, served, spooled


def stored_matching(url: str, acknowledged: dict[str, int]) -> int:
    """How many acknowledged ratings the database holds with the acknowledged stars."""
    engine = create_db_engine(url)
    with engine.connect() as connection:
        rows = dict(
            connection.execute(
                select(Rating.interaction_id, Rating.stars).where(
                    Rating.interaction_id.in_(list(acknowledged))
                )
            ).all()
        )
        total = connection.scalar(select(func.count()).select_from(Rating))
    engine.dispose()
    assert total is not None
    return sum(1 for key, stars in acknowledged.items() if rows.get(key) == stars)


def main() -> None:
    """Run the phases and print a Markdown table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per phase, all slices together")
    parser.add_argument("--slices", type=int, default=4, help="turns the phases take, side by side")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--answers", type=int, default=60_000, help="answers to rate, per rating phase")
    args = parser.parse_args()
    models = Path(__file__).resolve().parents[1] / ".cache" / "demo-models" / _demo_fingerprint()
    with controlled_postgres(fsync=True) as database, tempfile.TemporaryDirectory() as var:
        upgrade(database.url)
        engine = create_db_engine(database.url)
        sessions = make_session_factory(engine)
        batches = [_interactions(args.answers) for _ in range(2)]
        for batch in batches:
            for start in range(0, len(batch), 5000):
                save_interactions(sessions, batch[start : start + 5000])
        engine.dispose()
        env = {
            "ZANTARA_VAR_DIR": var,
            "ZANTARA_DATABASE_URL": database.url,
            "ZANTARA_ADMIN_TOKEN": "bench-admin-token-0123456789",
            "ZANTARA_SPOOL_RETRY_S": "0.2",
        }
        if (models / "models").is_dir():
            env |= {
                "ZANTARA_MODELS_DIR": str(models / "models"),
                "ZANTARA_ADAPTERS_DIR": str(models / "adapters"),
            }
        ids = ([r.id for r in batches[0]], [r.id for r in batches[1]])
        with running_server(env) as server:
            raw, ceiling, served, spooled = asyncio.run(measure(database, server.url, ids, args))
    print(
        f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, "
        f"Python {platform.python_version()}; {args.seconds:.0f} s per phase in {args.slices} turns, "
        "PostgreSQL fsync on"
    )
    print("| phase | acknowledged | per second | ratio to raw | p50 ms | p99 ms | failed | lost |")
    print("|---|---|---|---|---|---|---|---|")
    print(raw.line())
    print(ceiling.line(raw))
    print(served.line(raw))
    print(spooled.line(raw))


if __name__ == "__main__":
    main()
