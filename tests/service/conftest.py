"""The chat API suites run on every engine: `hf` in process, and `openai` fronting a real second process
of this service (hf engine, on a free port), so the remote engine passes the same routing, stickiness,
streaming, usage, error and feedback tests.

A test that only the hf engine can pass is marked `@pytest.mark.hf_only("reason")`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from tests.conftest import running
from tests.served import demo_env, running_server

ENGINE_SUITES = ("test_chat_api", "test_feedback_api")
"""Modules whose `app_client` tests run once per engine."""
UPSTREAM_KEY = "upstream-key-0123456789abcdef"
"""The upstream's API key and admin token at once, as `vllm serve --api-key` takes one key for both."""
UPSTREAM_CACHE_TOKENS = 512
"""The upstream's prefix cache: small, so one long prompt evicts every earlier test's prompts."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hf_only(reason): runs on the hf engine only (the reason says why)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if "app_client" in metafunc.fixturenames and module in ENGINE_SUITES:
        engines = ["hf"] if metafunc.definition.get_closest_marker("hf_only") else ["hf", "openai"]
        metafunc.parametrize("engine_name", engines, indirect=True)


@pytest.fixture
def engine_name(request: pytest.FixtureRequest) -> str:
    """The engine the app under test runs (`hf` unless the test is parametrized over engines)."""
    return str(getattr(request, "param", "hf"))


@pytest.fixture(scope="session")
def hf_upstream(demo_dirs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`zantara serve` with the hf engine and the demo model, in its own process: the `.../v1` URL."""
    var_dir = tmp_path_factory.mktemp("upstream")
    env = demo_env(
        var_dir,
        demo_dirs,
        f"sqlite:///{var_dir / 'upstream.db'}",
        ZANTARA_API_KEYS=UPSTREAM_KEY,
        ZANTARA_ADMIN_TOKEN=UPSTREAM_KEY,
        ZANTARA_MAX_STREAMS_PER_KEY="0",
        ZANTARA_PREFIX_CACHE_TOKENS=str(UPSTREAM_CACHE_TOKENS),
    )
    with running_server(env, timeout_s=600) as server:
        yield f"{server.url}/v1"


async def evict_prefix_cache(upstream: str) -> None:
    """Make the upstream's prefix cache as cold as a fresh engine's: one prompt longer than the cache,
    sharing no prefix with the tests' prompts, pushes every stored block out."""
    words = " ".join(f"kosong{i}" for i in range(200))
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {UPSTREAM_KEY}"}, timeout=120) as client:
        response = await client.post(
            f"{upstream}/chat/completions",
            json={
                "model": "zantara-demo-base",
                "messages": [{"role": "system", "content": words}, {"role": "user", "content": "ok"}],
                "max_tokens": 1,
            },
        )
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] > UPSTREAM_CACHE_TOKENS


@pytest.fixture
async def app_client(  # type: ignore[no-untyped-def]
    settings_factory, database_url: str, engine_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """A ready service on a fresh database: the hf engine in process, or the openai engine in front of
    the upstream process (its adapters discovered there, its prefix cache emptied first)."""
    overrides: dict[str, object] = {"database_url": database_url}
    if engine_name == "openai":
        upstream = request.getfixturevalue("hf_upstream")
        await evict_prefix_cache(upstream)
        overrides |= {
            "engine": "openai",
            "upstream_urls": [upstream],
            "upstream_api_key": UPSTREAM_KEY,
            "adapters_dir": tmp_path / "no-local-adapters",
            "build_demo_adapter": False,
        }
    app = create_app(settings_factory(**overrides))
    async with running(app) as client:
        yield client
