"""The LoRA delta of a decode step's few adapter rows, added by a small compiled loop (`row_delta.c`).

`LoraRows` computes each adapter row's rank columns in the same GEMM as its base outputs, then adds
`rank columns @ B` to the base outputs. For the handful of adapter rows of a decode step that last
product is tiny, and what it costs is calls and memory: torch's path is two strided views and an
`addmm_` over the whole block-diagonal B (zeros included), about 12 us per group inside a step; the
loop is one foreign call over B's diagonal blocks alone, about 8 us. On the demo model that is 0.07
ms of a 5 ms step with one adapter, more with two (`bench/lora_step.py` times both paths side by
side; bench/RESULTS.md, Session 12).

The loop is compiled by the host's C compiler (`$CC`, else `cc`) for the host's own CPU
(`-march=native`, so the same source vectorises for AVX-512 or AVX2 wherever it runs) the first time
`compiled()` is called (the hf engine calls it while it loads the model), in a private temporary
directory, then loaded with `ctypes`: about 0.1 s, once per process, and nothing to install or cache.
Where no compiler is found (the slim `cpu-demo` image), or the temporary directory cannot take or run
the library (read-only, `noexec`), `compiled()` says why in the log and returns None, and `LoraRows`
keeps torch's `addmm_`, which computes the same sums.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("row_delta.c")
MAX_ROWS = 16
"""Largest number of product rows (tokens) given to the loop: up to here it beats torch's GEMM (a
decode step's adapter rows), beyond it (prefill) torch's blocked, threaded GEMM is faster."""


@dataclass(frozen=True)
class Blocks:
    """A group's block-diagonal B for the loop: each member's scaled B (`[ranks, outs]`, ranks one
    after another, outputs one after another) flat in `b`, and `layout` `[members, 4]`: each
    member's (rank start, ranks, output start, outputs); `width` rank columns and `outputs` output
    columns in all."""

    b: torch.Tensor
    layout: torch.Tensor
    width: int
    outputs: int

    @classmethod
    def of(cls, parts: list[torch.Tensor]) -> Blocks:
        """The blocks of members' `[ranks, outs]` B matrices, in member order."""
        rows, columns, places = 0, 0, []
        for part in parts:
            places.append((rows, part.shape[0], columns, part.shape[1]))
            rows, columns = rows + part.shape[0], columns + part.shape[1]
        flat = torch.cat([part.contiguous().flatten() for part in parts])
        return cls(flat, torch.tensor(places, dtype=torch.int64), rows, columns)


RowDelta = Callable[[torch.Tensor, int, int, Blocks, torch.Tensor | None], None]


def _build(compiler: list[str]) -> Any:
    """`row_delta` of `row_delta.c` built by `compiler` in a private temporary folder and loaded (the
    file may go with its folder once loaded)."""
    with tempfile.TemporaryDirectory(prefix="zantara-row-delta-") as folder:
        library = Path(folder) / "row_delta.so"
        command = [*compiler, "-O3", "-march=native", "-shared", "-fPIC", "-o", str(library), str(SOURCE)]
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)
        return ctypes.CDLL(str(library)).row_delta


@functools.cache
def compiled() -> RowDelta | None:
    """The compiled loop as `add(product, first_row, per_mask_row, blocks, mask)`, or None (logged)
    when this host cannot compile it. `product` is a contiguous float32 CPU tensor whose rows from
    `first_row` on (at most `MAX_ROWS` of them) get their rank columns
    `product[:, blocks.outputs:blocks.outputs + blocks.width]` (times `mask`'s row for every
    `per_mask_row` rows) times the block-diagonal B of `blocks` added to their first `blocks.outputs`
    columns; `blocks` and `mask` likewise float32 (`mask` contiguous `[rows / per_mask_row, width]`)."""
    compiler = shlex.split(os.environ.get("CC") or "cc")
    try:
        function = _build(compiler)
    except (OSError, subprocess.SubprocessError) as error:  # no compiler, no temp dir, a noexec /tmp
        detail = getattr(error, "stderr", None) or error
        log.warning("LoRA row delta: torch's addmm_, no compiled loop (%s): %s", shlex.join(compiler), detail)
        return None
    function.restype = None
    function.argtypes = [
        ctypes.c_void_p,
        *[ctypes.c_int64] * 5,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_void_p,
    ]
    log.info("LoRA row delta: compiled loop loaded (%s)", compiler[0])

    def add(
        product: torch.Tensor,
        first_row: int,
        per_mask_row: int,
        blocks: Blocks,
        mask: torch.Tensor | None,
    ) -> None:
        columns = product.shape[-1]
        rows = product.numel() // columns - first_row
        start = product.data_ptr() + first_row * columns * product.element_size()
        function(
            start,
            columns,
            rows,
            per_mask_row,
            blocks.outputs,
            blocks.width,
            blocks.b.data_ptr(),
            blocks.layout.data_ptr(),
            blocks.layout.shape[0],
            mask.data_ptr() if mask is not None else None,
        )

    return add
