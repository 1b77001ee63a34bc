"""`row_delta`'s compiled kernel: built on this host, and the same sums as torch's path."""

from __future__ import annotations

import logging
import tempfile

import pytest
import torch

from service.engines import row_delta


def torch_delta(
    x: torch.Tensor,
    product: torch.Tensor,
    first: int,
    per_mask_row: int,
    a: torch.Tensor,
    parts: list[torch.Tensor],
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """What the kernel must compute, in torch: the rows' rank columns, masked, times block-diagonal B."""
    low = x[first:] @ a.t()
    if mask is not None:
        low = low * mask.repeat_interleave(per_mask_row, dim=0)
    expected = product.clone()
    expected[first:] += low @ torch.block_diag(*parts)
    return expected


@pytest.mark.parametrize(
    ("rows", "first", "per_mask_row", "inputs", "outs", "ranks", "masked"),
    [
        (16, 13, 1, 192, [192, 96, 96], 16, False),  # q/k/v of a decode step at 20% on one adapter
        (16, 0, 1, 192, [512, 512], 32, False),  # gate/up, a batch all on two adapters' rows
        (16, 10, 1, 512, [192], 16, False),  # down: six rows, an even number
        (12, 4, 2, 70, [70], 6, True),  # two tokens per sequence, a rank not a multiple of 4, two adapters
        (9, 0, 1, 33, [40, 24], 20, True),  # widths that are not multiples of the kernel's 16 lanes
        (5, 5, 1, 8, [8], 4, False),  # no adapter row at all
    ],
)
def test_the_kernel_adds_what_torch_adds_and_touches_nothing_else(
    rows: int, first: int, per_mask_row: int, inputs: int, outs: list[int], ranks: int, masked: bool
) -> None:
    kernel = row_delta.compiled()
    assert kernel is not None, "this host must build the kernel (a C compiler, `cc`, and Python.h)"
    generator = torch.Generator().manual_seed(rows + inputs + sum(outs))
    width = ranks * len(outs)
    x = torch.randn(rows // per_mask_row, per_mask_row, inputs, generator=generator)
    product = torch.randn(rows // per_mask_row, per_mask_row, sum(outs), generator=generator)
    a = torch.randn(width, inputs, generator=generator)
    parts = [torch.randn(ranks, out, generator=generator) for out in outs]
    mask = None
    if masked:
        mask = torch.zeros((rows - first) // per_mask_row, width)
        mask[::2, : width // 2] = 1  # even sequences on the first adapter, odd on the second
        mask[1::2, width // 2 :] = 1
    flat_x, before = x.view(rows, inputs), product.view(rows, -1).clone()
    expected = torch_delta(flat_x, before, first, per_mask_row, a, parts, mask)
    adapters = row_delta.Adapters.of(a, parts)
    assert (adapters.outputs, adapters.width) == (sum(outs), width)
    kernel(x, product, rows, first, per_mask_row, adapters, mask)
    assert torch.allclose(product.view(rows, -1), expected, atol=1e-3)
    assert torch.equal(product.view(rows, -1)[:first], before[:first]), "base rows stay"
    assert torch.equal(x.view(rows, inputs), flat_x), "the input stays"


def test_a_and_b_that_do_not_agree_on_the_rank_are_refused() -> None:
    with pytest.raises(ValueError, match="rank rows"):
        row_delta.Adapters.of(torch.zeros(16, 8), [torch.zeros(8, 8)])


@pytest.mark.parametrize("missing", ["compiler", "temporary directory"])
def test_without_a_compiler_or_a_place_to_build_it_says_so_and_leaves_deltas_to_torch(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, missing: str
) -> None:
    if missing == "compiler":
        monkeypatch.setenv("CC", "/nonexistent/cc")
    else:
        monkeypatch.setattr(tempfile, "tempdir", "/nonexistent/tmp")
    row_delta.compiled.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=row_delta.__name__):
            assert row_delta.compiled() is None
    finally:
        row_delta.compiled.cache_clear()
    assert "torch's addmm_" in caplog.text
    assert "/nonexistent/" in caplog.text, "the log names what is missing"
