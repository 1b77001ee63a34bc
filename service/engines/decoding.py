"""Per-sequence decoding state: sampling with its own seed, incremental detokenizing, stop strings.

Each sequence in a mixed batch keeps its own knobs (temperature, top-p, seed, stops), which is why
this is per row and not one `generate()` call for the whole batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import torch
from tokenizers.decoders import DecodeStream

log = logging.getLogger(__name__)

GREEDY_TEMPERATURE = 1e-5
"""Temperatures below this are greedy: dividing logits by them only overflows, it changes no choice."""


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
    """Pick the next token from one row of logits: greedy at (near) temperature 0, else nucleus sampling.

    The logits are shifted so their maximum is 0 before they are divided by the temperature: every
    scaled value is then at most 0, so no temperature makes them overflow to inf (or the softmax
    to nan); the nucleus always keeps the most likely token, so `top_p` near 0 means greedy too."""
    if not temperature >= GREEDY_TEMPERATURE or not top_p > 0:  # also true for nan
        return int(torch.argmax(logits).item())
    values = logits.float()
    scaled = (values - values.max()) / temperature
    if top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(scaled, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(dim=-1) - probs >= top_p
        drop[0] = False
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        scaled = torch.full_like(scaled, float("-inf")).scatter(0, sorted_idx, sorted_logits)
    probs = torch.softmax(scaled, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator).item())


def _backend(tokenizer: Any) -> Any:
    """The Rust `tokenizers.Tokenizer` behind a fast tokenizer; None for a slow one."""
    return getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None


class TextAssembler:
    """Turns generated token ids into text pieces, holding back what may still become a stop string.

    A fast tokenizer decodes incrementally with `tokenizers`' `DecodeStream`: each token costs the
    decoding of a few tokens around it, not of the whole answer, and a multi-byte character split over
    tokens comes out whole once complete. A slow tokenizer decodes the whole sequence each time
    (quadratic in the answer's length, but right). The held-back tail (one character short of the
    longest stop string) makes sure a stop string is never streamed.
    """

    def __init__(self, tokenizer: Detokenizer, stop: Sequence[str]) -> None:
        self._tokenizer = tokenizer
        self._backend = _backend(tokenizer)
        self._stream: Any = None
        if self._backend is not None:
            self._stream = DecodeStream(skip_special_tokens=True)
        self._stop = [s for s in stop if s]
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self.token_ids: list[int] = []
        self._produced = 0  # characters decoded so far (emitted or held)
        self._held = ""  # decoded, not yet emitted
        self._undecoded = 0  # tokens added since the last one that produced text
        self.stopped = False

    def add(self, token_id: int) -> str:
        """Append a token; return the new text that is safe to emit now (may be empty)."""
        self.token_ids.append(token_id)
        piece = self._next_piece(token_id)
        if not piece:
            self._undecoded += 1
            return ""
        self._undecoded = 0
        self._produced += len(piece)
        self._held += piece
        return self._release(len(self._held) - self._hold)

    def flush(self) -> str:
        """The text still held back, when the sequence ends for a reason other than a stop string.

        Tokens that have not made a whole character yet are decoded as the tokenizer would decode the
        whole answer, less a trailing replacement character (an incomplete last character)."""
        if self.stopped:
            return ""
        if self._undecoded:
            self._held += self._decode_all().rstrip("\ufffd")[self._produced :]
            self._undecoded = 0
        return self._release(len(self._held))

    def _next_piece(self, token_id: int) -> str | None:
        if self._stream is not None:
            try:
                return self._stream.step(self._backend, token_id)  # type: ignore[no-any-return]
            except Exception:  # noqa: BLE001 - a decoder the stream cannot follow: decode in full
                log.warning("incremental decoding failed; decoding whole answers for this request")
                self._stream = None
        text = self._decode_all()
        if text.endswith("\ufffd") or len(text) <= self._produced:
            return None
        return text[self._produced :]

    def _decode_all(self) -> str:
        """The whole answer; decoded by the same Rust tokenizer as the stream, when there is one (a
        fast tokenizer's `decode` may also clean up spaces, which the stream does not)."""
        if self._backend is not None:
            return str(self._backend.decode(self.token_ids, skip_special_tokens=True))
        return self._tokenizer.decode(self.token_ids, skip_special_tokens=True)

    def _release(self, upto: int) -> str:
        """Emit the held text up to `upto` characters, or up to a stop string found in it."""
        cuts = [cut for cut in (self._held.find(stop) for stop in self._stop) if cut != -1]
        if cuts:
            self.stopped = True
            upto = min(cuts)
        if upto <= 0:
            return ""
        piece, self._held = self._held[:upto], self._held[upto:]
        return piece
