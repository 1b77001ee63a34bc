"""Several LoRA adapters in one forward pass, each on its own rows, in place of PEFT's layers.

PEFT's mixed-batch path (`adapter_names`) builds index lists and gathers and scatters the rows of
every adapter in every LoRA layer; on small models that costs more than the base forward itself
(`bench/peft_step.py`). Here each LoRA linear layer's forward is replaced by its base layer plus the
delta of all the batch's adapters at once: the adapters' A matrices stacked into one `[in, R]` matrix
and their scaled B matrices into one `[R, out]`, so that

    out[rows] += ((x[rows] @ A_stack) * row_mask) @ B_stack

where `row_mask[i]` keeps only the rank columns of row i's adapter (left out when the batch has one
adapter). That is the same sum as `B_a(A_a(x)) * scaling_a` per row. Layers that read the same input
(a decoder layer's q/k/v projections, its gate/up projections) share one `x @ A` product: their A
stacks sit side by side, the first of them to see an input computes it for all, and the others take
their columns of it. All-base batches run the same replaced forward with no adapter rows: the base
layer alone, called as a function (PEFT's wrapper and two module calls per layer cost more than this
small model's matmuls). Rows must be grouped so that base rows come first: only the rows from the
first adapter row on are touched.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

_MAX_STACKS = 8  # adapter combinations kept stacked; more are rebuilt on demand
_SAME_INPUT = ({"q_proj", "k_proj", "v_proj"}, {"gate_proj", "up_proj"})
"""Sibling projections that read the same input in the decoder layers of the models we serve."""


@dataclass(frozen=True)
class _Stacks:
    """One adapter combination's stacked weights: per group of layers the A stacks side by side
    (`[in, members * R]`), per layer its B stack (`[R, out]`)."""

    group_a: list[torch.Tensor]
    layer_b: list[torch.Tensor]


class LoraRows:
    """Each adapter's LoRA delta added to its rows of the batch, in place of PEFT's layers."""

    def __init__(self, named_layers: list[tuple[str, Any]]) -> None:
        """`named_layers`: the model's PEFT LoRA layers with their module names, in module order
        (empty before the first adapter is loaded; see `of`)."""
        layers = [layer for _, layer in named_layers]
        self._layers = layers
        self._ranks: dict[str, int] = {}  # each adapter's largest rank over the layers
        for layer in layers:
            for name, rank in layer.r.items():
                self._ranks[name] = max(rank, self._ranks.get(name, 0))
        self._groups = _input_groups(named_layers)
        member = {index: (g, p) for g, group in enumerate(self._groups) for p, index in enumerate(group)}
        self._plan = [  # per layer: base weight, base bias, input group, place in the group
            (layer.base_layer.weight, layer.base_layer.bias, *member[index])
            for index, layer in enumerate(layers)
        ]
        self._attached = False
        self._stacks: dict[tuple[str, ...], _Stacks] = {}
        self._current = _Stacks([], [])
        self._rank_width = 0
        self._first_row = 0
        self._group_masks: list[torch.Tensor | None] = []
        self._rows_key: tuple[tuple[str, int, int], ...] = ()
        self._seen: list[tuple[torch.Tensor, tuple[torch.Tensor, ...]] | None] = [None] * len(self._groups)

    @classmethod
    def of(cls, model: torch.nn.Module) -> LoraRows:
        """The LoRA layers of a (PEFT) model."""
        from peft.tuners.lora import LoraLayer

        return cls(
            [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]
        )

    @property
    def supported(self) -> bool:
        """Plain LoRA on plain linear layers only: no DoRA or other variants, no LoRA bias, no
        quantised base layer."""
        from peft.tuners.lora import Linear as LoraLinear

        return all(
            isinstance(layer, LoraLinear)
            and type(layer.base_layer) is torch.nn.Linear
            and not getattr(layer, "lora_variant", None)
            and all(b.bias is None for b in layer.lora_B.values())
            for layer in self._layers
        )

    def attach(self) -> None:
        """Replace the layers' forward with base layer plus deltas (PEFT's own layers, on or off, are
        then bypassed); `detach` gives the layers their own forward back."""
        if not self._attached:
            for index, layer in enumerate(self._layers):
                layer.forward = partial(self._forward, index)
            self._attached = True

    def detach(self) -> None:
        """Give the layers their own forward back."""
        if self._attached:
            for layer in self._layers:
                del layer.forward
            self._attached = False
        self._seen = [None] * len(self._groups)

    def set_rows(self, slices: Seq[tuple[str, int, int]]) -> None:
        """Which rows use which adapter for the next forward passes: `(adapter, start, stop)` for
        every adapter run of the batch (base rows left out; they must all come before these). No
        slices: every row is base."""
        key = tuple(slices)
        if key == self._rows_key:
            return
        self._rows_key = key
        self._seen = [None] * len(self._groups)
        if not slices:
            return
        names = tuple(dict.fromkeys(name for name, _, _ in slices))
        self._current = self._stacked(names)
        ranks = [self._ranks[name] for name in names]
        self._rank_width = sum(ranks)
        self._first_row = min(start for _, start, _ in slices)
        self._group_masks = [None] * len(self._groups)
        if len(names) > 1:
            rows = max(stop for _, _, stop in slices) - self._first_row
            weight = self._layers[0].base_layer.weight
            mask = torch.zeros((rows, 1, self._rank_width), dtype=weight.dtype, device=weight.device)
            for name, start, stop in slices:
                column = sum(ranks[: names.index(name)])
                rank = self._ranks[name]
                mask[start - self._first_row : stop - self._first_row, :, column : column + rank] = 1
            self._group_masks = [mask.repeat(1, 1, len(group)) for group in self._groups]

    def _stacked(self, names: tuple[str, ...]) -> _Stacks:
        """The stacked weights of an adapter combination, kept for the next batches with it."""
        if names not in self._stacks:
            if len(self._stacks) >= _MAX_STACKS:
                self._stacks.clear()
            per_layer = [self._stack_layer(layer, names) for layer in self._layers]
            self._stacks[names] = _Stacks(
                group_a=[torch.cat([per_layer[i][0] for i in group], dim=1) for group in self._groups],
                layer_b=[b for _, b in per_layer],
            )
        return self._stacks[names]

    def _stack_layer(self, layer: Any, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """A layer's adapters' A matrices side by side (`[in, R]`) and their B matrices times their
        scaling stacked (`[R, out]`), each adapter padded with zeros to its largest rank."""
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

    def _low_rank(self, group: int, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """`(x[rows] @ A) * row_mask` for each layer of `group` (`[tokens of the adapter rows, R]`),
        computed once per input."""
        seen = self._seen[group]
        if seen is not None and seen[0] is x:
            return seen[1]
        rows = x[self._first_row :]
        low_rank = torch.mm(rows.reshape(-1, rows.shape[-1]), self._current.group_a[group])
        mask = self._group_masks[group]
        if mask is not None:
            low_rank.view(rows.shape[0], -1, low_rank.shape[-1]).mul_(mask)
        width = self._rank_width
        parts = tuple(low_rank[:, i : i + width] for i in range(0, low_rank.shape[1], width))
        self._seen[group] = (x, parts)
        return parts

    def _forward(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """The base layer's output plus, on the adapter rows, their adapter's delta. The base layer is
        applied as a function: a module call costs more than this small model's matmul."""
        weight, bias, group, position = self._plan[index]
        output = F.linear(x, weight, bias)
        if not self._rows_key:
            return output
        low_rank = self._low_rank(group, x)[position]
        flat = output.view(-1, output.shape[-1])
        flat[flat.shape[0] - low_rank.shape[0] :].addmm_(low_rank, self._current.layer_b[index])
        return output


def _input_groups(named_layers: list[tuple[str, Any]]) -> list[list[int]]:
    """The layers that read one input, as runs of consecutive layers under one parent module whose
    names are siblings in `_SAME_INPUT` (q/k/v, gate/up in Llama, Mistral, Qwen and Gemma); every other
    layer alone. Sharing is checked on every call, so a member that reads another input all the same
    computes its own product."""
    groups: list[list[int]] = []
    previous: tuple[str, int] | None = None
    for index, (name, _) in enumerate(named_layers):
        parent, _, leaf = name.rpartition(".")
        family = next((i for i, names in enumerate(_SAME_INPUT) if leaf in names), None)
        key = (parent, family) if family is not None else None
        if groups and key is not None and key == previous:
            groups[-1].append(index)
        else:
            groups.append([index])
        previous = key
    return groups
