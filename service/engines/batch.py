"""Continuous batching over a transformers model with PEFT mixed-adapter batches.

One `RunningBatch` holds every sequence being decoded, whatever adapter it uses. New sequences are
prefilled and merged into the running batch between decode steps (their KV caches left-padded to a
common length), finished ones are dropped, so requests arriving on their own share forward passes
instead of waiting for each other. A prompt's prefix already computed for an earlier request (the
system prompt, the conversation so far) comes from the `PrefixCache` instead of being prefilled again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from service.engines.base import Delta, GenerationError
from service.engines.decoding import TextAssembler, make_generator, sample_token
from service.engines.prefix_cache import LayerKV, PrefixCache

log = logging.getLogger(__name__)

BASE_ADAPTER = "__base__"
"""PEFT's name for "no adapter" in a mixed batch."""


@dataclass(eq=False)
class Sequence:
    """One request being generated: its prompt, knobs, progress and where its output goes."""

    prompt_ids: list[int]
    adapter: str
    max_tokens: int
    temperature: float
    top_p: float
    emit: Callable[[Delta | BaseException], None]
    assembler: TextAssembler
    eos_ids: frozenset[int]
    generator: torch.Generator | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    next_token: int = -1
    length: int = 0
    generated: int = 0
    cached_tokens: int = 0
    finished: bool = False

    @classmethod
    def create(
        cls,
        *,
        prompt_ids: list[int],
        adapter: str,
        max_tokens: int,
        temperature: float,
        top_p: float,
        stop: tuple[str, ...],
        seed: int | None,
        tokenizer: Any,
        eos_ids: frozenset[int],
        device: torch.device,
        emit: Callable[[Delta | BaseException], None],
    ) -> Sequence:
        """Build a sequence with its own text assembler and (for seeded requests) random generator."""
        return cls(
            prompt_ids=prompt_ids,
            adapter=adapter,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            emit=emit,
            assembler=TextAssembler(tokenizer, stop),
            eos_ids=eos_ids,
            generator=make_generator(seed, device),
            length=len(prompt_ids),
        )

    def accept(self, logits: torch.Tensor) -> None:
        """Sample the next token from this row's logits and emit the text it adds. An end-of-sequence
        token adds no text but counts as generated, as vLLM counts it in `completion_tokens`."""
        token = sample_token(logits, self.temperature, self.top_p, self.generator)
        if token in self.eos_ids:
            self.generated += 1
            self._finish("stop")
            return
        self.generated += 1
        self.next_token = token
        piece = self.assembler.add(token)
        if self.assembler.stopped:
            self._finish("stop", piece)
        elif self.generated >= self.max_tokens:
            self._finish("length", piece)
        elif piece:
            self.emit(Delta(piece, self.generated, cached_tokens=self.cached_tokens))

    def advance(self, logits: torch.Tensor) -> None:
        """`accept`, but a failure ends this sequence alone, with a `GenerationError` for its consumer."""
        try:
            self.accept(logits)
        except Exception as error:  # noqa: BLE001 - delivered to this sequence's consumer
            log.exception("generation failed for one sequence")
            self.fail(GenerationError(f"generation failed: {type(error).__name__}: {error}"))

    def fail(self, error: BaseException) -> None:
        """End the sequence with an error delivered to its consumer (if it can still be reached)."""
        self.finished = True
        try:
            self.emit(error)
        except Exception:  # noqa: BLE001 - the consumer is gone (its event loop closed)
            log.warning("could not deliver an error to a finished request", exc_info=True)

    def _finish(self, reason: str, piece: str = "") -> None:
        self.finished = True
        piece += self.assembler.flush()
        self.emit(Delta(piece, self.generated, finish_reason=reason, cached_tokens=self.cached_tokens))


class RunningBatch:
    """The KV cache, attention mask and sequences of everything being decoded now."""

    def __init__(
        self, model: Any, pad_id: int, device: torch.device, prefix_cache: PrefixCache | None = None
    ) -> None:
        self._model = model
        self._pad_id = pad_id
        self._device = device
        self._prefix_cache = prefix_cache if prefix_cache is not None and prefix_cache.enabled else None
        self.sequences: list[Sequence] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.sequences)

    def admit(self, newcomers: list[Sequence], forward: Callable[..., Any]) -> None:
        """Prefill `newcomers` together, sample their first token and merge them into the batch.

        A failed prefill fails the newcomers only: the running batch is not touched until the merge."""
        newcomers = sorted(newcomers, key=lambda s: s.adapter)
        try:
            cache, mask = self._prefill(newcomers, forward)
        except Exception as error:  # noqa: BLE001 - delivered to the newcomers
            log.exception("prefill failed")
            for seq in newcomers:
                if not seq.finished:
                    seq.fail(GenerationError(f"generation failed: {type(error).__name__}: {error}"))
            return
        self._merge(newcomers, cache, mask)
        self.prune()

    def _prefill(
        self, newcomers: list[Sequence], forward: Callable[..., Any]
    ) -> tuple[DynamicCache, torch.Tensor]:
        """Run the newcomers' prompts, sample their first token; return their KV cache and mask.

        Rows are right-aligned. The forward pass computes the last `window` columns, as many as the
        longest uncached part of a prompt; the columns before come from the prefix cache (each row
        takes the cached prefix tokens it needs, a row with a shorter uncached part recomputes some
        of its cached ones)."""
        cached = [self._cached_prefix(seq) for seq in newcomers]
        window = max(len(s.prompt_ids) - _tokens(kv) for s, kv in zip(newcomers, cached, strict=True))
        used = [max(0, len(s.prompt_ids) - window) for s in newcomers]
        past = max(used)
        ids = torch.full((len(newcomers), window), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(newcomers), past + window), dtype=torch.long)
        for row, seq in enumerate(newcomers):
            seq.cached_tokens = used[row]
            fed = seq.prompt_ids[used[row] :]
            ids[row, window - len(fed) :] = torch.tensor(fed)
            mask[row, past + window - len(seq.prompt_ids) :] = 1
        ids, mask = ids.to(self._device), mask.to(self._device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, past:]
        cache = DynamicCache(ddp_cache_data=_left_padded(cached, used, past)) if past else DynamicCache()
        logits = forward(
            newcomers, input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache
        )
        for row, seq in enumerate(newcomers):
            seq.advance(logits[row])
        self._store_prefixes(newcomers, cache)
        return cache, mask

    def _cached_prefix(self, seq: Sequence) -> list[LayerKV]:
        if self._prefix_cache is None:
            return []
        return self._prefix_cache.lookup(seq.adapter, seq.prompt_ids)

    def _store_prefixes(self, newcomers: list[Sequence], cache: DynamicCache) -> None:
        if self._prefix_cache is None:
            return
        layers = _layers(cache)
        for row, seq in enumerate(newcomers):
            start = -len(seq.prompt_ids)
            kv = [(layer.keys[row, :, start:], layer.values[row, :, start:]) for layer in layers]
            self._prefix_cache.store(seq.adapter, seq.prompt_ids, kv)

    def step(self, forward: Callable[..., Any]) -> None:
        """Feed every sequence its last sampled token and sample the next one."""
        assert self._cache is not None and self._mask is not None
        ids = torch.tensor([[s.next_token] for s in self.sequences], device=self._device)
        positions = torch.tensor([[s.length] for s in self.sequences], device=self._device)
        ones = torch.ones((len(self.sequences), 1), dtype=self._mask.dtype, device=self._device)
        self._mask = torch.cat([self._mask, ones], dim=1)
        logits = forward(
            self.sequences,
            input_ids=ids,
            attention_mask=self._mask,
            position_ids=positions,
            past_key_values=self._cache,
        )
        for row, seq in enumerate(self.sequences):
            seq.length += 1
            seq.advance(logits[row])
        self.prune()

    def prune(self) -> None:
        """Drop finished or cancelled sequences and cache columns no remaining sequence attends to."""
        keep = [i for i, s in enumerate(self.sequences) if not s.finished and not s.cancelled.is_set()]
        if len(keep) == len(self.sequences):
            return
        self.sequences = [self.sequences[i] for i in keep]
        if not keep:
            self._cache, self._mask = None, None
            return
        assert self._cache is not None and self._mask is not None
        index = torch.tensor(keep, device=self._device)
        self._cache.batch_select_indices(index)
        self._mask = self._mask[index]
        first_used = int(self._mask.any(dim=0).nonzero()[0].item())
        if first_used:
            self._mask = self._mask[:, first_used:]
            for layer in _layers(self._cache):
                layer.keys = layer.keys[..., first_used:, :]
                layer.values = layer.values[..., first_used:, :]

    def fail_all(self, error: BaseException) -> None:
        """Deliver `error` to every sequence and empty the batch (after an engine failure)."""
        for seq in self.sequences:
            seq.fail(error)
        self.sequences, self._cache, self._mask = [], None, None

    def _merge(self, newcomers: list[Sequence], cache: DynamicCache, mask: torch.Tensor) -> None:
        """Add the prefilled newcomers to the batch, rows grouped by adapter (base rows first, as
        `LoraRows` needs), in one copy of the cache: the running rows and the newcomers' rows are
        copied straight to their place in the merged order, the narrower side left-padded on the way
        (a concatenation, a padding and a reordering would each copy the whole cache)."""
        if self._cache is None or self._mask is None:
            self.sequences, self._cache, self._mask = list(newcomers), cache, mask
            return
        combined = self.sequences + newcomers
        order = sorted(range(len(combined)), key=lambda i: combined[i].adapter)
        runs = _runs(order, len(self.sequences))
        for mine, theirs in zip(_layers(self._cache), _layers(cache), strict=True):
            mine.keys = _gather_rows((mine.keys, theirs.keys), runs, dim=-2)
            mine.values = _gather_rows((mine.values, theirs.values), runs, dim=-2)
        self._mask = _gather_rows((self._mask, mask), runs, dim=-1)
        self.sequences = [combined[i] for i in order]


def _runs(order: list[int], split: int) -> list[tuple[int, int, int]]:
    """`order` (indices into the running rows then the newcomers, the running ones below `split`) as
    runs of consecutive rows of one side: `(side, start, stop)`, side 0 running, 1 newcomers."""
    runs: list[tuple[int, int, int]] = []
    for index in order:
        side, row = (0, index) if index < split else (1, index - split)
        if runs and runs[-1][0] == side and runs[-1][2] == row:
            runs[-1] = (side, runs[-1][1], row + 1)
        else:
            runs.append((side, row, row + 1))
    return runs


def _gather_rows(
    sources: tuple[torch.Tensor, torch.Tensor], runs: list[tuple[int, int, int]], dim: int
) -> torch.Tensor:
    """The rows of `runs` from `sources` in one new tensor, each right-aligned along `dim` (the
    sequence axis) in the wider source's width, the columns before a narrower source's zero."""
    width = max(source.shape[dim] for source in sources)
    shape = list(sources[0].shape)
    shape[0], shape[dim] = sum(stop - start for _, start, stop in runs), width
    merged = sources[0].new_empty(shape)
    row = 0
    for side, start, stop in runs:
        source = sources[side]
        pad = width - source.shape[dim]
        target = merged[row : row + stop - start]
        target.narrow(dim, pad, source.shape[dim]).copy_(source[start:stop])
        if pad:
            target.narrow(dim, 0, pad).zero_()
        row += stop - start
    return merged


def adapter_slices(sequences: list[Sequence]) -> list[tuple[str, int, int]] | None:
    """`(adapter, start, stop)` for each run of rows on one adapter, or None when an adapter's rows
    are not contiguous."""
    runs: list[tuple[str, int, int]] = []
    for row, seq in enumerate(sequences):
        if runs and runs[-1][0] == seq.adapter:
            runs[-1] = (seq.adapter, runs[-1][1], row + 1)
        else:
            runs.append((seq.adapter, row, row + 1))
    return runs if len({name for name, _, _ in runs}) == len(runs) else None


def _tokens(kv: list[LayerKV]) -> int:
    return kv[0][0].shape[1] if kv else 0


def _left_padded(cached: list[list[LayerKV]], used: list[int], width: int) -> list[LayerKV]:
    """Per layer, the batch's keys and values of the first `used[row]` cached tokens of each row,
    right-aligned in `width` columns (zeros before, masked out)."""
    sample = next(kv for kv, n in zip(cached, used, strict=True) if n)
    layers: list[LayerKV] = []
    for layer, (sample_k, sample_v) in enumerate(sample):
        keys = sample_k.new_zeros((len(cached), sample_k.shape[0], width, sample_k.shape[2]))
        values = sample_v.new_zeros((len(cached), sample_v.shape[0], width, sample_v.shape[2]))
        for row, n in enumerate(used):
            if n:
                keys[row, :, width - n :] = cached[row][layer][0][:, :n]
                values[row, :, width - n :] = cached[row][layer][1][:, :n]
        layers.append((keys, values))
    return layers


def _layers(cache: DynamicCache) -> list[Any]:
    """The cache's per-layer key/value holders (attention layers only in the models we serve)."""
    return list(cache.layers)
