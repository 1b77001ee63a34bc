"""What a router tier adds in front of an OpenAI-compatible model server: ours (the service with the
`openai` engine: canary routing between the base model and an adapter, every interaction logged to
the database) beside LiteLLM's proxy (weighted routing between two deployments), side by side in one
run, against the same fixed-latency upstreams that the benchmark starts itself.

Two upstreams (a small Starlette app each, its own process: a fixed answer after `--latency-ms`,
plain or streamed, `/v1/models` listing a base model and an adapter with `parent`, as `vllm serve`
does) stand for two GPU servers. Measured, for each concurrency (1, 16, 64) and mode (plain,
streamed), interleaved so load on the machine falls on all alike:

- direct: the client spreads its requests over both upstreams itself;
- ours: `zantara serve` with ZANTARA_ENGINE=openai and both upstreams in ZANTARA_UPSTREAM_URLS,
  `model: "zantara"` routed (20% canary on the adapter), interactions logged (PostgreSQL by default);
- LiteLLM: its proxy (`litellm[proxy]`, in its own virtualenv under .cache/, created on first run)
  with two deployments of model `zantara`, weights 4:1 (base:adapter), simple-shuffle routing.

Prints requests/s, p50/p99 latency, the latency each router adds over direct, and the ratios
(our added p50 / LiteLLM's, our requests/s / LiteLLM's at concurrency 64).

    python bench/router_overhead.py [--seconds 5] [--latency-ms 50] [--database postgres|sqlite]
        [--only direct,ours,litellm]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
import httpx
from server import REPO, running_server

from tests.postgres import free_port

BASE = "upstream-base"
ADAPTER = "zantara-demo@v1"
ANSWER = "Modal minimum PT PMA adalah Rp10 miliar, di luar tanah dan bangunan."
LITELLM_SPEC = "litellm[proxy]==1.108.7"
LITELLM_VENV = REPO / ".cache" / "bench-litellm-venv"
CONCURRENCY = (1, 16, 64)
MODES = ("plain", "stream")
TARGETS = ("direct", "ours", "litellm")
API_KEY = "sk-bench-" + os.urandom(16).hex()
"""The one client key both routers check (LiteLLM refuses to start without a master key)."""


def upstream_app(latency_s: float) -> Any:
    """A fixed-latency OpenAI-compatible server: one fixed answer after `latency_s`."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    words = ANSWER.split(" ")
    models = {
        "object": "list",
        "data": [
            {"id": BASE, "object": "model", "owned_by": "bench", "root": BASE, "parent": None},
            {"id": ADAPTER, "object": "model", "owned_by": "bench", "root": "/adapters", "parent": BASE},
        ],
    }

    async def list_models(_: Request) -> Response:
        return JSONResponse(models)

    async def adapter_endpoint(_: Request) -> Response:
        return PlainTextResponse("Success")

    async def chat(request: Request) -> Response:
        body = await request.json()
        await asyncio.sleep(latency_s)
        ident, created, model = f"chatcmpl-{random.getrandbits(64):x}", int(time.time()), body["model"]
        usage = {"prompt_tokens": 24, "completion_tokens": len(words), "total_tokens": 24 + len(words)}
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": ANSWER},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                }
            )
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, str] | None, finish: str | None = None, **more: Any) -> str:
            choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta is not None else []
            payload = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
                **more,
            }
            return f"data: {json.dumps(payload)}\n\n"

        async def events() -> AsyncIterator[str]:
            yield chunk({"role": "assistant", "content": ""})
            for index, word in enumerate(words):
                yield chunk({"content": word if index == 0 else " " + word})
            yield chunk({}, "stop")
            if with_usage:
                yield chunk(None, usage=usage)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(
        routes=[
            Route("/v1/models", list_models),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/load_lora_adapter", adapter_endpoint, methods=["POST"]),
            Route("/v1/unload_lora_adapter", adapter_endpoint, methods=["POST"]),
            Route("/health", adapter_endpoint),
        ]
    )


@contextmanager
def process(
    name: str, command: list[str], ready_url: str, env: dict[str, str], timeout_s: float
) -> Iterator[None]:
    """Run `command` until the block ends, once `ready_url` answers 200; its output shown if it fails."""
    with tempfile.TemporaryFile("w+") as output:
        child = subprocess.Popen(
            command, env={**os.environ, **env}, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, text=True
        )
        try:
            _wait(name, child, ready_url, time.perf_counter() + timeout_s, output)
            yield
        finally:
            child.terminate()
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()


def _wait(name: str, child: subprocess.Popen[str], url: str, deadline: float, output: IO[str]) -> None:
    with httpx.Client(timeout=2) as client:
        while True:
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if child.poll() is not None or time.perf_counter() > deadline:
                output.seek(0)
                raise RuntimeError(f"{name} did not come up; its output:\n{output.read()[-4000:]}")
            time.sleep(0.2)


def upstream(port: int, latency_ms: float) -> Any:
    """One fixed-latency upstream in its own process (this script with `--upstream PORT`)."""
    command = [sys.executable, __file__, "--upstream", str(port), "--latency-ms", str(latency_ms)]
    return process(f"upstream :{port}", command, f"http://127.0.0.1:{port}/v1/models", {}, 60)


def ensure_litellm(spec: str) -> Path:
    """LiteLLM's `litellm` command from its own virtualenv, created (with `spec`) if missing."""
    command = LITELLM_VENV / "bin" / "litellm"
    if command.exists():
        return command
    print(f"installing {spec} into {LITELLM_VENV} (once)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    pip = str(LITELLM_VENV / "bin" / "pip")
    subprocess.run([pip, "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([pip, "install", "--quiet", spec], check=True)
    return command


def litellm_proxy(command: Path, upstreams: list[str], folder: Path) -> tuple[Any, str]:
    """LiteLLM's proxy with two weighted deployments of `zantara` (base 4 : adapter 1)."""
    deployments = [(BASE, upstreams[0], 4), (ADAPTER, upstreams[1], 1)]
    config = {
        "model_list": [
            {
                "model_name": "zantara",
                "litellm_params": {
                    "model": f"openai/{model}",
                    "api_base": url,
                    "api_key": "bench",
                    "weight": w,
                },
            }
            for model, url, w in deployments
        ],
        "router_settings": {"routing_strategy": "simple-shuffle"},
        "litellm_settings": {"drop_params": True},
    }
    config_file = folder / "litellm.yaml"
    config_file.write_text(json.dumps(config, indent=2))  # YAML is a superset of JSON
    port = free_port()
    env = {
        "LITELLM_MASTER_KEY": API_KEY,
        "LITELLM_LOG": "ERROR",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "NO_DOCS": "True",
    }
    args = [str(command), "--config", str(config_file), "--host", "127.0.0.1", "--port", str(port)]
    args += ["--num_workers", "1"]
    url = f"http://127.0.0.1:{port}"
    return process("LiteLLM", args, f"{url}/health/liveliness", env, 300), url


@dataclass
class Cell:
    """One measurement: a target at one concurrency and mode."""

    target: str
    mode: str
    concurrency: int
    seconds: float
    latencies: list[float]
    failed: int

    @property
    def rate(self) -> float:
        """Completed requests per second."""
        return len(self.latencies) / self.seconds

    def p(self, q: float) -> float:
        """Latency quantile in milliseconds."""
        if len(self.latencies) < 2:
            return 1000 * (self.latencies[0] if self.latencies else float("nan"))
        return 1000 * statistics.quantiles(self.latencies, n=100, method="inclusive")[round(q * 100) - 1]


async def measure(
    target: str, urls: list[str], model: str, mode: str, concurrency: int, seconds: float
) -> Cell:
    """Closed loop: `concurrency` clients, each sending its next request when the last completed;
    client `i` uses `urls[i % len(urls)]`. A request counts once its whole answer arrived."""
    stream = mode == "stream"
    latencies: list[float] = []
    failed = 0
    deadline = time.perf_counter() + seconds
    users = [f"user-{i}" for i in range(1000)]

    async def client(index: int, session: aiohttp.ClientSession) -> None:
        nonlocal failed
        url = urls[index % len(urls)] + "/chat/completions"
        while time.perf_counter() < deadline:
            body: dict[str, Any] = {
                "model": model,
                "messages": [{"role": "user", "content": "Berapa modal minimum untuk PT PMA?"}],
                "max_tokens": 32,
                "temperature": 0,
                "user": random.choice(users),
                "stream": stream,
            }
            started = time.perf_counter()
            try:
                async with session.post(url, json=body) as response:
                    payload = await response.read()
                ok = response.status == 200 and (b"[DONE]" in payload if stream else b'"content"' in payload)
            except aiohttp.ClientError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                failed += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(i, session) for i in range(concurrency)))
        return Cell(target, mode, concurrency, time.perf_counter() - started, latencies, failed)


def our_service_env(upstreams: list[str], var: Path, database_url: str) -> dict[str, str]:
    """Our service in front of the upstreams: `openai` engine, routed, logging to `database_url`."""
    (var / "adapters").mkdir(parents=True, exist_ok=True)
    return {
        "ZANTARA_ENGINE": "openai",
        "ZANTARA_UPSTREAM_URLS": ",".join(upstreams),
        "ZANTARA_BASE_MODEL": BASE,
        "ZANTARA_VAR_DIR": str(var),
        "ZANTARA_ADAPTERS_DIR": str(var / "adapters"),
        "ZANTARA_DATABASE_URL": database_url,
        "ZANTARA_ADMIN_TOKEN": "bench-admin-token-0123456789",
        "ZANTARA_API_KEYS": API_KEY,
        "ZANTARA_DEFAULT_ROLLOUT_PERCENTAGE": "20",
        "ZANTARA_MAX_CONCURRENT_REQUESTS_PER_KEY": "0",  # one client key, as behind the chart's router
        "ZANTARA_MAX_CONCURRENT_REQUESTS": "256",  # the chart's router tier (router.env)
    }


def table(cells: list[Cell]) -> list[str]:
    """The results as Markdown rows, each router's added latency taken against direct."""
    direct = {(c.mode, c.concurrency): c for c in cells if c.target == "direct"}
    rows = [
        "| target | mode | concurrency | requests | requests/s | p50 ms | p99 ms | added p50 ms | "
        "added p99 ms | failed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        ref = direct.get((c.mode, c.concurrency))
        added = (
            (f"{c.p(0.5) - ref.p(0.5):.1f}", f"{c.p(0.99) - ref.p(0.99):.1f}")
            if ref and c.target != "direct"
            else ("", "")
        )
        rows.append(
            f"| {c.target} | {c.mode} | {c.concurrency} | {len(c.latencies)} | {c.rate:,.0f} | "
            f"{c.p(0.5):.1f} | {c.p(0.99):.1f} | {added[0]} | {added[1]} | {c.failed} |"
        )
    return rows


def ratios(cells: list[Cell]) -> list[str]:
    """Ours against LiteLLM: added p50 at every concurrency, requests/s at 64 (the goals: at most a
    quarter of LiteLLM's added p50, at least 3x its requests/s at 64)."""
    by = {(c.target, c.mode, c.concurrency): c for c in cells}
    lines = []
    for mode, concurrency in itertools.product(MODES, CONCURRENCY):
        ours, peer, ref = (by.get((t, mode, concurrency)) for t in ("ours", "litellm", "direct"))
        if not (ours and peer and ref):
            continue
        our_added, peer_added = ours.p(0.5) - ref.p(0.5), peer.p(0.5) - ref.p(0.5)
        line = (
            f"- {mode}, concurrency {concurrency}: added p50 ours {our_added:.1f} ms, LiteLLM "
            f"{peer_added:.1f} ms, ratio {our_added / peer_added:.2f} (goal <= 0.25)"
            if peer_added > 0
            else f"- {mode}, concurrency {concurrency}: LiteLLM added no p50 latency"
        )
        if concurrency == max(CONCURRENCY):
            line += f"; requests/s ours / LiteLLM {ours.rate / max(peer.rate, 1e-9):.2f} (goal >= 3)"
        lines.append(line)
    return lines


@contextmanager
def database(kind: str, var: Path) -> Iterator[str]:
    """The interaction log's database: a throw-away PostgreSQL (as in production) or SQLite."""
    if kind == "sqlite":
        yield f"sqlite:///{var / 'zantara.db'}"
        return
    from tests.pg_control import controlled_postgres

    with controlled_postgres() as server:
        yield server.url


def run(args: argparse.Namespace) -> None:
    """Start everything, measure every cell, print the table and the ratios."""
    wanted = [t for t in args.only.split(",") if t]
    with ExitStack() as stack:
        var = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        ports = [free_port(), free_port()]
        for port in ports:
            stack.enter_context(upstream(port, args.latency_ms))
        upstreams = [f"http://127.0.0.1:{port}/v1" for port in ports]
        targets: dict[str, tuple[list[str], str]] = {"direct": (upstreams, BASE)}
        if "ours" in wanted:
            url = stack.enter_context(database(args.database, var))
            served = stack.enter_context(running_server(our_service_env(upstreams, var, url), timeout_s=180))
            targets["ours"] = ([served.url + "/v1"], "zantara")
        if "litellm" in wanted:
            proxy, url = litellm_proxy(ensure_litellm(args.litellm_spec), upstreams, var)
            stack.enter_context(proxy)
            targets["litellm"] = ([url + "/v1"], "zantara")
        cells = []
        for concurrency, mode in itertools.product(CONCURRENCY, MODES):
            for target in (t for t in TARGETS if t in targets):
                urls, model = targets[target]
                asyncio.run(
                    measure(target, urls, model, mode, concurrency, min(1.0, args.seconds))
                )  # warm-up
                cell = asyncio.run(measure(target, urls, model, mode, concurrency, args.seconds))
                print(
                    f"{target:8} {mode:6} c={concurrency:<3} {cell.rate:8.0f}/s p50 {cell.p(0.5):7.1f} ms",
                    file=sys.stderr,
                )
                cells.append(cell)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; upstream latency {args.latency_ms:.0f} ms, {args.seconds:.0f} s per "
        f"cell, interactions logged to {args.database}; LiteLLM {args.litellm_spec}"
    )
    print("\n".join(table(cells)))
    print()
    print("\n".join(ratios(cells)))


def main() -> None:
    """Parse the arguments; `--upstream PORT` runs one upstream in this process instead."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per cell")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="the upstream's fixed latency")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--only", default=",".join(TARGETS), help="targets to measure beside direct")
    parser.add_argument("--litellm-spec", default=LITELLM_SPEC, help="what pip installs for LiteLLM")
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream:
        import uvicorn

        uvicorn.run(
            upstream_app(args.latency_ms / 1000),
            host="127.0.0.1",
            port=args.upstream,
            log_level="warning",
            access_log=False,
        )
        return
    run(args)


if __name__ == "__main__":
    main()
