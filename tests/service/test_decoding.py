"""Sampling that no knob can overflow, and incremental detokenizing that matches a whole-answer decode."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from service.engines.decoding import TextAssembler, sample_token

TEXTS = [
    "Berapa modal minimum untuk mendirikan PT PMA?",
    "Izin usaha lewat OSS: NIB, sertifikat standar, lalu izin komersial.",
    "Café naïve — 日本語のテキスト, 한국어, emoji 🙂🚀 and ✓ ñ ü ß € ₹",
    "Rp 10.000.000.000 (sepuluh miliar rupiah) — 💼🇮🇩 «ok» …",
]


@pytest.fixture(scope="module")
def tokenizer(demo_base_path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_base_path)


class CountingTokenizer:
    """A tokenizer proxy counting whole-sequence decodes (and optionally hiding that it is fast)."""

    def __init__(self, tokenizer: Any, *, fast: bool = True) -> None:
        self._inner = tokenizer
        self.is_fast = fast
        self.backend_tokenizer = tokenizer.backend_tokenizer if fast else None
        self.decodes = 0

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        self.decodes += 1
        return str(self._inner.decode(token_ids, skip_special_tokens=skip_special_tokens))


def assemble(tokenizer: Any, ids: list[int], stop: Sequence[str] = ()) -> tuple[list[str], bool]:
    """Feed `ids` one by one; the emitted pieces (flush included) and whether a stop string hit."""
    assembler = TextAssembler(tokenizer, stop)
    pieces = []
    for token in ids:
        pieces.append(assembler.add(token))
        if assembler.stopped:
            return pieces, True
    pieces.append(assembler.flush())
    return pieces, False


@pytest.mark.parametrize("temperature", [1e-40, 1e-30, 1e-8, 1e-6])
def test_a_tiny_temperature_is_greedy_and_never_overflows(temperature: float) -> None:
    logits = torch.tensor([3.0, 80.0, -5.0, 79.0, float("-inf")])
    assert sample_token(logits, temperature, 1.0, None) == 1
    assert sample_token(logits, temperature, 0.5, None) == 1


def test_sampling_stays_finite_at_extreme_knobs() -> None:
    logits = torch.tensor([1e30, -1e30, 0.0, 1e30 - 1e24])
    generator = torch.Generator().manual_seed(0)
    for temperature, top_p in [(1e-3, 1.0), (2.0, 1e-9), (2.0, 0.0), (1e-4, 1e-30), (2.0, 1.0)]:
        token = sample_token(logits, temperature, top_p, generator)
        assert 0 <= token < len(logits)
    assert sample_token(logits, 2.0, 0.0, generator) == 0  # top_p 0 keeps the most likely token
    assert sample_token(torch.tensor([0.0, 5.0]), float("nan"), 1.0, generator) == 1


def test_streamed_pieces_equal_the_whole_decode_of_random_ids(tokenizer: Any) -> None:
    rng = random.Random(10)
    vocab = len(tokenizer)
    for _ in range(200):
        ids = [rng.randrange(vocab) for _ in range(rng.randrange(1, 80))]
        pieces, _ = assemble(tokenizer, ids)
        # a trailing replacement character (an incomplete last character) is not emitted
        assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True).rstrip("\ufffd"), ids


def test_multibyte_text_comes_out_whole_and_unchanged(tokenizer: Any) -> None:
    for text in TEXTS:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
        pieces, _ = assemble(tokenizer, ids)
        assert "".join(pieces) == text
        assert not any("\ufffd" in piece for piece in pieces), pieces
    slow = CountingTokenizer(tokenizer, fast=False)
    for text in TEXTS:
        pieces, _ = assemble(slow, tokenizer(text, add_special_tokens=False)["input_ids"])
        assert "".join(pieces) == text


def test_stop_strings_never_leak(tokenizer: Any) -> None:
    rng = random.Random(13)
    for text in TEXTS:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for _ in range(20):
            start = rng.randrange(len(text) - 1)
            stop = text[start : start + rng.randrange(1, 6)]
            for candidate in (tokenizer, CountingTokenizer(tokenizer, fast=False)):
                pieces, stopped = assemble(candidate, ids, stop=(stop, "never-there"))
                assert stopped
                assert "".join(pieces) == text[: text.index(stop)]
    pieces, stopped = assemble(
        tokenizer, tokenizer(TEXTS[2], add_special_tokens=False)["input_ids"], ("🙂", "ñ")
    )
    assert stopped and "".join(pieces) == TEXTS[2][: TEXTS[2].index("🙂")]


def test_a_fast_tokenizer_does_not_decode_the_whole_answer_per_token(tokenizer: Any) -> None:
    counting = CountingTokenizer(tokenizer)
    ids = tokenizer(" ".join(TEXTS * 10), add_special_tokens=False)["input_ids"]
    pieces, _ = assemble(counting, ids, stop=("never-there",))
    assert "".join(pieces) == " ".join(TEXTS * 10)
    assert counting.decodes <= 1, f"{counting.decodes} whole-answer decodes for {len(ids)} tokens"
