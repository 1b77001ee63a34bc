"""Time to first token with the engine's prefix cache on and off, side by side in one run.

Serves the model of `bench/throughput.py` twice: once with the prefix cache at its default size and
once with `ZANTARA_PREFIX_CACHE_TOKENS=0`. Each time it sends, over HTTP, streaming chat requests
for 8 tokens, mixed over the base and the two adapters. The service adds ZANTARA's system prompt, so
every prompt starts with the same ~110 tokens.

  one at a time   16 requests, each sent when the previous one is answered
  burst of 16     16 requests sent at once, `--bursts` times

Time to first token is from sending the request to the first chunk carrying text. The script prints
the medians, the ratio off/on, and the share of prompt tokens the service reports as cached
(`usage.prompt_tokens_details.cached_tokens`). Run: `python bench/prefix_cache.py` (about 1 minute
on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from server import REPO, running_server
from throughput import QUESTIONS, Served, prepare_demo, prepare_llama_7m


async def first_token(client: httpx.AsyncClient, model: str, question: str) -> tuple[float, int, int]:
    """Seconds to the first text chunk of one streamed answer, and its prompt and cached tokens."""
    body = {
        "model": model,
        "temperature": 0,
        "max_tokens": 8,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": question}],
    }
    start, ttft, usage = time.perf_counter(), None, None
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))
            if ttft is None and any(c["delta"].get("content") for c in chunk["choices"]):
                ttft = time.perf_counter() - start
            usage = chunk.get("usage") or usage
    assert ttft is not None and usage is not None
    return ttft, usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"]


async def measure(url: str, served: Served, bursts: int) -> dict[str, list[tuple[float, int, int]]]:
    """Time to first token (and prompt/cached tokens) of every request, one at a time and in bursts."""
    models = served.mixed_models()
    jobs = [(models[i], QUESTIONS[i % len(QUESTIONS)]) for i in range(16)]
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        await first_token(client, served.base_id, "Halo")  # warm-up
        alone = [await first_token(client, model, question) for model, question in jobs]
        burst = []
        for _ in range(bursts):
            burst += await asyncio.gather(*(first_token(client, m, q) for m, q in jobs))
    return {"one at a time": alone, "burst of 16": burst}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=("llama-7m", "demo"), default="llama-7m")
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--var-dir", type=Path, default=REPO / "var" / "bench")
    args = parser.parse_args()
    served = prepare_llama_7m(args.var_dir) if args.model == "llama-7m" else prepare_demo(args.var_dir)
    results = {}
    for label, size in (("cache on", None), ("cache off", "0")):
        db_dir = Path(tempfile.mkdtemp(prefix="zantara-bench-"))
        env = {**served.env, "ZANTARA_VAR_DIR": str(db_dir)}
        if size is not None:
            env["ZANTARA_PREFIX_CACHE_TOKENS"] = size
        try:
            with running_server(env) as server:
                results[label] = asyncio.run(measure(server.url, served, args.bursts))
        finally:
            shutil.rmtree(db_dir, ignore_errors=True)
    print(f"time to first token on {args.model}, 8-token streamed answers, median in ms")
    for load in results["cache on"]:
        on, off = (statistics.median(t for t, _, _ in results[label][load]) for label in results)
        rows = results["cache on"][load]
        cached = sum(c for _, _, c in rows) / sum(p for _, p, _ in rows)
        print(
            f"  {load:14} cache on {on * 1000:7.1f}  cache off {off * 1000:7.1f}  "
            f"off/on {off / on:.2f}x  prompt tokens cached (on) {cached:.0%}"
        )


if __name__ == "__main__":
    main()
