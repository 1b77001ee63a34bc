"""Helpers shared by the `zantara eval` tests: a scripted upstream served over HTTP, the command run
in-process, and one gate read out of a report."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from typer.testing import CliRunner

from tests.postgres import free_port
from zantara.cli import app


@contextmanager
def serving(upstream: FastAPI) -> Iterator[str]:
    """Serve `upstream` with uvicorn on a free port in a thread; yields its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(upstream, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "scripted upstream did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def run_eval(*args: str | Path) -> tuple[int, str]:
    """`zantara eval ARGS` in-process: (exit code, output)."""
    result = CliRunner().invoke(app, ["eval", *map(str, args)])
    return result.exit_code, result.output


def gate(report: dict, name: str) -> dict:
    """The one gate called `name` in an evaluation report."""
    [found] = [g for g in report["gates"] if g["name"] == name]
    return found
