"""Detokenizing cost of a streamed answer: the old whole-answer decode per token against the engine's
`TextAssembler` (`tokenizers`' incremental `DecodeStream`), side by side in one run.

Feeds the same answer, token by token, to both at 256, 1,024 and 4,096 tokens (the engine's longest
answer) with one stop string held back, checks that both emit the same text, and prints the time per
answer and the ratio old/new. The old approach decodes every token of the answer again for each new
token (quadratic); the new one decodes a few tokens around each new one (linear).

The tokenizer is the demo model's (a byte-level BPE with the Llama-3 special tokens): the one at
`--tokenizer` or, by default, one built the demo model's way from the project's own text (seconds).
Run: `python bench/decode.py` (about half a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from knowledge.paths import GENERAL_FILE, SEED_FILE
from service.engines.decoding import TextAssembler

LENGTHS = (256, 1024, 4096)
STOP = ("\n\nUser:",)


class Assembler(Protocol):
    """What the bench feeds: `add` a token, `flush` at the end."""

    def add(self, token_id: int) -> str: ...

    def flush(self) -> str: ...


class WholeDecodeAssembler:
    """The reference: `TextAssembler` as it was, decoding the whole answer again for every token."""

    def __init__(self, tokenizer: Any, stop: Sequence[str]) -> None:
        self._tokenizer = tokenizer
        self._stop = [s for s in stop if s]
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self.token_ids: list[int] = []
        self._emitted = 0
        self.stopped = False

    def add(self, token_id: int) -> str:
        """Append a token; return the new text that is safe to emit now."""
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
        """The text still held back."""
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


def load_tokenizer(path: str | None) -> Any:
    """The tokenizer at `path`, or one built the demo model's way from the project's text."""
    if path:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)
    from training.demo.tokenizer import build_tokenizer

    corpus: list[str] = []
    for line in GENERAL_FILE.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        corpus += [record["question"], record["answer"]]
    for line in SEED_FILE.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        corpus += [record["question"], record["golden_answer"]]
    return build_tokenizer(corpus, vocab_size=4000)


def answer_ids(tokenizer: Any, corpus_text: str, tokens: int) -> list[int]:
    """`tokens` ids of project text (with some multi-byte characters), repeated as needed."""
    ids: list[int] = tokenizer(corpus_text, add_special_tokens=False, verbose=False)["input_ids"]
    while len(ids) < tokens:
        ids += ids
    return ids[:tokens]


def timed(make: Callable[[], Assembler], ids: list[int], repeats: int) -> tuple[float, str]:
    """Best time of `repeats` runs feeding `ids` to a fresh assembler, and the text it emitted."""
    best, text = float("inf"), ""
    for _ in range(repeats):
        start = time.perf_counter()
        assembler = make()
        pieces = [assembler.add(token) for token in ids]
        pieces.append(assembler.flush())
        best = min(best, time.perf_counter() - start)
        text = "".join(pieces)
    return best, text


def main() -> None:
    """Print old vs new detokenizing time per answer at each length."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokenizer", help="a tokenizer directory (default: the demo tokenizer, built)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tokenizer = load_tokenizer(args.tokenizer)
    records = [json.loads(line) for line in SEED_FILE.read_text(encoding="utf-8").splitlines()]
    text = " ".join(r["golden_answer"] for r in records) + " Biaya ± Rp 10 juta — «selesai» ✓ 🙂 "
    print(f"{'tokens':>7} {'whole decode (ms)':>18} {'DecodeStream (ms)':>18} {'ratio old/new':>14}")
    for length in LENGTHS:
        ids = answer_ids(tokenizer, text, length)
        old, old_text = timed(lambda: WholeDecodeAssembler(tokenizer, STOP), ids, args.repeats)
        new, new_text = timed(lambda: TextAssembler(tokenizer, STOP), ids, args.repeats)
        assert old_text == new_text, "both must emit the same answer"
        print(f"{length:>7} {old * 1000:>18.1f} {new * 1000:>18.1f} {old / new:>14.1f}")


if __name__ == "__main__":
    main()
