"""Our hf engine against vLLM's CPU build on the same demo model, the same machine and the same requests.

Each engine runs in process in its own worker process, through the service's engine interface
(`create_engine`, `prepare`, `stream`, as a chat request goes): `hf` (transformers + PEFT, this venv)
and `vllm` (vLLM's CPU build from `.venv-vllm`, `make vllm`), both fp32, both with the demo adapter
loaded. A closed loop of `--concurrency` (16) clients sends greedy chat requests (ZANTARA's system
prompt and one of four questions, `--max-tokens`) in three loads:

  all-base    every request on the base model
  mixed 20%   every fifth request on the adapter, spread evenly
  mixed 50%   every other request on the adapter

measured in `--cycles` cycles of m20, m50, base, base, m50, m20 (`--requests` each time), so that a
machine slowly getting faster or slower weighs on all three alike, and a burst of someone else's work
on a shared machine falls on one short slice. It prints generated tokens/s over all cycles, the ratio
mixed / all-base, the median of the cycles' own ratios with their lowest and highest (on a shared
machine the median is the figure a burst of someone else's work moves least) and the time to first
token (p50, p99) of each load and engine, as a Markdown table.

Every answer runs to `--max-tokens`: the engines serve a copy of the demo model whose end-of-sequence
token is its padding token, which it never generates (as `bench/throughput.py`'s random-weight model
rarely ends early). With the demo's own end of turn (`--natural-eos`) the base's answers end after
about 15 tokens and the adapter's run to 48, and the ratio would measure answer lengths as much as
the engine.

`--control` sends the mixed slices to the base model too: the ratios it prints are the machine's
noise alone (on the 2-core machine of bench/RESULTS.md, 0.99-1.06 from run to run), the yardstick for
a single run's ratio. `--runs N` runs each engine N times, a fresh worker each, the engines taking
turns: the table pools the runs, and each mixed load gets its runs' ratios with their mean and a 95%
confidence interval (run it with and without `--control`).

Run: `python bench/engines.py` (about 5 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
QUESTIONS = [
    "Berapa modal minimum untuk mendirikan PT PMA?",
    "KITAS investor itu butuh dokumen apa aja sih?",
    "Bagaimana cara membuat nasi goreng yang enak?",
    "Apa bedanya HGB dan hak pakai untuk orang asing?",
]
SHARES = {"all-base": 0.0, "mixed 20%": 0.2, "mixed 50%": 0.5}
"""Adapter share of each load."""
ORDER = ("mixed 20%", "mixed 50%", "all-base", "all-base", "mixed 50%", "mixed 20%")
"""The loads of one run, in turn: a palindrome, so every load is centred on the same moment."""
ENGINE_SETTINGS = {
    "hf": {"ZANTARA_ENGINE": "hf"},
    "vllm": {
        "ZANTARA_ENGINE": "vllm",
        "ZANTARA_VLLM_DTYPE": "float32",
        "ZANTARA_VLLM_CPU_KVCACHE_SPACE_GIB": "1",
        "ZANTARA_VLLM_MAX_LORA_RANK": "16",
    },
}


def on_adapter(index: int, share: float) -> bool:
    """Whether request `index` of a load goes to the adapter: `share` of them, spread evenly."""
    return int((index + 1) * share) > int(index * share)


async def measure(
    engine_name: str,
    base: str,
    adapter: tuple[str, str, str],
    requests: int,
    cycles: int,
    concurrency: int,
    max_tokens: int,
    control: bool = False,
) -> dict[str, Any]:
    """Start the engine, load the adapter, run the loads of ORDER; per load the generated tokens, the
    seconds and every request's time to first token. `control`: every slice on the base model, the
    mixed ones included."""
    sys.path.insert(0, str(REPO))  # this checkout, whichever venv runs the worker
    from knowledge.prompts import ZANTARA_SYSTEM_PROMPT
    from service.engines import create_engine
    from service.engines.base import AdapterInfo, SamplingParams
    from service.settings import Settings

    started = time.perf_counter()
    engine = create_engine(Settings(), base)
    await engine.start()
    info = AdapterInfo(*adapter)
    await engine.load_adapter(info)
    start_s = time.perf_counter() - started
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0)

    async def one(index: int, key: str | None) -> tuple[int, float]:
        question = QUESTIONS[index % len(QUESTIONS)]
        messages = [
            {"role": "system", "content": ZANTARA_SYSTEM_PROMPT},
            {"role": "user", "content": question},
        ]
        sent = time.perf_counter()
        prompt = engine.prepare(messages, sampling)
        first, tokens = 0.0, 0
        async for delta in engine.stream(prompt, sampling, key):
            if delta.text and not first:
                first = time.perf_counter() - sent
            tokens = max(tokens, delta.completion_tokens)
        return tokens, first

    async def load(share: float, count: int) -> tuple[int, float, list[float]]:
        todo = iter(range(count))
        done: list[tuple[int, float]] = []

        async def client() -> None:
            for index in todo:
                done.append(await one(index, info.key if on_adapter(index, share) else None))

        begun = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        seconds = time.perf_counter() - begun
        return sum(tokens for tokens, _ in done), seconds, [first for _, first in done]

    await load(0.5, concurrency)  # warm-up: both variants, a full batch
    results: dict[str, dict[str, Any]] = {
        name: {"tokens": 0, "seconds": 0.0, "ttft": [], "cycles": []} for name in SHARES
    }
    for _ in range(cycles):
        cycle: dict[str, list[float]] = {name: [0, 0.0] for name in SHARES}
        for name in ORDER:
            tokens, seconds, ttft = await load(0.0 if control else SHARES[name], requests)
            results[name]["tokens"] += tokens
            results[name]["seconds"] += seconds
            results[name]["ttft"] += ttft
            cycle[name][0] += tokens
            cycle[name][1] += seconds
        for name, (made, took) in cycle.items():
            results[name]["cycles"].append(made / took)
    await engine.close()
    return {"engine": engine_name, "start_s": start_s, "loads": results}


def run_worker(engine_name: str, args: argparse.Namespace, base: Path, adapter: tuple[str, str, str]) -> dict:
    """One engine measured in its own process (`.venv-vllm`'s Python for vllm); its JSON result."""
    python = str(VLLM_PYTHON) if engine_name == "vllm" else sys.executable
    if engine_name == "vllm" and not VLLM_PYTHON.is_file():
        sys.exit(f"{VLLM_PYTHON} is missing: run `make vllm` first")
    with tempfile.TemporaryDirectory(prefix="zantara-bench-engines-") as var_dir:
        out = Path(var_dir) / "result.json"
        command = [python, __file__, "--worker", engine_name, "--out", str(out), "--base", str(base)]
        command += ["--adapter", *adapter, "--requests", str(args.requests), "--cycles", str(args.cycles)]
        command += ["--concurrency", str(args.concurrency), "--max-tokens", str(args.max_tokens)]
        command += ["--control"] if args.control else []
        env = {**os.environ, **ENGINE_SETTINGS[engine_name], "ZANTARA_VAR_DIR": var_dir}
        env.setdefault("ZANTARA_LOG_LEVEL", "warning")
        load = os.getloadavg()[0]
        subprocess.run(command, env=env, cwd=REPO, check=True)
        result: dict = json.loads(out.read_text(encoding="utf-8"))
    result["load_before"] = load
    return result


def without_eos(base: Path, target: Path) -> Path:
    """A copy of the model at `base` whose end-of-sequence token is its padding token (made once)."""
    if not (target / "config.json").is_file():
        shutil.copytree(base, target, dirs_exist_ok=True)
        config = json.loads((base / "config.json").read_text(encoding="utf-8"))
        pad = int(config["pad_token_id"])
        for name in ("config.json", "generation_config.json"):
            values = json.loads((base / name).read_text(encoding="utf-8"))
            values["eos_token_id"] = pad
            (target / name).write_text(json.dumps(values, indent=2), encoding="utf-8")
        tokenizer = json.loads((base / "tokenizer_config.json").read_text(encoding="utf-8"))
        tokenizer["eos_token"] = tokenizer["pad_token"]
        (target / "tokenizer_config.json").write_text(json.dumps(tokenizer, indent=2), encoding="utf-8")
    return target


def percentile(values: list[float], share: float) -> float:
    """The `share` quantile (nearest rank) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def cycle_ratios(loads: dict[str, Any], name: str) -> list[float]:
    """Each cycle's tokens/s on load `name` over its tokens/s on all-base."""
    return [r / b for r, b in zip(loads[name]["cycles"], loads["all-base"]["cycles"], strict=True)]


def pooled_ratio(loads: dict[str, Any], name: str) -> float:
    """Load `name`'s tokens/s over all-base's, over all cycles."""
    base = loads["all-base"]
    return (loads[name]["tokens"] / loads[name]["seconds"]) / (base["tokens"] / base["seconds"])


def merged(runs: list[dict]) -> dict:
    """One engine's runs as one: tokens and seconds summed, times to first token and cycles pooled."""
    loads: dict[str, dict[str, Any]] = {}
    for name in SHARES:
        parts = [run["loads"][name] for run in runs]
        loads[name] = {
            "tokens": sum(part["tokens"] for part in parts),
            "seconds": sum(part["seconds"] for part in parts),
            "ttft": [ttft for part in parts for ttft in part["ttft"]],
            "cycles": [cycle for part in parts for cycle in part["cycles"]],
        }
    start_s = statistics.mean(run["start_s"] for run in runs)
    return {
        "engine": runs[0]["engine"],
        "start_s": start_s,
        "load_before": runs[0]["load_before"],
        "loads": loads,
    }


def run_spread(runs: list[dict], name: str) -> str:
    """Each run's pooled ratio on load `name`, their mean and its 95% confidence interval (Student's t)."""
    from scipy import stats

    ratios = [pooled_ratio(run["loads"], name) for run in runs]
    mean = statistics.mean(ratios)
    half = stats.t.ppf(0.975, len(ratios) - 1) * statistics.stdev(ratios) / len(ratios) ** 0.5
    each = ", ".join(f"{ratio:.2f}" for ratio in ratios)
    return f"{each}: mean {mean:.3f}, 95% CI {mean - half:.3f}-{mean + half:.3f}"


def table(results: list[dict]) -> str:
    """The Markdown table of every engine and load."""
    lines = [
        "| engine | load | tokens | tokens/s | mixed / all-base | per cycle: median (range) "
        "| TTFT p50 ms | TTFT p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        loads = result["loads"]
        for name in SHARES:
            got = loads[name]
            rate = got["tokens"] / got["seconds"]
            ratio = spread = ""
            if name != "all-base":
                ratio = f"{pooled_ratio(loads, name):.2f}"
                per_cycle = cycle_ratios(loads, name)
                spread = f"{statistics.median(per_cycle):.2f} ({min(per_cycle):.2f}-{max(per_cycle):.2f})"
            p50, p99 = (percentile(got["ttft"], q) * 1000 for q in (0.5, 0.99))
            cells = [
                result["engine"],
                name,
                str(got["tokens"]),
                f"{rate:.0f}",
                ratio,
                spread,
                f"{p50:.0f}",
                f"{p99:.0f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", default="hf,vllm", help="comma-separated: hf, vllm")
    parser.add_argument("--requests", type=int, default=32, help="requests per load slice")
    parser.add_argument("--cycles", type=int, default=8, help="cycles of the six slices")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--var-dir", type=Path, default=REPO / "var" / "bench")
    parser.add_argument(
        "--natural-eos", action="store_true", help="keep the demo's end of turn: answers end early"
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="the mixed slices on the base model too: what the ratios read when nothing differs",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="runs of each engine (a fresh worker each, the engines taking turns): the table pools them, "
        "and each mixed load's per-run ratios get a mean and a 95%% confidence interval",
    )
    parser.add_argument("--worker", choices=tuple(ENGINE_SETTINGS), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--adapter", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        adapter = tuple(args.adapter)
        loads = (args.requests, args.cycles, args.concurrency, args.max_tokens)
        result = asyncio.run(measure(args.worker, args.base, adapter, *loads, control=args.control))
        args.out.write_text(json.dumps(result), encoding="utf-8")
        return

    sys.path.insert(0, str(REPO))
    from service.settings import Settings
    from training.demo.model import DEMO_ADAPTER
    from zantara.demo import build_demo_models

    settings = Settings(var_dir=args.var_dir)
    build_demo_models(settings)
    name, version = DEMO_ADAPTER
    adapter = (name, version, str(settings.resolved_adapters_dir / name / version))
    base = settings.demo_base_path
    if not args.natural_eos:
        base = without_eos(base, args.var_dir / "demo-base-without-eos")
    engines = args.engines.split(",")
    runs: dict[str, list[dict]] = {engine: [] for engine in engines}
    for _ in range(args.runs):
        for engine in engines:
            runs[engine].append(run_worker(engine, args, base, adapter))
    results = [merged(runs[engine]) for engine in engines]
    length = "answers may end early" if args.natural_eos else "every answer runs to it"
    print(
        f"\ndemo model, fp32, concurrency {args.concurrency}, {args.runs} run(s) x {args.cycles} cycles "
        f"x 2 x {args.requests} requests per load, "
        f"max_tokens {args.max_tokens} ({length}), greedy"
        + (", control: the mixed slices on the base model too" if args.control else "")
    )
    for result in results:
        started, load = result["start_s"], result["load_before"]
        print(f"  {result['engine']}: started in {started:.1f} s, load average before {load:.2f} (first run)")
    print(table(results))
    for result in results:
        loads = result["loads"]
        mixed = [n for n in SHARES if n != "all-base"]
        worst = min(pooled_ratio(loads, n) for n in mixed)
        worst_median = min(statistics.median(cycle_ratios(loads, n)) for n in mixed)
        print(
            f"  {result['engine']}: lowest mixed / all-base {worst:.2f} over all cycles, "
            f"{worst_median:.2f} as the median cycle (goal for hf >= 0.95)"
        )
        if args.runs > 1:
            for name in mixed:
                print(f"    {name} per run: {run_spread(runs[result['engine']], name)}")


if __name__ == "__main__":
    main()
