"""One decode step through the hf engine's `LoraRows`, all-base against mixed batches: the mixed /
all-base ratio as the forward pass alone allows it.

`bench/engines.py` measures the same ratio through the engine (scheduling, sampling, streaming
included), where a shared machine's bursts move whole slices of the run. Here the loads take turns
every few steps in one process, and each keeps its fastest round, so what is left is the step's own
cost. For Llama models of a few sizes (random weights, 4 layers; the demo model is the first) with
two random adapters of the demo adapter's shape (r=16 on all seven projections), on 1 torch thread,
batch 16 over a 120-token KV cache: all rows base, 3 rows on one adapter (about 20%), 8 rows on one
adapter (50%), and 4 + 4 rows on two adapters. Run: `python bench/lora_step.py` (about a minute).
"""

from __future__ import annotations

import argparse
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


def fastest_steps_ms(model: Any, rounds: int, steps: int) -> dict[str, float]:
    """Per load, the fastest round's milliseconds per decode step, the loads taking turns."""
    rows = LoraRows.of(model)
    rows.attach()
    best = dict.fromkeys(LOADS, float("inf"))
    with torch.inference_mode():
        ids = torch.randint(0, 4000, (ROWS, CONTEXT))
        cache = model(input_ids=ids, use_cache=True).past_key_values
        token = torch.randint(0, 4000, (ROWS, 1))
        positions = torch.full((ROWS, 1), CONTEXT)
        for _ in track(range(rounds), description="rounds", transient=True):
            for name, slices in LOADS.items():
                rows.set_rows(slices)
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
                best[name] = min(best[name], (time.perf_counter() - started) / steps * 1000)
    rows.detach()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--steps", type=int, default=10, help="decode steps per load and round")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print("| hidden | all-base ms | " + " | ".join(f"{name} ms (ratio)" for name in list(LOADS)[1:]) + " |")
    print("|---" * len(LOADS) + "|---|")
    for hidden, intermediate in SIZES:
        model = two_adapter_model(hidden, intermediate)
        model.base_model.disable_adapter_layers()
        best = fastest_steps_ms(model, args.rounds, args.steps)
        base = best["all-base"]
        cells = [f"{best[name]:.2f} ({base / best[name]:.2f})" for name in list(LOADS)[1:]]
        print(f"| {hidden} | {base:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
