"""A `zantara serve` that cannot bring its model up ends, non-zero and saying why, instead of answering
503 on `/readyz` forever; an in-process app (no failure callback) keeps answering 503 with the note."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from service.app import create_app
from service.shutdown import STARTUP_FAILURE
from tests.postgres import free_port
from tests.served import REPO

BOUND_S = 90
"""How long a failing start may take to end (it fails within seconds; the bound is for a busy machine)."""


def serve(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run `python -m zantara serve` with its state under `tmp_path` and `env`, until it exits (or
    `BOUND_S` passes: then the test fails with a timeout); its output and how long it ran."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "zantara", "serve"],
        env={
            **os.environ,
            "ZANTARA_LOG_LEVEL": "warning",
            "ZANTARA_VAR_DIR": str(tmp_path / "var"),
            "ZANTARA_ADAPTERS_DIR": str(tmp_path / "adapters"),
            **env,
            "ZANTARA_PORT": str(free_port()),
        },
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=BOUND_S,
    )
    return done, time.perf_counter() - started


def test_serve_exits_3_saying_why_when_the_model_cannot_be_loaded(tmp_path: Path) -> None:
    empty = tmp_path / "no-model-here"
    empty.mkdir()
    done, took = serve(tmp_path, ZANTARA_BASE_MODEL=str(empty))
    assert done.returncode == STARTUP_FAILURE, done.stdout + done.stderr
    why = done.stderr.strip().splitlines()[-1]
    assert why.startswith(f"zantara: start-up failed: the model {empty} could not be brought up: "), why
    assert took < BOUND_S


def test_serve_exits_3_saying_why_when_the_demo_model_cannot_be_built(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "models"
    not_a_folder.write_text("a file where the models folder should be\n")
    done, _ = serve(tmp_path, ZANTARA_MODELS_DIR=str(not_a_folder))
    assert done.returncode == STARTUP_FAILURE, done.stdout + done.stderr
    why = done.stderr.strip().splitlines()[-1]
    assert why.startswith("zantara: start-up failed: the demo model could not be built: "), why
    assert str(not_a_folder) in why, why


async def test_the_failure_callback_is_told_while_readyz_answers_503(
    settings_factory: Any, tmp_path: Path
) -> None:
    app = create_app(
        settings_factory(base_model=str(tmp_path / "no-model"), database_url=f"sqlite:///{tmp_path / 'z.db'}")
    )
    told: list[str] = []
    failed = asyncio.Event()

    def startup_failed(error: str) -> None:
        told.append(error)
        failed.set()

    app.state.on_startup_failure = startup_failed
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://zantara.test") as client:
            await asyncio.wait_for(failed.wait(), timeout=60)
            ready = await client.get("/readyz")
    assert len(told) == 1
    assert told[0].startswith(f"the model {tmp_path / 'no-model'} could not be brought up: "), told
    assert ready.status_code == 503
    assert ready.json()["error"] == "start-up failed; the service log says why"
