"""Run `python -m zantara serve` as its own process on a free port until `/readyz` says ready.

Used by the end-to-end tests and by the benchmarks under `bench/`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from tests.postgres import free_port

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Server:
    """A running service: its base URL, the seconds from process start to ready, and its process id."""

    url: str
    ready_s: float
    pid: int


def demo_env(var_dir: Path, demo_dirs: tuple[Path, Path], database_url: str, **more: str) -> dict[str, str]:
    """The settings of a served demo model (the session's cached build) with its own var dir and
    database; `more` adds or overrides `ZANTARA_*` variables."""
    return {
        "ZANTARA_VAR_DIR": str(var_dir),
        "ZANTARA_MODELS_DIR": str(demo_dirs[0]),
        "ZANTARA_ADAPTERS_DIR": str(demo_dirs[1]),
        "ZANTARA_DATABASE_URL": database_url,
        **more,
    }


@contextmanager
def running_server(
    env: dict[str, str],
    *,
    timeout_s: float = 600,
    command: Sequence[str] = (sys.executable, "-m", "zantara", "serve"),
    cwd: Path = REPO,
    ready_path: str = "/readyz",
    port_flag: str | None = None,
) -> Iterator[Server]:
    """Run the service (`command`, from `cwd`) with `env` (ZANTARA_* settings over this process's
    environment) on a free port until the block ends; raise with the server's output when it exits or is
    not ready in time. Another server works too: `port_flag` (e.g. `--port`) hands it the port on its
    command line, and it is ready once `ready_path` answers 200."""
    port = free_port()
    with tempfile.TemporaryFile("w+") as output:
        started = time.perf_counter()
        server = subprocess.Popen(
            [*command, *((port_flag, str(port)) if port_flag else ())],
            env={**os.environ, "ZANTARA_LOG_LEVEL": "warning", **env, "ZANTARA_PORT": str(port)},
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(server, f"{url}{ready_path}", started + timeout_s, output)
            yield Server(url, time.perf_counter() - started, server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)


def _wait_ready(server: subprocess.Popen[str], ready_url: str, deadline: float, output: IO[str]) -> None:
    # One reused client: a fresh httpx.get per poll builds an SSL context each time, and that CPU is
    # taken from the model build on a 2-core machine.
    with httpx.Client(timeout=2) as client:
        while True:
            try:
                if client.get(ready_url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.perf_counter() > deadline:
                output.seek(0)
                state = (
                    f"exited with status {server.returncode}"
                    if server.returncode is not None
                    else "not ready"
                )
                raise RuntimeError(f"the service {state}; its output:\n{output.read()[-4000:]}")
            time.sleep(0.2)
