"""`row_delta`'s compiled loop: built on this host, and the same sums as torch's `addmm_`."""

from __future__ import annotations

import logging
import tempfile

import pytest
import torch

from service.engines import row_delta


def torch_delta(
    product: torch.Tensor,
    first: int,
    per_mask_row: int,
    parts: list[torch.Tensor],
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """What the loop must compute, in torch: `LoraRows`'s own fallback written out."""
    b = torch.block_diag(*parts)
    width, outputs = b.shape
    expected = product.clone()
    low = expected[first:, outputs : outputs + width]
    if mask is not None:
        low = low * mask.repeat_interleave(per_mask_row, dim=0)
    expected[first:, :outputs] += low @ b
    return expected


@pytest.mark.parametrize(
    ("rows", "first", "per_mask_row", "outs", "ranks", "masked"),
    [
        (16, 13, 1, [192, 96, 96], 16, False),  # q/k/v of a decode step at 20% on one adapter
        (16, 0, 1, [512, 512], 32, False),  # gate/up, a batch all on two adapters' rows
        (12, 4, 2, [70], 6, True),  # two tokens per sequence, a rank not a multiple of 4, two adapters
        (5, 5, 1, [8], 4, False),  # no adapter row at all
    ],
)
def test_the_loop_adds_what_addmm_adds_and_touches_nothing_else(
    rows: int, first: int, per_mask_row: int, outs: list[int], ranks: int, masked: bool
) -> None:
    loop = row_delta.compiled()
    assert loop is not None, "this host must build the loop (a C compiler: `cc`)"
    generator = torch.Generator().manual_seed(rows + sum(outs))
    outputs, width = sum(outs), ranks * len(outs)
    product = torch.randn(rows, outputs + width + 3, generator=generator)  # 3 columns of another member
    parts = [torch.randn(ranks, out, generator=generator) for out in outs]
    mask = None
    if masked:
        mask = torch.zeros((rows - first) // per_mask_row, width)
        mask[::2, : width // 2] = 1  # even sequences on the first adapter, odd on the second
        mask[1::2, width // 2 :] = 1
    expected = torch_delta(product, first, per_mask_row, parts, mask)
    blocks = row_delta.Blocks.of(parts)
    assert (blocks.outputs, blocks.width) == (outputs, width)
    loop(product, first, per_mask_row, blocks, mask)
    assert torch.allclose(product, expected, atol=1e-4)
    assert torch.equal(product[:, outputs:], expected[:, outputs:]), "rank and other columns stay"
    assert torch.equal(product[:first], expected[:first]), "base rows stay"


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
