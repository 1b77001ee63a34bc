"""Log-likelihood of golden answers under the base and each adapter, with transformers directly.

The prompt is rendered with the model's own chat template exactly as the engine renders it; the loss
counts the answer's tokens only (and the end-of-turn token the template puts after it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

from training.evaluation.data import EvalItem
from training.evaluation.sources import TokenNLL, Variant


def golden_nll(
    model_path: str,
    adapters: dict[str, str],
    variants: Sequence[Variant],
    items: Sequence[EvalItem],
    advance: Callable[[], None],
    device: str = "auto",
) -> dict[str, list[TokenNLL]]:
    """Per variant key, (NLL, tokens) of each item's golden answer; `adapters` maps adapter key -> path."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    target = torch.device(device)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    dtype = torch.bfloat16 if target.type == "cuda" else torch.float32
    loaded: Any = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    model: Any = loaded.to(target).eval()
    names: dict[str, str] = {}
    if adapters:
        from peft import PeftModel

        for index, (key, path) in enumerate(adapters.items()):
            names[key] = f"eval{index}"
            if index == 0:
                model = PeftModel.from_pretrained(model, path, adapter_name=names[key], is_trainable=False)
            else:
                model.load_adapter(path, adapter_name=names[key], is_trainable=False)
        model.eval()
    context = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    encoded = [_encode(tokenizer, item, context) for item in items]
    results: dict[str, list[TokenNLL]] = {}
    with torch.inference_mode():
        for variant in variants:
            if variant.adapter is None:
                scope: Any = model.disable_adapter() if names else nullcontext()
            else:
                model.set_adapter(names[variant.adapter])
                scope = nullcontext()
            with scope:
                results[variant.key] = [_nll(model, ids, start, target, advance) for ids, start in encoded]
    return results


def _encode(tokenizer: Any, item: EvalItem, context: int) -> tuple[list[int], int]:
    """Prompt + answer token ids and where the answer starts."""
    prompt = tokenizer.apply_chat_template(item.chat(), add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(
        [*item.chat(), {"role": "assistant", "content": item.reference}], tokenize=False
    )
    answer = full[len(prompt) :] if full.startswith(prompt) else item.reference
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    ids = (prompt_ids + answer_ids)[:context]
    return ids, min(len(prompt_ids), len(ids) - 1)


def _nll(model: Any, ids: list[int], start: int, device: Any, advance: Callable[[], None]) -> TokenNLL:
    import torch

    tensor = torch.tensor([ids], device=device)
    logits = model(input_ids=tensor).logits[0, start - 1 : -1].float()
    targets = tensor[0, start:]
    loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    advance()
    return float(loss), int(targets.numel())
