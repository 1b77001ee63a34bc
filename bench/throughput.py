"""Throughput of mixed base/adapter traffic at concurrency 16 vs one at a time vs all-base.

Serves a model with two LoRA adapters through `zantara serve` on a free port and sends the same
requests over HTTP three ways, each client sending its next request when its answer is back:

  serial     16 mixed requests (8 base, 4 + 4 on two adapters), one at a time
  mixed      the same 16 requests from 16 concurrent clients, R rounds
  all-base   16 base requests from 16 concurrent clients, R rounds

Beside it, in the same run and before the server starts, the static reference the engine is judged
against: PEFT's own `generate()` on the same model and prompts (ZANTARA's system prompt, which the
service adds, and the question), 16 rows at once with `adapter_names` vs one request at a time vs 16
base rows. It prints generated tokens per second and the ratios mixed/serial and mixed/all-base of
both, median of `--repeats` runs. The service prefills the shared system prompt once per adapter
and then takes it from its prefix cache; `generate()` prefills it for every row.

`--model llama-7m` (default) is a 6.8M-parameter Llama with the demo tokenizer and random weights and
two random r=16 adapters, the size the targets were set on; random weights rarely end early, so every
answer runs to about `--max-tokens`. `--model demo` serves the trained demo model (3.2M) with the demo
adapter and its negation. Run: `python bench/throughput.py` (about 4 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from safetensors.torch import load_file, save_file
from server import REPO, running_server

QUESTIONS = [
    "Berapa modal minimum untuk mendirikan PT PMA?",
    "KITAS investor itu butuh dokumen apa aja sih?",
    "Bagaimana cara membuat nasi goreng yang enak?",
    "Apa bedanya HGB dan hak pakai untuk orang asing?",
]
ORDER = ("mixed", "all-base", "serial", "all-base", "mixed")
"""The loads of one run, in turn: centred on the same moment, so a machine's drift skews no ratio."""
LLAMA_7M: dict[str, Any] = {
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "tie_word_embeddings": False,
}


@dataclass(frozen=True)
class Served:
    """What the benchmark serves: the base model's path and id, and two adapters `NAME@VERSION`."""

    env: dict[str, str]
    base_path: Path
    base_id: str
    adapters: tuple[str, str]
    adapter_paths: tuple[Path, Path]

    def mixed_models(self) -> list[str]:
        """8 base, 4 + 4 on the two adapters."""
        return [self.base_id] * 8 + [self.adapters[0]] * 4 + [self.adapters[1]] * 4


def prepare_demo(root: Path) -> Served:
    """The demo model (built if missing), its adapter, and a second one: the demo adapter with B negated."""
    from service.settings import Settings
    from training.demo.model import DEMO_ADAPTER
    from zantara.demo import build_demo_models

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
    env = {
        "ZANTARA_MODELS_DIR": str(settings.demo_base_path.parent),
        "ZANTARA_ADAPTERS_DIR": str(settings.resolved_adapters_dir),
    }
    return Served(
        env, settings.demo_base_path, "zantara-demo-base", (f"{name}@{version}", "other@v1"), (source, other)
    )


def prepare_llama_7m(root: Path) -> Served:
    """A random-weight 6.8M Llama with the demo tokenizer, and two random LoRA adapters (made once)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    from service.settings import Settings
    from training.demo.model import LORA

    base, adapters = root / "llama-7m", root / "llama-7m-adapters"
    paths = (adapters / "a1" / "v1", adapters / "a2" / "v1")
    if not (paths[1] / "adapter_config.json").is_file():
        demo = Settings(var_dir=root).demo_base_path
        if not (demo / "tokenizer.json").is_file():
            from training.demo.model import ensure_demo_base

            ensure_demo_base(demo)
        tokenizer = AutoTokenizer.from_pretrained(demo)
        demo_config = LlamaConfig.from_pretrained(demo)
        special = {k: getattr(demo_config, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), **special, **LLAMA_7M))
        model.generation_config = GenerationConfig(**special)
        model.save_pretrained(base)
        tokenizer.save_pretrained(base)
        for i, path in enumerate(paths):
            torch.manual_seed(1 + i)
            lora = LoraConfig(**LORA, init_lora_weights=False)
            get_peft_model(LlamaForCausalLM.from_pretrained(base), lora).save_pretrained(str(path))
    env = {"ZANTARA_BASE_MODEL": str(base), "ZANTARA_ADAPTERS_DIR": str(adapters)}
    return Served(env, base, str(base), ("a1@v1", "a2@v1"), paths)


def request_body(index: int, model: str, max_tokens: int) -> dict[str, object]:
    return {
        "model": model,
        "temperature": 0,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": QUESTIONS[index % len(QUESTIONS)]}],
    }


async def one(client: httpx.AsyncClient, body: dict[str, object]) -> int:
    response = await client.post("/v1/chat/completions", json=body)
    response.raise_for_status()
    return int(response.json()["usage"]["completion_tokens"])


async def serial(client: httpx.AsyncClient, models: list[str], max_tokens: int) -> tuple[int, float]:
    start, tokens = time.perf_counter(), 0
    for i, model in enumerate(models):
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


async def measure_served(url: str, served: Served, rounds: int, max_tokens: int) -> dict[str, float]:
    """Tokens/s of serial, mixed@16 and all-base@16 over HTTP.

    Measured in the order mixed, all-base, serial, all-base, mixed, each concurrent load for
    `rounds` rounds each time, so that a machine slowly getting faster or slower (common on a shared
    VM) weighs on the three figures alike instead of skewing the ratios."""
    limits = httpx.Limits(max_connections=64)
    mixed = served.mixed_models()
    totals = {name: [0, 0.0] for name in ("serial", "mixed", "all-base")}
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        await concurrent(client, mixed, 1, 8)  # warm-up
        for name in ORDER:
            if name == "serial":
                tokens, seconds = await serial(client, mixed, max_tokens)
            else:
                models = mixed if name == "mixed" else [served.base_id] * 16
                tokens, seconds = await concurrent(client, models, rounds, max_tokens)
            totals[name][0] += tokens
            totals[name][1] += seconds
    return {name: tokens / seconds for name, (tokens, seconds) in totals.items()}


def measure_static(served: Served, max_tokens: int, repeats: int) -> list[dict[str, float]]:
    """Tokens/s of PEFT `generate()`: 16 rows one at a time, 16 mixed rows, 16 base rows (1 thread)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)  # what the served engine uses on this 2-core machine
    tokenizer = AutoTokenizer.from_pretrained(served.base_path, padding_side="left")
    model: Any = AutoModelForCausalLM.from_pretrained(served.base_path)
    model = PeftModel.from_pretrained(model, served.adapter_paths[0], adapter_name="a")
    model.load_adapter(served.adapter_paths[1], adapter_name="b")
    model.eval()
    names = ["__base__"] * 8 + ["a"] * 4 + ["b"] * 4
    from knowledge.prompts import ZANTARA_SYSTEM_PROMPT

    prompts = [
        tokenizer.apply_chat_template(
            [
                {"role": "system", "content": ZANTARA_SYSTEM_PROMPT},
                {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]},
            ],
            tokenize=False,
            add_generation_prompt=True,
        )
        for i in range(16)
    ]

    def generate(rows: list[int], adapter_names: list[str]) -> int:
        inputs = tokenizer(
            [prompts[i] for i in rows], return_tensors="pt", padding=True, add_special_tokens=False
        )
        out = model.generate(
            **inputs, adapter_names=adapter_names, max_new_tokens=max_tokens, do_sample=False
        )
        new = out[:, inputs["input_ids"].shape[1] :]
        return int((new != tokenizer.pad_token_id).sum())

    def timed(batches: list[tuple[list[int], list[str]]]) -> tuple[int, float]:
        start, tokens = time.perf_counter(), 0
        with torch.no_grad():
            for rows, adapter_names in batches:
                tokens += generate(rows, adapter_names)
        return tokens, time.perf_counter() - start

    loads = {
        "serial": [([i], [names[i]]) for i in range(16)],
        "mixed": [(list(range(16)), names)],
        "all-base": [(list(range(16)), ["__base__"] * 16)],
    }
    timed([([0], ["__base__"])])  # warm-up
    runs = []
    for _ in range(repeats):
        totals = {name: [0, 0.0] for name in loads}
        for name in ORDER:
            tokens, seconds = timed(loads[name])
            totals[name][0] += tokens
            totals[name][1] += seconds
        runs.append({name: tokens / seconds for name, (tokens, seconds) in totals.items()})
    return runs


def report(title: str, runs: list[dict[str, float]]) -> None:
    print(title)
    for i, run in enumerate(runs, 1):
        speeds = "  ".join(f"{k} {v:7.1f} tok/s" for k, v in run.items())
        print(
            f"  run {i}: {speeds}  mixed/serial {run['mixed'] / run['serial']:.2f}x  "
            f"mixed/all-base {run['mixed'] / run['all-base']:.2f}x"
        )
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    vs_serial = statistics.median(r["mixed"] / r["serial"] for r in runs)
    vs_base = statistics.median(r["mixed"] / r["all-base"] for r in runs)
    print(
        f"  median: serial {median['serial']:.1f} tok/s, mixed@16 {median['mixed']:.1f} tok/s, "
        f"all-base@16 {median['all-base']:.1f} tok/s"
    )
    print(f"  mixed@16 / one-at-a-time = {vs_serial:.2f}x (target >= 5x)")
    print(f"  mixed@16 / all-base@16   = {vs_base:.2f}x (target >= 0.75x)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=("llama-7m", "demo"), default="llama-7m")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="requests per concurrent client")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--var-dir", type=Path, default=REPO / "var" / "bench")
    args = parser.parse_args()
    served = prepare_llama_7m(args.var_dir) if args.model == "llama-7m" else prepare_demo(args.var_dir)
    static = measure_static(served, args.max_tokens, args.repeats)
    db_dir = Path(tempfile.mkdtemp(prefix="zantara-bench-"))
    try:
        with running_server({**served.env, "ZANTARA_VAR_DIR": str(db_dir)}) as server:
            runs = [
                asyncio.run(measure_served(server.url, served, args.rounds, args.max_tokens))
                for _ in range(args.repeats)
            ]
    finally:
        shutil.rmtree(db_dir, ignore_errors=True)
    report(f"static PEFT generate() on {args.model} (reference)", static)
    report(f"zantara serve over HTTP on {args.model}", runs)


if __name__ == "__main__":
    main()
