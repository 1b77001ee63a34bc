"""`zantara gpu-smoke` on vLLM's CPU build with the demo model and the demo adapter: the same command
a GPU host runs (the vllm engine started from the `ZANTARA_VLLM_*` settings, base-only and mixed
phases), with fewer, shorter requests and no throughput goal (a CPU's adapter/base ratio is not the
GPU's)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.served import REPO
from tests.vllm.conftest import VLLM_SETTINGS
from tests.vllm.helpers import vllm_python

pytestmark = pytest.mark.slow


def test_gpu_smoke_runs_on_vllms_cpu_build(demo_base_path: Path, demo_adapter_path: Path) -> None:
    command = [str(vllm_python()), "-m", "zantara", "gpu-smoke", "--adapter", str(demo_adapter_path)]
    command += ["--model", str(demo_base_path), "--requests", "10", "--concurrency", "4"]
    command += ["--max-tokens", "16", "--min-ratio", "0"]
    done = subprocess.run(
        command,
        env={**os.environ, **VLLM_SETTINGS},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "gpu-smoke passed" in done.stdout and "adapter / base tokens/s per request" in done.stdout
    assert "base only" in done.stdout and "mixed 20%" in done.stdout
