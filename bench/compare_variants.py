"""Base vs tuned on a dataset split, over HTTP: greedy answers scored with chrF against the references.

Sends every question of `SPLIT.jsonl` (its system prompt and user turn) to a running service twice,
pinned to the base model and to the adapter, and prints the corpus chrF (sacrebleu) of each, the
difference, and one example. Run against `zantara serve`:

    python bench/compare_variants.py --dataset var/ds --adapter zantara@v1 [--split test] [--limit 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import httpx
import sacrebleu


async def answers(
    client: httpx.AsyncClient, model: str, prompts: list[list[dict[str, str]]], max_tokens: int
) -> list[str]:
    """Greedy answers of `model` to every prompt (sent concurrently; the engine batches them)."""

    async def one(messages: list[dict[str, str]]) -> str:
        body = {"model": model, "messages": messages, "temperature": 0, "max_tokens": max_tokens}
        response = await client.post("/v1/chat/completions", json=body)
        response.raise_for_status()
        return str(response.json()["choices"][0]["message"]["content"])

    return list(await asyncio.gather(*(one(m) for m in prompts)))


async def compare(args: argparse.Namespace) -> None:
    records = [json.loads(line) for line in (args.dataset / f"{args.split}.jsonl").read_text().splitlines()]
    records = records[: args.limit]
    prompts = [[m for m in r["messages"] if m["role"] != "assistant"] for r in records]
    references = [next(m["content"] for m in r["messages"] if m["role"] == "assistant") for r in records]
    async with httpx.AsyncClient(base_url=args.url, timeout=600) as client:
        base_model = (await client.get("/v1/models")).json()["data"][1]["id"]
        scored = {}
        for name, model in (("base", base_model), ("tuned", args.adapter)):
            scored[name] = await answers(client, model, prompts, args.max_tokens)
    chrf = {name: sacrebleu.corpus_chrf(out, [references]).score for name, out in scored.items()}
    print(f"{len(records)} questions from {args.dataset / args.split}.jsonl, max_tokens {args.max_tokens}")
    print(
        f"chrF base ({base_model}) {chrf['base']:.1f}, tuned ({args.adapter}) {chrf['tuned']:.1f}, "
        f"difference {chrf['tuned'] - chrf['base']:+.1f}"
    )
    print(f"question: {prompts[0][-1]['content']}")
    print(f"base:     {scored['base'][0]}")
    print(f"tuned:    {scored['tuned'][0]}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", type=Path, required=True, help="a `zantara dataset build` folder")
    parser.add_argument("--adapter", required=True, help="NAME@VERSION of the tuned variant")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    asyncio.run(compare(parser.parse_args()))


if __name__ == "__main__":
    main()
