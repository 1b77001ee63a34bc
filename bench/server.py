"""Start `python -m service serve` on a free port for a benchmark and wait until `/readyz` says ready
(polled every 0.2 s)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


@dataclass(frozen=True)
class Server:
    """A running service: its base URL and the seconds from process start to ready."""

    url: str
    ready_s: float


@contextmanager
def running_server(env: dict[str, str], *, timeout_s: float = 600) -> Iterator[Server]:
    """Run the service with `env` (ZANTARA_* settings) on a free port until the block ends."""
    from tests.postgres import free_port

    port = free_port()
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "service", "serve"],
        env={**os.environ, "ZANTARA_LOG_LEVEL": "warning", **env, "ZANTARA_PORT": str(port)},
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        # One reused client: a fresh httpx.get per poll builds an SSL context each time, and that CPU
        # is taken from the model build on a 2-core machine.
        with httpx.Client(timeout=2) as client:
            while True:
                try:
                    if client.get(f"{url}/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None:
                    raise SystemExit(f"the server exited with status {server.returncode}")
                if time.perf_counter() - started > timeout_s:
                    raise SystemExit(f"the server was not ready after {timeout_s:.0f} s")
                time.sleep(0.2)
        yield Server(url, time.perf_counter() - started)
    finally:
        server.terminate()
        server.wait(timeout=30)
