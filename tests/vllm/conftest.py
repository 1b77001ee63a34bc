"""The two services the tests in this package talk to over HTTP, each `zantara serve` in its own process
on the demo model, started once for the package: one on the vllm engine (vLLM's CPU build from
`.venv-vllm`, fp32 so its greedy tokens can be compared) and one on the hf engine (this venv), the
reference. Each has its own var dir and SQLite database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN
from tests.served import Server, demo_env, running_server
from tests.vllm.helpers import vllm_python

VLLM_SETTINGS = {
    "ZANTARA_ENGINE": "vllm",
    "ZANTARA_VLLM_DTYPE": "float32",
    "ZANTARA_VLLM_CPU_KVCACHE_SPACE_GIB": "1",
    "ZANTARA_VLLM_MAX_LORA_RANK": "16",
}
"""The vllm engine as these tests run it: fp32 (the demo model's own dtype), a small KV cache."""


def service_env(var_dir: Path, demo_dirs: tuple[Path, Path], **more: str) -> dict[str, str]:
    """The settings of a `zantara serve` of these tests: the demo model, its own var dir and SQLite
    database, the test admin token, the rollout read fresh and at 0%; `more` adds or overrides."""
    return demo_env(
        var_dir,
        demo_dirs,
        f"sqlite:///{var_dir / 'zantara.db'}",
        ZANTARA_ADMIN_TOKEN=ADMIN_TOKEN,
        ZANTARA_ROLLOUT_CACHE_S="0",
        ZANTARA_DEFAULT_ROLLOUT_PERCENTAGE="0",
        **more,
    )


@pytest.fixture(scope="package")
def vllm_server(demo_dirs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service on the real vLLM engine (fails, never skips, without `make vllm`)."""
    python = vllm_python()
    env = service_env(tmp_path_factory.mktemp("vllm") / "var", demo_dirs, **VLLM_SETTINGS)
    with running_server(env, command=(str(python), "-m", "zantara", "serve")) as server:
        print(f"\nvllm engine service ready in {server.ready_s:.1f}s")
        yield server


@pytest.fixture(scope="package")
def hf_server(demo_dirs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The same service on the hf engine (transformers + PEFT): the reference answers."""
    with running_server(service_env(tmp_path_factory.mktemp("hf") / "var", demo_dirs)) as server:
        yield server


@pytest.fixture
def vllm_client(vllm_server: Server) -> Iterator[httpx.Client]:
    """An HTTP client of the vllm engine's service."""
    with httpx.Client(base_url=vllm_server.url, timeout=120) as client:
        yield client


@pytest.fixture
def hf_client(hf_server: Server) -> Iterator[httpx.Client]:
    """An HTTP client of the hf engine's service."""
    with httpx.Client(base_url=hf_server.url, timeout=120) as client:
        yield client
