"""Per-sequence decoding state: sampling with its own seed, incremental detokenizing, stop strings.

Each sequence in a mixed batch keeps its own knobs (temperature, top-p, seed, stops), which is why
this is per row and not one `generate()` call for the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch


class Detokenizer(Protocol):
    """The part of a tokenizer decoding needs."""

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


def make_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """A private random generator for a seeded request, so its output does not depend on its batch."""
    if seed is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def sample_token(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> int:
    """Pick the next token from one row of logits: greedy at temperature 0, else nucleus sampling."""
    if temperature <= 0:
        return int(torch.argmax(logits).item())
    scaled = logits.float() / temperature
    if top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(scaled, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        scaled = torch.full_like(scaled, float("-inf")).scatter(0, sorted_idx, sorted_logits)
    probs = torch.softmax(scaled, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator).item())


class TextAssembler:
    """Turns generated token ids into text pieces, holding back what may still become a stop string.

    Decoding the whole sequence each time (rather than token by token) keeps multi-byte characters
    and tokenizer merges right; the held-back tail makes sure a stop string is never streamed.
    """

    def __init__(self, tokenizer: Detokenizer, stop: Sequence[str]) -> None:
        self._tokenizer = tokenizer
        self._stop = [s for s in stop if s]
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self.token_ids: list[int] = []
        self._emitted = 0
        self.stopped = False

    def add(self, token_id: int) -> str:
        """Append a token; return the new text that is safe to emit now (may be empty)."""
        self.token_ids.append(token_id)
        text = self._tokenizer.decode(self.token_ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        for stop in self._stop:
            cut = text.find(stop, max(0, self._emitted - len(stop)))
            if cut != -1:
                self.stopped = True
                return self._take(text, cut)
        return self._take(text, len(text) - self._hold)

    def flush(self) -> str:
        """The text still held back, when the sequence ends for a reason other than a stop string."""
        if self.stopped:
            return ""
        text = self._tokenizer.decode(self.token_ids, skip_special_tokens=True).rstrip("\ufffd")
        return self._take(text, len(text))

    def _take(self, text: str, upto: int) -> str:
        if upto <= self._emitted:
            return ""
        piece = text[self._emitted : upto]
        self._emitted = upto
        return piece
