"""Throughput of mixed base/adapter traffic at concurrency 16 vs one at a time vs all-base.

Starts `zantara serve` (demo model, the demo adapter and a second adapter) on a free port, then sends
the same requests over HTTP three ways, each client sending its next request when its answer is back:

  serial     16 mixed requests (8 base, 4 + 4 on two adapters), one at a time
  mixed      the same 16 requests from 16 concurrent clients, R rounds
  all-base   16 base requests from 16 concurrent clients, R rounds

and prints generated tokens per second and the ratios mixed/serial and mixed/all-base, median of
`--repeats` runs. Run: `python bench/throughput.py` (about 2-3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from safetensors.torch import load_file, save_file
from server import REPO, running_server

QUESTIONS = [
    "Berapa modal minimum untuk mendirikan PT PMA?",
    "KITAS investor itu butuh dokumen apa aja sih?",
    "Bagaimana cara membuat nasi goreng yang enak?",
    "Apa bedanya HGB dan hak pakai untuk orang asing?",
]


def prepare_models(root: Path) -> tuple[Path, Path]:
    """Build (or reuse) the demo model and make a second adapter: the demo one with LoRA B negated."""
    from service.app import DEMO_ADAPTER, build_demo_models
    from service.settings import Settings

    settings = Settings(var_dir=root)
    build_demo_models(settings)
    name, version = DEMO_ADAPTER
    source = settings.resolved_adapters_dir / name / version
    other = settings.resolved_adapters_dir / "other" / "v1"
    if not other.exists():
        shutil.copytree(source, other)
        (other / "zantara.json").unlink(missing_ok=True)
        weights = load_file(str(source / "adapter_model.safetensors"))
        save_file(
            {k: -v if "lora_B" in k else v for k, v in weights.items()},
            str(other / "adapter_model.safetensors"),
        )
    return settings.models_dir or root / "models", settings.resolved_adapters_dir


def request_body(index: int, model: str, max_tokens: int) -> dict[str, object]:
    return {
        "model": model,
        "temperature": 0,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": QUESTIONS[index % len(QUESTIONS)]}],
    }


def mixed_models() -> list[str]:
    return ["zantara-demo-base"] * 8 + ["zantara-demo@v1"] * 4 + ["other@v1"] * 4


async def one(client: httpx.AsyncClient, body: dict[str, object]) -> int:
    response = await client.post("/v1/chat/completions", json=body)
    response.raise_for_status()
    return int(response.json()["usage"]["completion_tokens"])


async def serial(client: httpx.AsyncClient, max_tokens: int) -> tuple[int, float]:
    start, tokens = time.perf_counter(), 0
    for i, model in enumerate(mixed_models()):
        tokens += await one(client, request_body(i, model, max_tokens))
    return tokens, time.perf_counter() - start


async def concurrent(
    client: httpx.AsyncClient, models: list[str], rounds: int, max_tokens: int
) -> tuple[int, float]:
    async def worker(i: int, model: str) -> int:
        return sum([await one(client, request_body(i + r, model, max_tokens)) for r in range(rounds)])

    start = time.perf_counter()
    tokens = await asyncio.gather(*(worker(i, m) for i, m in enumerate(models)))
    return sum(tokens), time.perf_counter() - start


async def measure(url: str, rounds: int, max_tokens: int) -> dict[str, float]:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        await concurrent(client, mixed_models(), 1, 8)  # warm-up
        results = {}
        for name, run in (
            ("serial", serial(client, max_tokens)),
            ("mixed", concurrent(client, mixed_models(), rounds, max_tokens)),
            ("all-base", concurrent(client, ["zantara-demo-base"] * 16, rounds, max_tokens)),
        ):
            tokens, seconds = await run
            results[name] = tokens / seconds
        return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="requests per concurrent client")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--var-dir", type=Path, default=REPO / "var" / "bench")
    args = parser.parse_args()
    models_dir, adapters_dir = prepare_models(args.var_dir)
    db_dir = Path(tempfile.mkdtemp(prefix="zantara-bench-"))
    env = {
        "ZANTARA_VAR_DIR": str(db_dir),
        "ZANTARA_MODELS_DIR": str(models_dir),
        "ZANTARA_ADAPTERS_DIR": str(adapters_dir),
    }
    try:
        with running_server(env) as server:
            runs = [
                asyncio.run(measure(server.url, args.rounds, args.max_tokens)) for _ in range(args.repeats)
            ]
    finally:
        shutil.rmtree(db_dir, ignore_errors=True)
    for i, run in enumerate(runs, 1):
        speeds = "  ".join(f"{k} {v:7.1f} tok/s" for k, v in run.items())
        print(
            f"run {i}: {speeds}  mixed/serial {run['mixed'] / run['serial']:.2f}x  "
            f"mixed/all-base {run['mixed'] / run['all-base']:.2f}x"
        )
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    vs_serial = statistics.median(r["mixed"] / r["serial"] for r in runs)
    vs_base = statistics.median(r["mixed"] / r["all-base"] for r in runs)
    print(
        f"median: serial {median['serial']:.1f} tok/s, mixed@16 {median['mixed']:.1f} tok/s, "
        f"all-base@16 {median['all-base']:.1f} tok/s"
    )
    print(f"mixed@16 / one-at-a-time = {vs_serial:.2f}x (target >= 5x)")
    print(f"mixed@16 / all-base@16   = {vs_base:.2f}x (target >= 0.75x)")


if __name__ == "__main__":
    main()
