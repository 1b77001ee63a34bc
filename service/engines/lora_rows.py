"""Several LoRA adapters in one forward pass, each on its own rows, in place of PEFT's layers.

PEFT's mixed-batch path (`adapter_names`) builds index lists and gathers and scatters the rows of
every adapter in every LoRA layer; on small models that costs more than the base forward itself
(`bench/peft_step.py`). Here the LoRA layers that read one input (a decoder layer's q/k/v
projections, its gate/up projections; every other layer alone) are computed together as one GEMM,
whose weight holds their base weights one under the other and, below them, the A matrices of the
batch's adapters:

    [base outputs | low rank] = x @ [W_q; W_k; W_v; A_stack]^T
    base outputs[adapter rows] += (low rank[adapter rows] * row_mask) @ B_block

`B_block` holds every member's scaled B matrices on the diagonal, and `row_mask[i]` keeps only the
rank columns of row i's adapter (left out when the batch has one adapter). That is the same sum as
`B_a(A_a(x)) * scaling_a` per row, in two calls per group where separate layers take two to three
operations per layer: on a small model a step's time is mostly the number of operations, not
arithmetic. A decode step's few adapter rows (float32 on the CPU) go further: the GEMM keeps the
base weights' width, and `row_delta`'s compiled kernel computes those rows' rank columns and delta
in one call.
The members' own base weights become views of that weight's rows, so the base model is not held
twice; the rows below them are room for the A matrices, grown when a batch needs more. Each member
returns its columns of the group's output. All-base batches run the same GEMM without the room.
Rows must be grouped so that base rows come first: only the rows from the first adapter row on
are touched.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from service.engines import row_delta

_MAX_STACKS = 8  # adapter combinations kept stacked; more are rebuilt on demand
_SAME_INPUT = ({"q_proj", "k_proj", "v_proj"}, {"gate_proj", "up_proj"})
"""Sibling projections that read the same input in the decoder layers of the models we serve."""

_GROUP_WEIGHTS: weakref.WeakKeyDictionary[torch.nn.Module, tuple[torch.Tensor, torch.Tensor | None]]
_GROUP_WEIGHTS = weakref.WeakKeyDictionary()
"""The joint weight and bias of each group, by its first base layer: a `LoraRows` built after an
adapter load finds its groups' weights already joined and reuses them."""


@dataclass
class _Group:
    """LoRA layers that read one input, computed as one GEMM. `weight` is `[outputs + room, in]`:
    the members' base weights one under the other (theirs are views of it), then `room` rows for the
    current adapters' A matrices; `bias` likewise, or None when no member has one."""

    layers: list[Any]
    columns: list[tuple[int, int]]  # each member's output columns (start, stop)
    weight: torch.Tensor
    bias: torch.Tensor | None

    @property
    def outputs(self) -> int:
        """Output features of all members together."""
        return self.columns[-1][1]

    @property
    def room(self) -> int:
        """Rows available for A matrices below the base weights."""
        return self.weight.shape[0] - self.outputs

    def grow(self, room: int) -> None:
        """Make room for `room` rows of A matrices (a new joint weight; the members' views follow)."""
        weight = self.weight.new_zeros((self.outputs + room, self.weight.shape[1]))
        weight[: self.outputs] = self.weight[: self.outputs]
        bias = None
        if self.bias is not None:
            bias = self.bias.new_zeros(self.outputs + room)
            bias[: self.outputs] = self.bias[: self.outputs]
        self.weight, self.bias = weight, bias
        self._point_members()

    def _point_members(self) -> None:
        for layer, (start, stop) in zip(self.layers, self.columns, strict=True):
            base = layer.base_layer
            base.weight.data = self.weight[start:stop]
            if base.bias is not None and self.bias is not None:
                base.bias.data = self.bias[start:stop]
        _GROUP_WEIGHTS[self.layers[0].base_layer] = (self.weight, self.bias)

    @classmethod
    def join(cls, layers: list[Any]) -> _Group:
        """The group of `layers`, their base weights joined into one (or found already joined)."""
        bases = [layer.base_layer for layer in layers]
        columns, start = [], 0
        for base in bases:
            columns.append((start, start + base.out_features))
            start += base.out_features
        joined = _GROUP_WEIGHTS.get(bases[0])
        if joined is not None and _views_of(joined, bases, columns):
            return cls(layers, columns, *joined)
        first = bases[0].weight
        with torch.no_grad():
            weight = torch.cat([base.weight.detach() for base in bases])
            bias = None
            if any(base.bias is not None for base in bases):
                bias = torch.cat(
                    [
                        base.bias.detach() if base.bias is not None else first.new_zeros(base.out_features)
                        for base in bases
                    ]
                )
            group = cls(layers, columns, weight, bias)
            group._point_members()
        return group


def _views_of(
    joined: tuple[torch.Tensor, torch.Tensor | None], bases: list[Any], columns: list[tuple[int, int]]
) -> bool:
    """Whether the base layers' weights are still the rows of a joint weight, in this order."""
    weight, _ = joined
    return all(
        base.weight.data_ptr() == weight[start].data_ptr() and base.weight.shape[0] == stop - start
        for base, (start, stop) in zip(bases, columns, strict=True)
    )


@dataclass(frozen=True)
class _Stacks:
    """One adapter combination's stacked weights per group: its members' A matrices one under the
    other (`[members * R, in]`) and their scaled B matrices block-diagonal (`[members * R, outputs]`),
    also as `row_delta`'s kernel reads them (float32 on the CPU only, else None)."""

    group_a: list[torch.Tensor]
    group_b: list[torch.Tensor]
    group_adapters: list[row_delta.Adapters | None]


@dataclass(frozen=True)
class _Plan:
    """How a group computes its product for one adapter combination: the weight and bias rows to
    multiply by (the base weights, and the A matrices when there are adapters), then, when `width`
    rank columns came out, each adapter row's delta (`B`); `sizes` splits the product into the
    members' columns (and the rank columns). With a `kernel`, a decode step's few adapter rows take
    the `base` plan's GEMM instead, and the kernel adds their delta from `x` and `adapters`."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    outputs: int
    width: int
    b: torch.Tensor | None
    sizes: list[int]
    base: _Plan | None = None
    adapters: row_delta.Adapters | None = None
    kernel: row_delta.Kernel | None = None


class LoraRows:
    """Each adapter's LoRA delta added to its rows of the batch, in place of PEFT's layers."""

    def __init__(self, named_layers: list[tuple[str, Any]], *, compiled: bool = True) -> None:
        """`named_layers`: the model's PEFT LoRA layers with their module names, in module order
        (empty before the first adapter is loaded; see `of`). `compiled`: add a decode step's float32
        CPU deltas with `row_delta`'s compiled kernel where the host can build it (False: always
        torch)."""
        layers = [layer for _, layer in named_layers]
        self._layers = layers
        self._compiled = compiled
        self._ranks: dict[str, int] = {}  # each adapter's largest rank over the layers
        for layer in layers:
            for name, rank in layer.r.items():
                self._ranks[name] = max(rank, self._ranks.get(name, 0))
        self._group_indices = _input_groups(named_layers)
        self._member = {
            index: (g, p) for g, group in enumerate(self._group_indices) for p, index in enumerate(group)
        }
        self._groups: list[_Group] = []
        self._attached = False
        self._stacks: dict[tuple[str, ...], _Stacks] = {}
        self._in_room: tuple[str, ...] | None = None  # the combination whose A matrices fill the rooms
        self._first_row = 0
        self._plans_by_names: dict[tuple[str, ...], list[_Plan]] = {}
        self._plans: list[_Plan] = []
        self._masks: list[torch.Tensor] = []  # per group, when several adapters share the batch
        self._rows_key: tuple[tuple[str, int, int], ...] = ()
        self._outputs: list[list[Any] | None] = [None] * len(self._group_indices)

    @classmethod
    def of(cls, model: torch.nn.Module, *, compiled: bool = True) -> LoraRows:
        """The LoRA layers of a (PEFT) model."""
        from peft.tuners.lora import LoraLayer

        return cls(
            [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)],
            compiled=compiled,
        )

    @property
    def compiled(self) -> bool:
        """Whether a decode step's float32 CPU deltas go to `row_delta`'s compiled kernel (where the
        host builds it) rather than torch's `addmm_`. Settable: `bench/lora_step.py` times both in
        one run."""
        return self._compiled

    @compiled.setter
    def compiled(self, value: bool) -> None:
        if value == self._compiled:
            return
        self._compiled = value
        self._plans_by_names.clear()
        if self._attached:
            self._plans = self._plans_for(_adapter_names(self._rows_key))

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
        """Replace the layers' forward with their group's joint product (PEFT's own layers, on or
        off, are then bypassed), every row base until `set_rows` says otherwise; `detach` gives the
        layers their own forward back. The first attach joins each group's base weights."""
        if self._attached:
            return
        if not self._groups:
            self._groups = [_Group.join([self._layers[i] for i in group]) for group in self._group_indices]
        for index, layer in enumerate(self._layers):
            layer.forward = partial(self._forward, *self._member[index])
        self._attached = True
        self._rows_key = ()
        self._plans = self._plans_for(())
        self._masks = []

    def detach(self) -> None:
        """Give the layers their own forward back."""
        if self._attached:
            for layer in self._layers:
                del layer.forward
            self._attached = False
        self._outputs = [None] * len(self._group_indices)

    def set_rows(self, slices: Seq[tuple[str, int, int]]) -> None:
        """Which rows use which adapter for the next forward passes: `(adapter, start, stop)` for
        every adapter run of the batch (base rows left out; they must all come before these). No
        slices: every row is base. Call after `attach`."""
        key = tuple(slices)
        if key == self._rows_key:
            return
        self._rows_key = key
        self._outputs = [None] * len(self._group_indices)
        names = _adapter_names(slices)
        if names:
            self._fill_rooms(names)
            self._first_row = min(start for _, start, _ in slices)
        self._plans = self._plans_for(names)
        self._masks = []
        if len(names) > 1:
            mask = self._row_mask(slices, names)
            by_members: dict[int, torch.Tensor] = {}
            self._masks = [
                by_members.setdefault(len(group), mask.repeat(1, 1, len(group)))
                for group in self._group_indices
            ]

    def _plans_for(self, names: tuple[str, ...]) -> list[_Plan]:
        """Each group's plan for an adapter combination (none: all rows base), kept for the next
        batches with it: the batch's rows change at every join and finish, its adapters seldom."""
        plans = self._plans_by_names.get(names)
        if plans is None:
            if len(self._plans_by_names) >= _MAX_STACKS:
                self._plans_by_names.clear()
            plans = [self._base_plan(group) for group in self._groups]
            if names:
                stacks = self._stacked(names)
                parts = zip(
                    self._groups, plans, stacks.group_a, stacks.group_b, stacks.group_adapters, strict=True
                )
                plans = [
                    _Plan(
                        weight=group.weight[: group.outputs + a.shape[0]],
                        bias=group.bias[: group.outputs + a.shape[0]] if group.bias is not None else None,
                        outputs=group.outputs,
                        width=a.shape[0],
                        b=b,
                        sizes=[*plan.sizes, a.shape[0]],
                        base=plan,
                        adapters=adapters,
                        kernel=row_delta.compiled() if self._compiled and adapters is not None else None,
                    )
                    for group, plan, a, b, adapters in parts
                ]
            self._plans_by_names[names] = plans
        return plans

    @staticmethod
    def _base_plan(group: _Group) -> _Plan:
        """The plan of a group whose rows are all base: the base weights alone."""
        return _Plan(
            weight=group.weight[: group.outputs],
            bias=group.bias[: group.outputs] if group.bias is not None else None,
            outputs=group.outputs,
            width=0,
            b=None,
            sizes=[stop - start for start, stop in group.columns],
        )

    def _row_mask(self, slices: Seq[tuple[str, int, int]], names: tuple[str, ...]) -> torch.Tensor:
        """`[adapter rows, 1, R]`: 1 on the rank columns of each row's adapter, 0 elsewhere."""
        ranks = [self._ranks[name] for name in names]
        rows = max(stop for _, _, stop in slices) - self._first_row
        like = self._groups[0].weight
        mask = torch.zeros((rows, 1, sum(ranks)), dtype=like.dtype, device=like.device)
        for name, start, stop in slices:
            column = sum(ranks[: names.index(name)])
            rank = ranks[names.index(name)]
            mask[start - self._first_row : stop - self._first_row, :, column : column + rank] = 1
        return mask

    def _fill_rooms(self, names: tuple[str, ...]) -> None:
        """Put the combination's A matrices in the rows below each group's base weights, unless they
        are there already. A room too small grows, and the plans made on the old weights go."""
        if names == self._in_room:
            return
        with torch.no_grad():
            for group, stacked_a in zip(self._groups, self._stacked(names).group_a, strict=True):
                if group.room < stacked_a.shape[0]:
                    group.grow(stacked_a.shape[0])
                    self._plans_by_names.clear()
                group.weight[group.outputs : group.outputs + stacked_a.shape[0]] = stacked_a
        self._in_room = names

    def _stacked(self, names: tuple[str, ...]) -> _Stacks:
        """The stacked weights of an adapter combination, kept for the next batches with it."""
        if names not in self._stacks:
            if len(self._stacks) >= _MAX_STACKS:
                self._stacks.clear()
            per_layer = [self._stack_layer(layer, names) for layer in self._layers]
            group_a = [torch.cat([per_layer[i][0] for i in group]) for group in self._group_indices]
            group_b = [torch.block_diag(*[per_layer[i][1] for i in group]) for group in self._group_indices]
            kernel_reads = group_a[0].dtype == torch.float32 and group_a[0].device.type == "cpu"
            self._stacks[names] = _Stacks(
                group_a=group_a,
                group_b=group_b,
                group_adapters=[
                    row_delta.Adapters.of(a, [per_layer[i][1] for i in group]) if kernel_reads else None
                    for a, group in zip(group_a, self._group_indices, strict=True)
                ],
            )
        return self._stacks[names]

    def _stack_layer(self, layer: Any, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """A layer's adapters' A matrices one under the other (`[R, in]`) and their B matrices times
        their scaling stacked (`[R, out]`), each adapter padded with zeros to its largest rank."""
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
        return torch.cat(a_parts), torch.cat(b_parts, dim=1).t().contiguous()

    def _forward(self, group: int, position: int, x: torch.Tensor) -> torch.Tensor:
        """This layer's columns of its group's product for `x`: computed by the first member that
        sees `x`, taken by the others. A member that reads another input computes its own."""
        kept = self._outputs[group]  # [input, columns, members still to take theirs]
        if kept is None or kept[0] is not x:
            kept = [x, self._product(group, x), len(self._group_indices[group])]
            self._outputs[group] = kept
        kept[2] -= 1
        if not kept[2]:
            self._outputs[group] = None  # every member has its columns: do not hold the activations
        return kept[1][position]

    def _product(self, group: int, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The group's product for `x`, each adapter row's delta added to its base outputs, split into
        the members' columns. A decode step's few adapter rows go to the compiled kernel, after the
        base GEMM; otherwise the GEMM computes every row's rank columns too, and strided views of the
        fresh product address the adapter rows' for torch's `addmm_` (each view is an operation, and
        operations are what a small model's step costs)."""
        plan = self._plans[group]
        if plan.b is None:
            return _split(F.linear(x, plan.weight, plan.bias), plan.sizes)
        rows = x.numel() // x.shape[-1]
        per_row = rows // x.shape[0]  # tokens of each sequence
        first = self._first_row * per_row
        mask = self._masks[group] if self._masks else None
        if plan.kernel is not None and rows - first <= row_delta.MAX_ROWS and x.is_contiguous():
            base, adapters = plan.base, plan.adapters
            assert base is not None and adapters is not None
            product = F.linear(x, base.weight, base.bias)
            plan.kernel(x, product, rows, first, per_row, adapters, mask)
            return _split(product, base.sizes)
        product = F.linear(x, plan.weight, plan.bias)
        columns = product.shape[-1]
        start = first * columns
        low_rank = product.as_strided((rows - first, plan.width), (columns, 1), start + plan.outputs)
        if mask is not None:
            low_rank = (low_rank.view(mask.shape[0], -1, plan.width) * mask).view(rows - first, -1)
        delta_rows = product.as_strided((rows - first, plan.outputs), (columns, 1), start)
        delta_rows.addmm_(low_rank, plan.b)
        return _split(product, plan.sizes)


def _split(product: torch.Tensor, sizes: list[int]) -> tuple[torch.Tensor, ...]:
    """The members' columns of a group's product (and its rank columns, when it has them)."""
    if len(sizes) == 1:
        return (product,)
    return product.split_with_sizes(sizes, -1)


def _adapter_names(slices: Seq[tuple[str, int, int]]) -> tuple[str, ...]:
    """The adapters of a batch's row slices, each once, in order of first appearance."""
    return tuple(dict.fromkeys(name for name, _, _ in slices))


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
