"""One decode step of the transformers + PEFT model, without the server: where the mixed-batch cost is.

For Llama models of a few sizes (random weights, two random LoRA adapters of the demo adapter's shape,
r=16 on all seven projections) it times one decode step over a 120-token KV cache, on 1 torch thread:
batch 1 on an adapter, batch 1 base, batch 16 base (adapter layers off) and batch 16 mixed
(8 base, 4 + 4 on the two adapters through PEFT's `adapter_names`), and prints the ratios the
throughput targets are about, as the forward pass alone allows them. Run: `python bench/peft_step.py`
(about a minute).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from server import REPO  # noqa: F401 - puts the repository on sys.path
from transformers import LlamaConfig, LlamaForCausalLM

from training.demo.model import LORA

SIZES = ((192, 512), (256, 688), (384, 1024))  # (hidden, intermediate); the demo model is the first
MIXED = ["__base__"] * 8 + ["a1"] * 4 + ["a2"] * 4
CONTEXT = 120


def two_adapter_model(hidden: int, intermediate: int) -> Any:
    """A random 4-layer Llama with two LoRA adapters, `a1` and `a2`."""
    config = LlamaConfig(
        vocab_size=4000,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    lora = LoraConfig(**LORA)
    model = get_peft_model(LlamaForCausalLM(config).eval(), lora, adapter_name="a1")
    model.add_adapter("a2", lora)
    return model.eval()


def step_ms(model: Any, rows: int, *, adapters: str, repeats: int) -> float:
    """Milliseconds of one decode step for `rows` rows: adapters "base", "a1" or "mixed"."""
    if adapters == "base":
        model.base_model.disable_adapter_layers()
    else:
        model.base_model.enable_adapter_layers()
        model.set_adapter("a1")
    extra = {"adapter_names": MIXED[:rows]} if adapters == "mixed" else {}
    with torch.no_grad():
        out = model(input_ids=torch.randint(0, 4000, (rows, CONTEXT)), use_cache=True, **extra)
        cache = out.past_key_values
        token = torch.randint(0, 4000, (rows, 1))
        started = time.perf_counter()
        for _ in range(repeats):
            model(input_ids=token, past_key_values=cache, use_cache=True, logits_to_keep=1, **extra)
            cache.crop(-1)
    return (time.perf_counter() - started) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    for hidden, intermediate in SIZES:
        model = two_adapter_model(hidden, intermediate)
        params = model.base_model.model.num_parameters(exclude_embeddings=False) / 1e6
        one_adapter = step_ms(model, 1, adapters="a1", repeats=args.repeats)
        one_base = step_ms(model, 1, adapters="base", repeats=args.repeats)
        all_base = step_ms(model, 16, adapters="base", repeats=args.repeats)
        mixed = step_ms(model, 16, adapters="mixed", repeats=args.repeats)
        serial = 8 * one_base + 8 * one_adapter  # the same 16 rows, one at a time
        print(
            f"hidden {hidden} ({params:.1f}M params): step ms  1 adapter {one_adapter:.1f}"
            f"  1 base {one_base:.1f}  16 base {all_base:.1f}  16 mixed {mixed:.1f}"
            f"  ->  mixed/one-at-a-time {serial / mixed:.2f}x  mixed/all-base {all_base / mixed:.2f}x"
        )


if __name__ == "__main__":
    main()
