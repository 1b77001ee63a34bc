"""The router tier as the chart ships it (`helm/zantara/ci/router-values.yaml`): an engine process and a
router process (`zantara serve`, each on a free port), configured from the rendered manifests' container
environments. Replaced only where a cluster cannot be had here: the GPU engine and the 8B base model
(the hf engine and the demo model), the database (one SQLite file, migrated by the first process as the
chart's migration Job would), the volumes' paths, the engine Service's URL and the bind address. Two
router processes, as the chart's autoscaler keeps at least two.

Hot-loading a registered version through the router, 64 concurrent streams through it, and a rating sent
to the other router replica the moment a streamed answer's `[DONE]` arrives."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from database.engine import create_db_engine, make_session_factory
from service.adapters import register_adapter
from service.engines.base import AdapterInfo
from service.settings import DEMO_BASE_MODEL
from tests.deploy.render import container_environment, render_chart
from tests.served import running_server

CHART = Path(__file__).resolve().parents[2] / "helm" / "zantara"
API_KEYS = [f"backend-key-{i}-0123456789" for i in range(8)]
ROUTER_KEY = "router-key-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
MESSAGES = [{"role": "user", "content": "Apa itu KITAS?"}]


@dataclass(frozen=True)
class Tier:
    """The running routers and engine: their base URLs, where new adapter versions are put, and the
    database they share."""

    router: str
    other_router: str
    engine: str
    adapters: Path
    database_url: str


def rendered_env(container_name: str, database_url: str) -> dict[str, str]:
    """The environment of one container of the router-values rendering, its Secret (managed outside
    the chart there) holding `database_url`, API keys and the router's key among them."""
    secret = {
        "admin-token": ADMIN_TOKEN,
        "user-hash-key": "user-hash-key-0123456789abcdef",
        "database-url": database_url,
        "api-keys": ",".join([*API_KEYS, ROUTER_KEY]),
        "upstream-api-key": ROUTER_KEY,
    }
    values = yaml.safe_load((CHART / "ci" / "router-values.yaml").read_text())
    rendered = render_chart(CHART, values)
    for manifest in rendered.manifests:
        if manifest["kind"] != "Deployment":
            continue
        for container in manifest["spec"]["template"]["spec"]["containers"]:
            if container["name"] == container_name:
                return container_environment(rendered, container, secret)
    raise LookupError(container_name)


def local(env: dict[str, str], var_dir: Path, demo_dirs: tuple[Path, Path], **more: str) -> dict[str, str]:
    """`env` with what cannot work here replaced: the bind address, the var volume, the demo model."""
    return {
        **env,
        "ZANTARA_HOST": "127.0.0.1",
        "ZANTARA_VAR_DIR": str(var_dir),
        "ZANTARA_MODELS_DIR": str(demo_dirs[0]),
        **more,
    }


@pytest.fixture(scope="module")
def tier(
    demo_dirs: tuple[Path, Path], demo_adapter_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Tier]:
    """The engine process, then two router processes in front of it, on one database."""
    root = tmp_path_factory.mktemp("router-tier")
    database_url = f"sqlite:///{root / 'zantara.db'}"
    adapters = root / "adapters"
    shutil.copytree(demo_adapter_path, adapters / "zantara-demo" / "v1")
    engine_env = local(
        rendered_env("engine", database_url),
        root / "engine-var",
        demo_dirs,
        ZANTARA_ENGINE="hf",
        ZANTARA_BASE_MODEL=DEMO_BASE_MODEL,
        ZANTARA_ADAPTERS_DIR=str(adapters),
        ZANTARA_MIGRATE_ON_START="true",
    )
    with running_server(engine_env, timeout_s=600) as engine:
        routers = [
            local(
                rendered_env("router", database_url),
                root / f"router-var-{i}",
                demo_dirs,
                ZANTARA_UPSTREAM_URLS=f"{engine.url}/v1",
            )
            for i in range(2)
        ]
        with running_server(routers[0], timeout_s=300) as router, running_server(routers[1]) as other:
            yield Tier(router.url, other.url, engine.url, adapters, database_url)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def stream_answer(client: httpx.AsyncClient, key: str, user: str) -> tuple[int, str | None]:
    """One streamed chat through the router: its status, and the answer's id once `[DONE]` arrived."""
    body = {"model": "zantara", "messages": MESSAGES, "max_tokens": 6, "stream": True, "user": user}
    answer_id, done = None, False
    async with client.stream("POST", "/v1/chat/completions", json=body, headers=auth(key)) as response:
        if response.status_code != 200:
            await response.aread()
            return response.status_code, None
        async for line in response.aiter_lines():
            payload = line.removeprefix("data:").strip()
            if payload == "[DONE]":
                done = True
            elif payload.startswith("{"):
                chunk: dict[str, Any] = json.loads(payload)
                if "error" in chunk:
                    return 500, None
                answer_id = chunk["id"]
    return 200, answer_id if done else None


async def test_a_registered_version_hot_loads_through_the_router(tier: Tier, demo_adapter_path: Path) -> None:
    """`PUT /admin/rollout` on the router (what `zantara retrain` does) pushes the new version to the
    engine pods with their admin token: 200, and the engine serves it."""
    path = tier.adapters / "zantara-demo" / "v9"
    shutil.copytree(demo_adapter_path, path)
    database = create_db_engine(tier.database_url)
    register_adapter(
        make_session_factory(database), AdapterInfo("zantara-demo", "v9", str(path)), DEMO_BASE_MODEL
    )
    database.dispose()
    admin = {**auth(ADMIN_TOKEN), "X-Zantara-Actor": "pytest"}
    async with httpx.AsyncClient(base_url=tier.router, timeout=60) as client:
        changed = await client.put(
            "/admin/rollout", json={"percentage": 10, "adapter": "zantara-demo@v9"}, headers=admin
        )
        assert changed.status_code == 200, changed.text
        assert "zantara-demo@v9" in changed.json()["adapters_loaded"]
    async with httpx.AsyncClient(base_url=tier.engine, timeout=60) as engine:
        models = (await engine.get("/v1/models", headers=auth(ROUTER_KEY))).json()["data"]
    assert "zantara-demo@v9" in [m["id"] for m in models]


async def test_64_concurrent_streams_through_the_router_all_finish(tier: Tier) -> None:
    """The engine pods see every stream under the router's one key: none is refused there."""
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=tier.router, timeout=120, limits=limits) as client:
        results = await asyncio.gather(
            *(stream_answer(client, API_KEYS[i % len(API_KEYS)], f"user-{i}") for i in range(64))
        )
    assert [status for status, _ in results] == [200] * 64
    assert all(answer_id for _, answer_id in results)


async def test_a_rating_sent_as_the_stream_ends_finds_its_answer(tier: Tier) -> None:
    """Answers streamed through one router replica (openai engine), 16 at a time, each rated through the
    other replica the moment its `[DONE]` arrives, with no retry: every rating is accepted (the answer
    is stored before its `[DONE]`, not only handed to this replica's writer)."""

    async def stream_and_rate(i: int) -> int:
        status, answer_id = await stream_answer(client, API_KEYS[i % len(API_KEYS)], f"rater-{i}")
        assert status == 200 and answer_id
        rating = await other.post(
            "/v1/feedback",
            json={"response_id": answer_id, "rating": 4},
            headers=auth(API_KEYS[i % len(API_KEYS)]),
        )
        return rating.status_code

    async with (
        httpx.AsyncClient(base_url=tier.router, timeout=60) as client,
        httpx.AsyncClient(base_url=tier.other_router, timeout=60) as other,
    ):
        statuses = [
            s for _ in range(2) for s in await asyncio.gather(*(stream_and_rate(i) for i in range(16)))
        ]
    assert set(statuses) <= {200, 202}, statuses
