"""The background fact check's cost on the chat path: the same load on two `zantara serve` processes
of the demo model (hf engine, SQLite), one checking every served answer against the fact registry
(`ZANTARA_FACT_CHECK_ENABLED=true`, the default) and one not, in one run.

The load is a closed loop of `--clients` (16) clients over 8 API keys, each sending its next
non-streamed request when its answer is back (questions about figures the registry holds: capital,
VAT, KITAS, land titles; greedy, `--max-tokens`). The two services take turns (`--slices` each, so a
drifting machine skews no ratio). Printed per service: answers, answers/s, latency p50 and p99, and
the answers the check stored; then the p99 ratio, checked against issue 22's goal: the check moves the
chat path's p99 by at most 5%.

    python bench/fact_check.py [--seconds 60] [--slices 6] [--clients 16] [--max-tokens 48]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sqlite3
import tempfile
from pathlib import Path

import aiohttp
from overload import Load, closed_loop, quantile
from server import REPO, Server, running_server

from tests.conftest import _demo_fingerprint

P99_RATIO_GOAL = 1.05


async def measure(servers: dict[str, Server], args: argparse.Namespace) -> dict[str, Load]:
    """The load on each service in turns, after a warm-up of each."""
    loads = {name: Load(name) for name in servers}
    slice_s = args.seconds / args.slices
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as client:
        for server in servers.values():
            await closed_loop(client, server.url, Load("warm-up"), args.clients, 3, args.max_tokens)
        for _ in range(args.slices):
            for name, server in servers.items():
                await closed_loop(client, server.url, loads[name], args.clients, slice_s, args.max_tokens)
    return loads


def checked_answers(database: Path) -> tuple[int, int, int]:
    """(answers stored, answers checked, answers with a critical error) in a service's database."""
    with sqlite3.connect(database) as connection:
        row = connection.execute(
            "SELECT count(*), count(fact_critical), coalesce(sum(fact_critical > 0), 0) FROM interactions"
        ).fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def main() -> None:
    """Serve the demo model twice (check on, check off), load both in turns, print a Markdown table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds per service, all turns together")
    parser.add_argument("--slices", type=int, default=6, help="turns the services take, side by side")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (c)")
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    models = REPO / ".cache" / "demo-models" / _demo_fingerprint()
    with tempfile.TemporaryDirectory() as tmp:
        envs: dict[str, dict[str, str]] = {}
        for name, enabled in (("check on", "true"), ("check off", "false")):
            var = Path(tmp) / name.replace(" ", "-")
            envs[name] = {
                "ZANTARA_VAR_DIR": str(var),
                "ZANTARA_MODELS_DIR": str(models / "models"),
                "ZANTARA_ADAPTERS_DIR": str(models / "adapters"),
                "ZANTARA_DATABASE_URL": f"sqlite:///{var / 'zantara.db'}",
                "ZANTARA_FACT_CHECK_ENABLED": enabled,
            }
            var.mkdir(parents=True)
        with running_server(envs["check on"]) as on, running_server(envs["check off"]) as off:
            loads = asyncio.run(measure({"check on": on, "check off": off}, args))
        stored = {name: checked_answers(Path(tmp) / name.replace(" ", "-") / "zantara.db") for name in envs}
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; c={args.clients}; {args.seconds:.0f} s per service in {args.slices} "
        f"turns; max_tokens {args.max_tokens}"
    )
    print("| service | answered | answers/s | p50 ms | p99 ms | stored | checked | critical | other |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, load in loads.items():
        total, checked, critical = stored[name]
        p50, p99 = (quantile(load.answered, q) * 1000 for q in (0.5, 0.99))
        print(
            f"| {name} | {len(load.answered)} | {load.rate:.2f} | {p50:.0f} | {p99:.0f} | {total} | "
            f"{checked} | {critical} | {load.other or '-'} |"
        )
    ratio = quantile(loads["check on"].answered, 0.99) / quantile(loads["check off"].answered, 0.99)
    verdict = "meets" if ratio <= P99_RATIO_GOAL else "misses"
    print(f"\np99 with the check / without: {ratio:.3f} ({verdict} the goal of at most {P99_RATIO_GOAL})")


if __name__ == "__main__":
    main()
