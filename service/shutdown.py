"""Serving with a graceful stop: on SIGTERM (Kubernetes' stop signal) the listening socket closes, running
requests and streamed answers finish (up to `ZANTARA_GRACEFUL_SHUTDOWN_S`), then the lifespan's shutdown
runs (engine, buffers) and the process exits 0. When the model cannot be brought up, the server stops the
same way and the process exits `STARTUP_FAILURE` with the error on stderr (instead of answering 503 on
`/readyz` forever)."""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType
from typing import NoReturn

import uvicorn
from fastapi import FastAPI
from sse_starlette.sse import AppStatus

from service.settings import Settings

log = logging.getLogger(__name__)

STARTUP_FAILURE = 3
"""Exit status when the app could not start: uvicorn's own (its lifespan failed), also when the model
could not be loaded (or `zantara serve` could not build the demo model)."""


def serve(app: FastAPI, *, host: str, port: int, log_level: str, drain_s: int) -> None:
    """Run `app` with uvicorn until SIGTERM or SIGINT, draining in-flight requests first.

    sse-starlette cuts every open stream as soon as uvicorn is asked to exit; that is switched off so a
    streamed answer ends with its `[DONE]`, and uvicorn's `timeout_graceful_shutdown` bounds the wait.
    uvicorn re-raises the signal it caught once it has drained; the handler installed here takes that
    SIGTERM, so a drained stop exits 0 instead of dying of the signal."""
    AppStatus.disable_automatic_graceful_drain()
    server = uvicorn.Server(server_config(app, host=host, port=port, log_level=log_level, drain_s=drain_s))
    failures: list[str] = []

    def startup_failed(error: str) -> None:
        """The model cannot be brought up: stop serving (`/readyz` answers 503 until the socket closes)."""
        failures.append(error)
        server.should_exit = True

    app.state.on_startup_failure = startup_failed
    previous = signal.signal(signal.SIGTERM, _drained)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if failures:
        exit_on_startup_failure(failures[0])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def exit_on_startup_failure(why: str) -> NoReturn:
    """End the process with `STARTUP_FAILURE`, saying why on stderr in one line."""
    sys.stderr.write(f"zantara: start-up failed: {' '.join(why.split())}\n")
    sys.stderr.flush()
    sys.exit(STARTUP_FAILURE)


def server_config(app: FastAPI, *, host: str, port: int, log_level: str, drain_s: int) -> uvicorn.Config:
    """uvicorn's configuration of `app`: the graceful stop's bound, and the client address taken from
    `X-Forwarded-For` only when the connection comes from a proxy in `ZANTARA_FORWARDED_ALLOW_IPS` (the
    request limits count an open `/v1`'s callers by that address)."""
    settings: Settings = app.state.settings
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=drain_s,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )


def _drained(signum: int, _frame: FrameType | None) -> None:
    log.info("stopped on %s after draining", signal.Signals(signum).name)
