"""The tiny demo model: a ~3M-parameter Llama trained here on the project's own Indonesian text.

`ensure_demo_base` builds the base model and tokenizer (general Indonesian chat plus the seed bank's
questions, never its golden answers); `ensure_demo_adapter` trains a LoRA adapter on the golden answers,
so the base and the tuned variant really answer domain questions differently. Both are deterministic; on
two CPU cores the base takes about 55 s and the adapter about 22 s, so a first `zantara serve` is ready
in well under two minutes.

A from-scratch model this small gets anywhere in a one-minute budget only by memorising a small corpus:
the base learns a sample of general chats (their opening sentences) and the domain questions, and
strings together real Indonesian words and phrases without being fluent; the adapter moves it towards
the golden answers' wording (their loss falls by about a third) without making it an expert.

Every training example starts with the same system prompt, so the loops below run that prefix once per
batch and share its key/value cache across the rows: same loss and gradients, a third less compute.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from knowledge.prompts import ZANTARA_SYSTEM_PROMPT
from training.demo.data import SEED_FILE, chat, file_hash, load_general, load_seed
from training.demo.tokenizer import build_tokenizer
from training.progress import training_progress

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEMO_ADAPTER = ("zantara-demo", "v1")
"""`(NAME, VERSION)` of the demo adapter the service loads by default."""
SEED = int(os.environ.get("ZANTARA_DEMO_SEED", "1234"))
"""Random seed of the demo build; tests set `ZANTARA_DEMO_SEED` to check they hold for any build."""
VOCAB_SIZE = 4000
MAX_TOKENS = 384  # per example, after the shared prefix
ADAPTER_MAX_TOKENS = 96  # the adapter learns the question and the first ~70 tokens of its golden answer
ARCHITECTURE: dict[str, Any] = {
    "hidden_size": 192,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
}
# The base learns every GENERAL_STRIDE-th general chat, its answer cut to the first sentences that fit
# in OPENING_CHARS characters.
GENERAL_STRIDE = 4
OPENING_CHARS = 120
BASE_TRAINING: dict[str, Any] = {"tokens": 100_000, "batch_tokens": 768, "learning_rate": 7e-3}
ADAPTER_TRAINING: dict[str, Any] = {"tokens": 30_000, "batch_tokens": 512, "learning_rate": 1e-2}
LORA: dict[str, Any] = {
    "r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


@dataclass(frozen=True)
class _Example:
    prefix: tuple[int, ...]
    ids: list[int]
    labels: list[int]


def ensure_demo_base(path: Path, *, progress: bool = True) -> Path:
    """Build the tiny demo base model + tokenizer at `path` if missing; return path.

    Atomic: it is built in a temporary directory beside `path`, then renamed.
    """
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    with _all_cores(), _atomic_dir(path) as tmp:
        _build_base(tmp, progress=progress)
    return path


def ensure_demo_adapter(base_path: Path, adapter_path: Path, *, progress: bool = True) -> Path:
    """Train the demo LoRA adapter (PEFT) on the seed bank's golden answers at `adapter_path` if missing.

    Builds the base first when `base_path` holds none; atomic like `ensure_demo_base`; returns the path.
    """
    adapter_path = Path(adapter_path)
    if (adapter_path / "adapter_config.json").is_file():
        return adapter_path
    base_path = ensure_demo_base(Path(base_path), progress=progress)
    with _all_cores(), _atomic_dir(adapter_path) as tmp:
        _build_adapter(base_path, tmp, progress=progress)
    return adapter_path


def answer_loss(
    model: PreTrainedModel | PeftModel, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]]
) -> float:
    """Mean per-token loss of the answers given the questions (system prompt included), over all tokens."""
    import torch

    examples = [_encode(tokenizer, chat(q, a), answer_only=True) for q, a in pairs]
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in _batches(examples, batch_tokens=4096, rng=None):
            loss, n = _loss(model, *batch, pad_id=tokenizer.pad_token_id)
            total, count = total + loss.item() * n, count + n
    return total / count


def generate_answer(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    *,
    max_new_tokens: int = 80,
) -> str:
    """Greedy answer to `question` under the ZANTARA system prompt."""
    import torch

    inputs: Any = tokenizer.apply_chat_template(
        chat(question), add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        out: Any = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)  # type: ignore[operator]
    return str(tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)).strip()


def opening(text: str, max_chars: int = OPENING_CHARS) -> str:
    """The first sentences of `text` that fit in `max_chars` characters (at least the first sentence)."""
    import re

    out = ""
    for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text.strip()):
        if out and len(out) + 1 + len(sentence) > max_chars:
            break
        out = f"{out} {sentence}".strip()
    return out


def _build_base(out: Path, *, progress: bool) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    general, seed = load_general(), load_seed()
    # The tokenizer knows every word of the project's text (golden answers included, like a real
    # tokenizer would); the model's weights only ever see general chat and the domain questions.
    corpus = [ZANTARA_SYSTEM_PROMPT] * 20 + [t for q, a in general for t in (q, a)]
    corpus += [q for s in seed for q in s.questions] + [s.golden_answer for s in seed]
    tokenizer = build_tokenizer(corpus, vocab_size=VOCAB_SIZE)
    vocab = tokenizer.get_vocab()
    special = {name: vocab[tok] for name, tok in _SPECIAL_IDS.items()}
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=special["bos"],
        eos_token_id=[special["eot"], special["eos"]],
        pad_token_id=special["pad"],
        **ARCHITECTURE,
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config)
    sample = [(q, opening(a)) for q, a in general[::GENERAL_STRIDE]]
    examples = [_encode(tokenizer, chat(q, a), answer_only=False) for q, a in sample]
    examples += [_encode(tokenizer, chat(s.question), answer_only=False) for s in seed]
    _train(model, [(ex,) for ex in examples], **BASE_TRAINING, desc="demo base", progress=progress)
    # A model this small loops without a repetition penalty; engines read these defaults.
    model.generation_config = GenerationConfig(
        bos_token_id=special["bos"],
        eos_token_id=[special["eot"], special["eos"]],
        pad_token_id=special["pad"],
        repetition_penalty=1.3,
        no_repeat_ngram_size=3,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


_SPECIAL_IDS = {
    "bos": "<|begin_of_text|>",
    "eos": "<|end_of_text|>",
    "eot": "<|eot_id|>",
    "pad": "<|finetune_right_pad_id|>",
}


def _build_adapter(base_path: Path, out: Path, *, progress: bool) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    seed = load_seed()
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    golden = [(s.question, s.golden_answer) for s in seed]
    loss_base = answer_loss(model, tokenizer, golden)
    torch.manual_seed(SEED)
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **LORA))  # type: ignore[assignment]
    # Each epoch pairs every golden answer with the next of its questions (original, then variants).
    items = [
        tuple(
            _encode(tokenizer, chat(q, s.golden_answer), answer_only=True, max_tokens=ADAPTER_MAX_TOKENS)
            for q in s.questions
        )
        for s in seed
    ]
    train_loss = _train(model, items, **ADAPTER_TRAINING, desc="demo adapter", progress=progress)
    loss_adapter = answer_loss(model, tokenizer, golden)
    model.save_pretrained(out)
    metrics = {
        "golden_loss_base": round(loss_base, 4),
        "golden_loss_adapter": round(loss_adapter, 4),
        "train_loss": round(train_loss, 4),
        "pairs": sum(len(alternatives) for alternatives in items),
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    meta = {
        "name": "zantara-demo",
        "version": "v1",
        "base_model": str(base_path),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": f"seed-bank@{file_hash(SEED_FILE)}",
        "metrics": metrics,
    }
    (out / "zantara.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _encode(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, str]],
    *,
    answer_only: bool,
    max_tokens: int = MAX_TOKENS,
) -> _Example:
    """Tokenize a chat and split off its shared prefix (bos + system turn, or bos alone)."""
    enc: Any = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=answer_only
    )
    ids = list(enc["input_ids"])
    if messages[0]["role"] == "system":
        system: Any = tokenizer.apply_chat_template(messages[:1], tokenize=True, return_dict=True)
        prefix = list(system["input_ids"])
    else:
        prefix = [tokenizer.bos_token_id]
    if ids[: len(prefix)] != prefix:
        raise ValueError("the chat template does not start every chat with the same system prefix")
    n = len(prefix)
    rest = ids[n : n + max_tokens]
    if answer_only:
        labels = [
            t if m else -100 for t, m in zip(rest, enc["assistant_masks"][n : n + max_tokens], strict=True)
        ]
    else:
        labels = list(rest)
    return _Example(tuple(prefix), rest, labels)


def _batches(
    examples: Sequence[_Example], *, batch_tokens: int, rng: random.Random | None
) -> Iterator[tuple[tuple[int, ...], list[list[int]], list[list[int]]]]:
    """One pass over `examples` in batches of one prefix and similar lengths, padded to at most
    `batch_tokens` tokens; shuffled with `rng` when given."""
    groups: dict[tuple[int, ...], list[_Example]] = {}
    for ex in examples:
        groups.setdefault(ex.prefix, []).append(ex)
    batches = []
    for prefix, group in groups.items():
        if rng is not None:
            group = rng.sample(group, len(group))
        window = max(1, 8 * batch_tokens // MAX_TOKENS)
        for start in range(0, len(group), window):
            rows: list[_Example] = []
            for ex in sorted(group[start : start + window], key=lambda e: len(e.ids)):
                if rows and (len(rows) + 1) * len(ex.ids) > batch_tokens:
                    batches.append((prefix, [e.ids for e in rows], [e.labels for e in rows]))
                    rows = []
                rows.append(ex)
            batches.append((prefix, [e.ids for e in rows], [e.labels for e in rows]))
    if rng is not None:
        rng.shuffle(batches)
    yield from batches


def _loss(
    model: PreTrainedModel | PeftModel,
    prefix: tuple[int, ...],
    ids: list[list[int]],
    labels: list[list[int]],
    *,
    pad_id: int,
) -> tuple[torch.Tensor, int]:
    """Mean next-token loss of a batch after the shared prefix, and the number of target tokens."""
    import torch
    import torch.nn.functional as F

    width = max(len(row) for row in ids)
    input_ids = torch.tensor([row + [pad_id] * (width - len(row)) for row in ids])
    targets = torch.tensor([row + [-100] * (width - len(row)) for row in labels])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
    prefix_out = model(input_ids=torch.tensor([prefix]), use_cache=True, logits_to_keep=1)
    cache = prefix_out["cache"] if "cache" in prefix_out else prefix_out["past_key_values"]
    cache.batch_repeat_interleave(len(ids))
    full_mask = torch.cat([torch.ones(len(ids), len(prefix), dtype=mask.dtype), mask], dim=1)
    logits = model(input_ids=input_ids, attention_mask=full_mask, **{_cache_argument(): cache}).logits
    # The first token after the prefix is always a header token: it is not predicted.
    shifted = targets[:, 1:]
    loss = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)), shifted.reshape(-1), ignore_index=-100
    )
    return loss, int((shifted != -100).sum())


def _cache_argument() -> str:
    """Name of the forward argument taking a key/value cache (`cache` in recent transformers)."""
    import inspect

    from transformers import LlamaForCausalLM

    return "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


def _train(
    model: PreTrainedModel | PeftModel,
    items: Sequence[Sequence[_Example]],
    *,
    tokens: int,
    batch_tokens: int,
    learning_rate: float,
    desc: str,
    progress: bool,
) -> float:
    """AdamW with warm-up and cosine decay over about `tokens` training tokens; returns the final loss.

    Each item holds alternative examples: epoch k trains on alternative k (cycling) of every item.
    """
    import itertools

    import torch
    from transformers import get_cosine_schedule_with_warmup

    def epoch(k: int) -> list[_Example]:
        return [alternatives[k % len(alternatives)] for alternatives in items]

    cycle = range(max(len(alternatives) for alternatives in items))
    cycle_tokens = sum(len(ex.ids) for k in cycle for ex in epoch(k))
    cycle_steps = sum(1 for k in cycle for _ in _batches(epoch(k), batch_tokens=batch_tokens, rng=None))
    steps = max(1, round(tokens / cycle_tokens * cycle_steps))
    rng = random.Random(SEED)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.01, betas=(0.9, 0.95))
    schedule = get_cosine_schedule_with_warmup(optimizer, max(1, steps // 10), steps)
    epochs = itertools.chain.from_iterable(
        _batches(epoch(k), batch_tokens=batch_tokens, rng=rng) for k in itertools.count()
    )
    pad_id = model.config.pad_token_id
    model.train()
    smoothed = 0.0
    with training_progress(enabled=progress) as bar:
        task = bar.add_task(desc, total=steps, stats="")
        for step, batch in zip(range(steps), epochs, strict=False):
            loss, _ = _loss(model, *batch, pad_id=pad_id)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            smoothed = loss.item() if step == 0 else 0.9 * smoothed + 0.1 * loss.item()
            bar.update(task, advance=1, stats=f"loss {smoothed:.3f}")
    model.eval()
    return smoothed


@contextmanager
def _all_cores() -> Iterator[None]:
    """Let torch use every core this process may run on, restoring the previous setting afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _atomic_dir(path: Path) -> Iterator[Path]:
    """A temporary directory beside `path`, renamed to `path` when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        try:
            tmp.rename(path)
        except OSError:
            if not path.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
