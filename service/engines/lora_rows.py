"""Several LoRA adapters in one forward pass, each on its own rows, with PEFT's layers switched off.

PEFT's mixed-batch path (`adapter_names`) builds index lists and gathers and scatters the rows of
every adapter in every LoRA layer; on small models that costs more than the base forward itself
(`bench/peft_step.py`). Here each LoRA linear layer gets a forward hook that adds the delta of all
the batch's adapters at once: the adapters' A matrices stacked into one `[in, R]` matrix and their
scaled B matrices into one `[R, out]`, so that

    out[rows] += ((x[rows] @ A_stack) * row_mask) @ B_stack

where `row_mask[i]` keeps only the rank columns of row i's adapter (all zero on base rows). That is
the same sum as `B_a(A_a(x)) * scaling_a` per row, in three tensor operations per layer whatever the
number of adapters. Rows must be grouped so that base rows come first: only the rows from the first
adapter row on are touched.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from functools import partial
from typing import Any

import torch

_MAX_STACKS = 8  # adapter combinations kept stacked; more are rebuilt on demand


class LoraRows:
    """Forward hooks adding each adapter's LoRA delta to its rows of the batch."""

    def __init__(self, layers: list[Any]) -> None:
        """`layers`: the model's PEFT LoRA layers (empty before the first adapter is loaded)."""
        self._layers = layers
        self._ranks: dict[str, int] = {}  # each adapter's largest rank over the layers
        for layer in layers:
            for name, rank in layer.r.items():
                self._ranks[name] = max(rank, self._ranks.get(name, 0))
        self._hooks: list[Any] = []
        self._stacks: dict[tuple[str, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._current: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._first_row = 0
        self._row_mask = torch.zeros(0)
        self._rows_key: tuple[tuple[str, int, int], ...] = ()

    @property
    def supported(self) -> bool:
        """Plain LoRA on linear layers only: no DoRA or other variants, no LoRA bias."""
        from peft.tuners.lora import Linear as LoraLinear

        return all(
            isinstance(layer, LoraLinear)
            and not getattr(layer, "lora_variant", None)
            and all(b.bias is None for b in layer.lora_B.values())
            for layer in self._layers
        )

    def attach(self) -> None:
        """Put the hooks on the layers. A hook left on a layer slows every forward, so detach them
        when the batch is not mixed."""
        if not self._hooks:
            self._hooks = [
                layer.register_forward_hook(partial(self._add_delta, index))
                for index, layer in enumerate(self._layers)
            ]

    def detach(self) -> None:
        """Take the hooks off the layers."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def set_rows(self, slices: Seq[tuple[str, int, int]]) -> None:
        """Which rows use which adapter for the next forward passes: `(adapter, start, stop)` for
        every adapter run of the batch (base rows left out; they must all come before these)."""
        key = tuple(slices)
        if key == self._rows_key:
            return
        names = tuple(dict.fromkeys(name for name, _, _ in slices))
        self._current = self._stacked(names)
        ranks = [self._ranks[name] for name in names]
        offsets = [sum(ranks[:i]) for i in range(len(ranks))]
        self._first_row = min(start for _, start, _ in slices)
        rows = max(stop for _, _, stop in slices) - self._first_row
        weight = self._layers[0].base_layer.weight
        mask = torch.zeros((rows, 1, sum(ranks)), dtype=weight.dtype, device=weight.device)
        for name, start, stop in slices:
            column = offsets[names.index(name)]
            rank = ranks[names.index(name)]
            mask[start - self._first_row : stop - self._first_row, :, column : column + rank] = 1
        self._row_mask, self._rows_key = mask, key

    def _stacked(self, names: tuple[str, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the adapters' A matrices side by side (`[in, R]`) and their B matrices times
        their scaling stacked (`[R, out]`), each adapter padded with zeros to its largest rank."""
        if names not in self._stacks:
            if len(self._stacks) >= _MAX_STACKS:
                self._stacks.clear()
            self._stacks[names] = [self._stack_layer(layer, names) for layer in self._layers]
        return self._stacks[names]

    def _stack_layer(self, layer: Any, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        weight = layer.base_layer.weight
        a_parts, b_parts = [], []
        for name in names:
            rank = self._ranks[name]
            a = torch.zeros((rank, layer.in_features), dtype=weight.dtype, device=weight.device)
            b = torch.zeros((layer.out_features, rank), dtype=weight.dtype, device=weight.device)
            if name in layer.lora_A:
                own = layer.r[name]
                a[:own] = layer.lora_A[name].weight.to(weight.dtype)
                b[:, :own] = layer.lora_B[name].weight.to(weight.dtype) * layer.scaling[name]
            a_parts.append(a)
            b_parts.append(b)
        return torch.cat(a_parts).t().contiguous(), torch.cat(b_parts, dim=1).t().contiguous()

    def _add_delta(
        self, index: int, module: Any, args: tuple[Any, ...], output: torch.Tensor
    ) -> torch.Tensor:
        a_stack, b_stack = self._current[index]
        x = args[0][self._first_row :]
        low_rank = torch.matmul(x.to(a_stack.dtype), a_stack)
        low_rank.mul_(self._row_mask)
        rows = output[self._first_row :]
        rows.view(-1, rows.shape[-1]).addmm_(low_rank.view(-1, low_rank.shape[-1]), b_stack)
        return output
