"""One decode step through the hf engine's `LoraRows`, all-base against mixed batches: the mixed /
all-base ratio as the forward pass alone allows it, with the adapter rows' deltas added by torch's
`addmm_` and by `row_delta`'s compiled kernel side by side.

`bench/engines.py` measures the same ratio through the engine (scheduling, sampling, streaming
included), where a shared machine's bursts move whole slices of the run. Here the loads take turns
every few steps in one process, in a new random order every round, and the ratio printed is the
median over rounds of each round's own ratio (the milliseconds are medians too): a burst of someone
else's work moves one round's ratio, not the median. A second table gives the LoRA groups' products
alone (timed around each `LoraRows` product inside the step): what a mixed step adds to them over
all-base, the median of the rounds' own differences, where the step's other work adds no noise.

For Llama models of a few sizes (random weights, 4 layers; the demo model is the first) with two
random adapters of the demo adapter's shape (r=16 on all seven projections), on 1 torch thread,
batch 16 over a 120-token KV cache: all rows base, 3 rows on one adapter (about 20%), 8 rows on one
adapter (50%), and 4 + 4 rows on two adapters. Run: `python bench/lora_step.py` (about a minute).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

import torch
from peft_step import CONTEXT, SIZES, two_adapter_model
from rich.progress import track
from server import REPO  # noqa: F401 - puts the repository on sys.path

from service.engines.lora_rows import LoraRows

ROWS = 16
LOADS: dict[str, list[tuple[str, int, int]]] = {
    "all-base": [],
    "mixed 20%": [("a1", 13, 16)],
    "mixed 50%": [("a1", 8, 16)],
    "two adapters": [("a1", 8, 12), ("a2", 12, 16)],
}


RUNS = [("all-base", False)] + [(name, compiled) for name in list(LOADS)[1:] for compiled in (False, True)]
"""Every load with each delta path (compiled kernel or not); all-base has no delta."""


Times = dict[tuple[str, bool], list[float]]


def round_steps_ms(model: Any, rounds: int, steps: int) -> tuple[Times, Times]:
    """Per run (load and delta path), each round's milliseconds per decode step, and of them the
    LoRA groups' products: every round runs each of them for `steps` steps, in a fresh random order,
    so that a burst of someone else's work falls on one round of a few runs, not on a whole load."""
    rows = LoraRows.of(model)
    rows.attach()
    in_products = [0.0]
    product = rows._product

    def timed_product(group: int, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        started = time.perf_counter()
        try:
            return product(group, x)
        finally:
            in_products[0] += time.perf_counter() - started

    rows._product = timed_product  # type: ignore[method-assign]
    times: Times = {run: [] for run in RUNS}
    products: Times = {run: [] for run in RUNS}
    order = list(RUNS)
    with torch.inference_mode():
        ids = torch.randint(0, 4000, (ROWS, CONTEXT))
        cache = model(input_ids=ids, use_cache=True).past_key_values
        token = torch.randint(0, 4000, (ROWS, 1))
        positions = torch.full((ROWS, 1), CONTEXT)
        for _ in track(range(rounds), description="rounds", transient=True):
            random.shuffle(order)
            for name, compiled in order:
                rows.compiled = compiled
                rows.set_rows(LOADS[name])
                in_products[0] = 0.0
                started = time.perf_counter()
                for _ in range(steps):
                    model(
                        input_ids=token,
                        position_ids=positions,
                        cache=cache,
                        use_cache=True,
                        logits_to_keep=1,
                    )
                    cache.crop(-1)
                times[name, compiled].append((time.perf_counter() - started) / steps * 1000)
                products[name, compiled].append(in_products[0] / steps * 1000)
    rows.detach()
    return times, products


def table_head(unit: str) -> list[str]:
    """A Markdown table's header and rule: all-base, then every mixed run's ms and `unit`."""
    runs = " | ".join(f"{name}, {'kernel' if on else 'addmm_'}: ms ({unit})" for name, on in RUNS[1:])
    return [f"| hidden | all-base ms | {runs} |", "|---" * (1 + len(RUNS)) + "|"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--steps", type=int, default=5, help="decode steps per run and round")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    random.seed(0)
    steps_table, products_table = table_head("ratio"), table_head("+ms")
    for hidden, intermediate in SIZES:
        model = two_adapter_model(hidden, intermediate)
        model.base_model.disable_adapter_layers()
        times, products = round_steps_ms(model, args.rounds, args.steps)
        base, base_products = times["all-base", False], products["all-base", False]
        step_cells = [
            f"{statistics.median(times[run]):.2f} "
            f"({statistics.median(b / t for b, t in zip(base, times[run], strict=True)):.3f})"
            for run in RUNS[1:]
        ]
        product_cells = [
            f"{statistics.median(products[run]):.3f} "
            f"(+{statistics.median(t - b for b, t in zip(base_products, products[run], strict=True)):.3f})"
            for run in RUNS[1:]
        ]
        steps_table.append(f"| {hidden} | {statistics.median(base):.2f} | " + " | ".join(step_cells) + " |")
        products_table.append(
            f"| {hidden} | {statistics.median(base_products):.3f} | " + " | ".join(product_cells) + " |"
        )
    print("Decode step: median ms (median of the rounds' mixed / all-base ratios)")
    print("\n".join(steps_table))
    print("\nLoRA groups' products in the step: median ms (median of the rounds' mixed - all-base ms)")
    print("\n".join(products_table))


if __name__ == "__main__":
    main()
