"""The LoRA delta of a decode step's few adapter rows, added by a small compiled kernel (`row_delta.c`).

`LoraRows` computes a decode step's base outputs with torch's GEMM, then hands the adapter rows to
this kernel: their rank columns (`x @ A^T`) and their delta (`rank columns @ B`, B's diagonal blocks
alone) in one call. On torch's path the GEMM also computes the rank columns of every base row, and
`addmm_` on two strided views adds the delta over the whole block-diagonal B; what that costs inside
a small model's step is the calls and the bytes, not the arithmetic (bench/lora_step.py times both
paths side by side; bench/RESULTS.md, Sessions 12 and 13).

The kernel is a CPython extension module compiled by the host's C compiler (`$CC`, else `cc`) for the
host's own CPU (`-march=native`, so the same source vectorises for AVX-512 or AVX2 wherever it runs)
against this Python's headers, the first time `compiled()` is called (the hf engine calls it while it
loads the model), in a private temporary directory, then imported: about 0.4 s, once per process,
nothing installed or cached. A METH_FASTCALL function taking plain ints: a `ctypes` call costs a few
microseconds more per group inside a step. Where no compiler or no `Python.h` is found (the slim
`cpu-demo` image has no compiler), or the temporary directory cannot take or load the module
(read-only, `noexec`), `compiled()` says why in the log and returns None, and `LoraRows` keeps torch's
path, which computes the same sums.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import logging
import os
import shlex
import subprocess
import sysconfig
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("row_delta.c")
MODULE = "_row_delta"
MAX_ROWS = 16
"""Largest number of adapter rows (tokens) given to the kernel: up to here it beats torch's GEMM (a
decode step's adapter rows), beyond it (prefill) torch's blocked, threaded GEMM is faster."""


@dataclass(frozen=True)
class Adapters:
    """A group's adapters as the kernel reads them: every member's A matrices transposed side by side
    (`a_t`, `[in, width]`), each member's scaled B (`[ranks, outs]`) flat one after another in `b`,
    and `descriptor`, the int64 array `row_delta.c` reads its sizes and addresses from (in, outputs,
    width, members, the addresses of `a_t` and `b`, then each member's rank start, ranks, output
    start and outputs); `address` is the descriptor's. The tensors live as long as this object."""

    a_t: torch.Tensor
    b: torch.Tensor
    descriptor: torch.Tensor
    address: int

    @property
    def width(self) -> int:
        """Rank columns of all members and adapters together."""
        return int(self.descriptor[2])

    @property
    def outputs(self) -> int:
        """Output columns of all members together."""
        return int(self.descriptor[1])

    @classmethod
    def of(cls, a: torch.Tensor, parts: list[torch.Tensor]) -> Adapters:
        """The kernel's view of a group: `a` `[width, in]` (members' stacked A, one under the other)
        and the members' `[ranks, outs]` B matrices, in member order, float32 on the CPU."""
        a_t = a.t().contiguous()
        places, rows, columns = [], 0, 0
        for part in parts:
            places += [rows, part.shape[0], columns, part.shape[1]]
            rows, columns = rows + part.shape[0], columns + part.shape[1]
        if rows != a.shape[0]:
            raise ValueError(f"A has {a.shape[0]} rank rows, the B blocks {rows}")
        b = torch.cat([part.contiguous().flatten() for part in parts])
        header = [a.shape[1], columns, rows, len(parts), a_t.data_ptr(), b.data_ptr()]
        descriptor = torch.tensor(header + places, dtype=torch.int64)
        return cls(a_t, b, descriptor, descriptor.data_ptr())


Kernel = Callable[[torch.Tensor, torch.Tensor, int, int, int, Adapters, torch.Tensor | None], None]
"""`add(x, product, rows, first_row, per_mask_row, adapters, mask)`: see `compiled`."""


def _build(compiler: list[str]) -> Any:
    """The `_row_delta` module of `row_delta.c`, built by `compiler` against this Python's headers in
    a private temporary folder and imported (the file may go with its folder once loaded)."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    with tempfile.TemporaryDirectory(prefix="zantara-row-delta-") as folder:
        library = Path(folder) / f"{MODULE}{suffix}"
        command = [*compiler, "-O3", "-march=native", "-shared", "-fPIC"]
        command += [f"-I{sysconfig.get_paths()['include']}", "-o", str(library), str(SOURCE)]
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)
        spec = importlib.util.spec_from_file_location(MODULE, library)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {library}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


@functools.cache
def compiled() -> Kernel | None:
    """The compiled kernel as `add(x, product, rows, first_row, per_mask_row, adapters, mask)`, or
    None (logged) when this host cannot build it. `x` (`[..., in]`) and `product` (`[..., outputs]`,
    its base outputs) are contiguous float32 CPU tensors of the same `rows`; each row from `first_row` on
    (at most `MAX_ROWS` of them) gets `(x @ adapters.a_t) * mask[(row - first_row) // per_mask_row]`
    times the block-diagonal B of `adapters` added to it; `mask` contiguous `[.., width]` float32,
    or None when the batch has one adapter."""
    compiler = shlex.split(os.environ.get("CC") or "cc")
    try:
        module = _build(compiler)
    except (OSError, ImportError, subprocess.SubprocessError) as error:  # no compiler, no headers, no dir
        detail = getattr(error, "stderr", None) or error
        command = shlex.join(compiler)
        log.warning("LoRA row delta: torch's addmm_, no compiled kernel (%s): %s", command, detail)
        return None
    log.info("LoRA row delta: compiled kernel loaded (%s)", compiler[0])
    function = module.add

    def add(
        x: torch.Tensor,
        product: torch.Tensor,
        rows: int,
        first_row: int,
        per_mask_row: int,
        adapters: Adapters,
        mask: torch.Tensor | None,
    ) -> None:
        masked = mask.data_ptr() if mask is not None else 0
        function(x.data_ptr(), product.data_ptr(), first_row, rows, per_mask_row, masked, adapters.address)

    return add
