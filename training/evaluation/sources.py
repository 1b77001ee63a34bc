"""Where answers come from: one protocol for the in-process engine and any OpenAI-compatible server."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from training.evaluation.data import EvalItem

BASE = "base"


@dataclass(frozen=True)
class Variant:
    """One model compared: `key` names it in the report ("base" or NAME@VERSION), `model` is what the
    server is asked for, `adapter` the adapter key (None for the base)."""

    key: str
    model: str
    adapter: str | None = None


TokenNLL = tuple[float, int]
"""A golden answer's summed negative log-likelihood (nats) and its number of tokens."""


class AnswerSource(Protocol):
    """Answers questions greedily with each variant, and scores golden answers when it can."""

    description: str

    async def start(self) -> list[Variant]:
        """Check the models exist and get ready; the base first. Bad input raises `EvalInputError`."""
        ...

    async def answer(self, variant: Variant, item: EvalItem, max_tokens: int) -> str:
        """The variant's greedy (temperature 0) answer to the item's prompt."""
        ...

    async def golden_nll(
        self, variants: Sequence[Variant], items: Sequence[EvalItem], advance: Callable[[], None]
    ) -> dict[str, list[TokenNLL]] | None:
        """Per variant key, the NLL of each item's golden answer; None when log-probs are unavailable."""
        ...

    async def close(self) -> None:
        """Free the model or the connection."""
        ...
