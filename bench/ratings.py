"""Durable ratings per second through `POST /v1/feedback` at concurrency 32, beside the floor the
database itself sets: one psycopg INSERT+COMMIT per row at the same concurrency, against the same
PostgreSQL (its own throw-away server, fsync on) in the same run. Then the same load with the
database stopped for the middle third of the run (ratings go to the local spool) and started again.

Each phase counts what was acknowledged (200 stored or 202 queued) against the rows the database
holds at the end, after the spool drained: `lost` must be 0.

    python bench/ratings.py [--seconds 8] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import psycopg
from server import running_server
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from feedback.db import create_db_engine, make_session_factory
from feedback.migrate import upgrade
from feedback.models import Rating
from feedback.records import InteractionRecord
from feedback.store import save_interactions
from tests.conftest import _demo_fingerprint
from tests.pg_control import ControlledPostgres, controlled_postgres


@dataclass
class Phase:
    """One measured phase: acknowledged writes and their latencies."""

    name: str
    seconds: float
    latencies: list[float]
    failed: int
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
            id=f"chatcmpl-bench-{uuid.uuid4().hex}",
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


async def raw_inserts(url: str, concurrency: int, seconds: float) -> Phase:
    """One INSERT+COMMIT per row with psycopg, `concurrency` connections, into a copy of `ratings`."""
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as admin:
        await admin.execute("CREATE TABLE IF NOT EXISTS bench_ratings (LIKE ratings INCLUDING ALL)")
    latencies: list[float] = []
    failed = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal failed
        async with await psycopg.AsyncConnection.connect(conninfo) as connection:
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
                    failed += 1
                    continue
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Phase(
        f"psycopg INSERT+COMMIT per row, c={concurrency}", time.perf_counter() - started, latencies, failed
    )


async def service_ratings(
    name: str,
    base_url: str,
    ids: list[str],
    concurrency: int,
    seconds: float,
    database: ControlledPostgres | None = None,
) -> tuple[Phase, dict[str, int]]:
    """POST /v1/feedback for distinct answers at `concurrency`; with `database`, stop it for the middle
    third of the run. Returns the phase and the stars acknowledged per answer."""
    latencies: list[float] = []
    acknowledged: dict[str, int] = {}
    failed = 0
    queue = iter(ids)
    deadline = time.perf_counter() + seconds

    async def worker(client: aiohttp.ClientSession) -> None:
        nonlocal failed
        for answer_id in queue:
            if time.perf_counter() >= deadline:
                return
            stars = 1 + int(answer_id[-2:], 16) % 5
            started = time.perf_counter()
            try:
                async with client.post(
                    f"{base_url}/v1/feedback", json={"response_id": answer_id, "rating": stars}
                ) as response:
                    await response.read()
            except aiohttp.ClientError:
                failed += 1
                continue
            if response.status in (200, 202):
                latencies.append(time.perf_counter() - started)
                acknowledged[answer_id] = stars
            else:
                failed += 1

    async def outage() -> None:
        assert database is not None
        await asyncio.sleep(seconds / 3)
        await asyncio.to_thread(database.stop)
        await asyncio.sleep(seconds / 3)
        await asyncio.to_thread(database.start)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as client:
        started = time.perf_counter()
        tasks = [worker(client) for _ in range(concurrency)] + ([outage()] if database else [])
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        while True:  # wait for the spool to drain
            ready = (await http.get("/readyz")).json()
            if ready["status"] == "ready" and not any(ready["spool"].values()):
                break
            await asyncio.sleep(0.2)
    return Phase(name, elapsed, latencies, failed), acknowledged


async def http_ceiling(base_url: str, concurrency: int, seconds: float) -> Phase:
    """`GET /healthz` (no work at all) with the same client and concurrency: what the HTTP stack and
    this machine allow any endpoint, the ceiling the ratings run under."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(client: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            async with client.get(f"{base_url}/healthz") as response:
                await response.read()
            latencies.append(time.perf_counter() - started)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return Phase(
            f"GET /healthz, c={concurrency} (HTTP ceiling)", time.perf_counter() - started, latencies, 0
        )


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
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--answers", type=int, default=60_000, help="answers to rate, per service phase")
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
        raw = asyncio.run(raw_inserts(database.url, args.concurrency, args.seconds))
        with running_server(env) as server:
            ceiling = asyncio.run(http_ceiling(server.url, args.concurrency, args.seconds / 2))
            served, acknowledged = asyncio.run(
                service_ratings(
                    f"POST /v1/feedback, c={args.concurrency}",
                    server.url,
                    [r.id for r in batches[0]],
                    args.concurrency,
                    args.seconds,
                )
            )
            served.stored = stored_matching(database.url, acknowledged)
            spooled, acknowledged = asyncio.run(
                service_ratings(
                    f"POST /v1/feedback, c={args.concurrency}, database stopped for the middle third",
                    server.url,
                    [r.id for r in batches[1]],
                    args.concurrency,
                    args.seconds,
                    database,
                )
            )
            spooled.stored = stored_matching(database.url, acknowledged)
    print(
        f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, "
        f"Python {platform.python_version()}; {args.seconds:.0f} s per phase, PostgreSQL fsync on"
    )
    print("| phase | acknowledged | per second | ratio to raw | p50 ms | p99 ms | failed | lost |")
    print("|---|---|---|---|---|---|---|---|")
    print(raw.line())
    print(ceiling.line(raw))
    print(served.line(raw))
    print(spooled.line(raw))


if __name__ == "__main__":
    main()
