"""Shared fixtures: a throw-away PostgreSQL, the tiny demo models (built once), a live app per test."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from filelock import FileLock
from sqlalchemy.orm import Session, sessionmaker
from sse_starlette.sse import AppStatus
from xdist.scheduler import LoadScopeScheduling

from database.engine import DirectConnections, create_db_engine, direct_connections, make_session_factory
from database.migrate import upgrade
from knowledge.paths import GENERAL_FILE, SEED_FILE
from service.app import create_app
from service.settings import Settings
from tests.postgres import free_port, fresh_database, session_server
from training.demo.model import DEMO_ADAPTER

REPO = Path(__file__).resolve().parents[1]
DEMO_BUILD_WAIT_S = 1800
"""How long a pytest-xdist worker waits for another one's build of the demo models before failing."""


def _demo_fingerprint() -> str:
    """Changes whenever the demo model's code or data change, so the cached build is rebuilt."""
    digest = hashlib.sha256(os.environ.get("ZANTARA_DEMO_SEED", "default").encode())
    sources = sorted((REPO / "training").glob("demo_*.py")) + sorted((REPO / "training").glob("progress.py"))
    sources += [
        REPO / "training" / "prompts.py",
        SEED_FILE,
        GENERAL_FILE,
    ]
    for path in sources:
        digest.update(path.name.encode())
        digest.update(path.read_bytes() if path.is_file() else b"missing")
    return digest.hexdigest()[:16]


def pytest_configure(config: pytest.Config) -> None:
    """A pytest-xdist worker, and every process it starts (PostgreSQL aside: `tests.postgres`), runs on
    its own share of the CPUs (one core each under `make test`'s two workers on two cores): the torch
    threads of two workers, their servers and trainings, never wait on each other on a shared core (the
    wheel test's demo build, two threads beside another busy worker, took over 7 minutes; on a core of
    its own, 71 s)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return
    import torch

    index, count = int(worker.removeprefix("gw")), int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    cpus = sorted(os.sched_getaffinity(0))
    share = set(cpus[index::count]) if count <= len(cpus) else {cpus[index % len(cpus)]}
    for thread in os.listdir("/proc/self/task"):  # the threads running already; new ones inherit it
        with contextlib.suppress(ProcessLookupError):  # one that ended meanwhile
            os.sched_setaffinity(int(thread), share)
    torch.set_num_threads(len(share))


ONE_WORKER = ("tests/vllm/",)
"""Folders whose tests all run on one pytest-xdist worker: tests/vllm's services on vLLM (a few GiB each)
start once for the folder and never beside another of them."""


def _unit(nodeid: str) -> str:
    """A test's unit of work under `make test`'s `--dist loadscope`: its folder in `ONE_WORKER`, else its
    module (a module-scoped fixture, such as a server, a browser or a trained adapter, is built once)."""
    module = nodeid.split("::", 1)[0]
    return next((folder for folder in ONE_WORKER if module.startswith(folder)), module)


class _Scheduling(LoadScopeScheduling):
    """pytest-xdist's `--dist loadscope`, with the scopes of `_unit`."""

    def _split_scope(self, nodeid: str) -> str:
        return _unit(nodeid)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadScopeScheduling | None:
    """`--dist loadscope` hands out `_unit`s (`--dist loadgroup` ignores `xdist_group` marks added by a
    hook under pytest 9.2: pytest-xdist issue 1386)."""
    return _Scheduling(config, log) if config.getoption("dist") == "loadscope" else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a pytest-xdist worker, the units holding a test marked `slow` come first (in collection order;
    `--no-loadscope-reorder` hands them out in that order), so the longest never run last on their own."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        slow = {_unit(item.nodeid) for item in items if item.get_closest_marker("slow")}
        items.sort(key=lambda item: _unit(item.nodeid) not in slow)


@pytest.fixture(scope="session", autouse=True)
def streams_end_as_under_zantara_serve() -> None:
    """`zantara serve` turns sse-starlette's own shutdown watch off (uvicorn's graceful shutdown drains
    the streams); the tests' in-process servers do the same. Left on, that watch ends the streams of
    every app in the test process once any in-process uvicorn server it finds is stopping (seen in CI:
    a stream through the ASGI transport cut before its `[DONE]`)."""
    AppStatus.disable_automatic_graceful_drain()


@pytest.fixture(scope="session")
def demo_dirs() -> tuple[Path, Path]:
    """(models_dir, adapters_dir) holding the demo base model and demo adapter, built once and cached
    (under a file lock: one build even with several pytest-xdist workers)."""
    from training.demo.model import ensure_demo_adapter, ensure_demo_base

    root = REPO / ".cache" / "demo-models" / _demo_fingerprint()
    models_dir, adapters_dir = root / "models", root / "adapters"
    settings = Settings(models_dir=models_dir, adapters_dir=adapters_dir)
    root.parent.mkdir(parents=True, exist_ok=True)
    # Each pytest-xdist worker has its own session: the first one builds, the other waits and reuses the
    # build (each part is renamed into place only once complete, so a killed build is redone).
    with FileLock(root.parent / f"{root.name}.lock", timeout=DEMO_BUILD_WAIT_S):
        base = ensure_demo_base(settings.demo_base_path, progress=False)
        name, version = DEMO_ADAPTER
        ensure_demo_adapter(base, adapters_dir / name / version, progress=False)
    return models_dir, adapters_dir


@pytest.fixture(scope="session")
def demo_base_path(demo_dirs: tuple[Path, Path]) -> Path:
    """Path of the demo base model."""
    return Settings(models_dir=demo_dirs[0]).demo_base_path


@pytest.fixture(scope="session")
def demo_adapter_path(demo_dirs: tuple[Path, Path]) -> Path:
    """Path of the demo adapter."""
    name, version = DEMO_ADAPTER
    return demo_dirs[1] / name / version


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server for the session (see `tests.postgres.session_server`)."""
    with session_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database per test, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'zantara.db'}"
        return
    with fresh_database(request.getfixturevalue("postgres_url")) as url:
        yield url


@pytest.fixture
def postgres_database_url(postgres_url: str) -> Iterator[str]:
    """An empty PostgreSQL database for tests that need only one backend."""
    with fresh_database(postgres_url) as url:
        yield url


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on `database_url` (SQLite and PostgreSQL), migrated to the newest schema."""
    upgrade(database_url)
    engine = create_db_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
async def direct(database_url: str) -> AsyncIterator[DirectConnections | None]:
    """The connections the service writes ratings and interactions through (None on SQLite)."""
    connections = direct_connections(database_url)
    yield connections
    if connections is not None:
        await connections.close()


ADMIN_TOKEN = "test-admin-token-0123456789"


@pytest.fixture
def settings_factory(demo_dirs: tuple[Path, Path], tmp_path: Path):  # type: ignore[no-untyped-def]
    """Settings pointing at the cached demo models and a per-test var dir; override any field."""

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "var_dir": tmp_path / "var",
            "models_dir": demo_dirs[0],
            "adapters_dir": demo_dirs[1],
            "admin_token": ADMIN_TOKEN,
            "rollout_cache_s": 0.0,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


async def wait_ready(client: httpx.AsyncClient, timeout: float = 60) -> None:
    """Poll /readyz until the model serves (fail with its last answer otherwise)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await client.get("/readyz")
        if response.status_code == 200:
            return
        if "error" in response.json() or asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"service never became ready: {response.text}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def app_client(settings_factory, database_url: str) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    """A ready service (demo model + demo adapter) on a fresh database, through httpx's ASGI transport."""
    app = create_app(settings_factory(database_url=database_url))
    async with running(app) as client:
        yield client


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Start an app's lifespan, wait until it is ready, and hand out an ASGI client."""
    async with LifespanManager(app, startup_timeout=120, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://zantara.test", timeout=60
        ) as client:
            await wait_ready(client)
            yield client


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """The app behind a real uvicorn on a free port (real sockets: a client can really go away)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    url = f"http://127.0.0.1:{server.config.port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            await wait_ready(client)
        yield url
    finally:
        server.should_exit = True
        await task


def admin_headers() -> dict[str, str]:
    """Headers of an authenticated admin call."""
    return {"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Zantara-Actor": "pytest"}
