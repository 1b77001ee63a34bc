"""The FastAPI app factory and its lifespan.

The lifespan creates the database engine, metrics, rollout store and inference engine, then brings
the model up in the background so `/healthz` answers at once and `/readyz` turns 200 when it serves.
When the model cannot be brought up, `/readyz` answers 503 with a note and the app's start-up failure
callback (`app.state.on_startup_failure`, set by `zantara serve`: see `service/shutdown.py`) is told
why, so the served process stops and exits non-zero; an app without one (the tests' in-process apps)
goes on answering 503.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI

from database.engine import create_db_engine, direct_connections, make_session_factory
from database.migrate import upgrade
from router.rollout import RolloutStore
from service.adapters import discover_adapters, keep_in_sync, load_and_register, start_rollout
from service.api import (
    ab_admin,
    admin,
    chat,
    feedback,
    health,
    lora,
    review,
    review_ab,
    review_dataset,
    review_queue,
)
from service.engines import create_engine
from service.errors import install_error_handlers
from service.guardrail_task import start_guardrail, stop_guardrail
from service.limits import install_limits, request_limits_of, state_limits
from service.metrics import Metrics
from service.quality_task import start_quality, stop_quality
from service.settings import Settings
from service.state import ServiceState, feedback_writer

log = logging.getLogger(__name__)

StartupFailed = Callable[[str], None]
"""Called once the model could not be brought up, with why: the model and the error."""


def _model_path(settings: Settings) -> str:
    return str(settings.demo_base_path.resolve()) if settings.uses_demo_model else settings.base_model


async def bring_up(state: ServiceState, on_failure: StartupFailed | None = None) -> None:
    """Load the model and adapters (the demo model is built before, by `zantara serve`); record how
    long each part took. A failure is logged, kept for `/readyz` and handed to `on_failure`."""
    settings, started = state.settings, time.perf_counter()
    try:
        await state.engine.start()
        state.startup["model_loaded_s"] = time.perf_counter() - started
        for info in discover_adapters(settings.resolved_adapters_dir):
            try:
                await load_and_register(state, info)
            except Exception as error:  # noqa: BLE001 - one broken adapter must not block serving
                log.error("could not load adapter %s from %s: %s", info.key, info.path, error)
        adapters = state.engine.adapters()
        await start_rollout(state)
        state.startup["ready_s"] = time.perf_counter() - started
        freeze_startup_objects()
        state.started = True
        log.info("ready in %.1fs with adapters %s", state.startup["ready_s"], [a.key for a in adapters])
    except Exception as error:
        state.startup_error = f"{type(error).__name__}: {error}"
        log.exception("start-up failed")
        if on_failure is not None:
            on_failure(f"the model {_model_path(settings)} could not be brought up: {state.startup_error}")


def freeze_startup_objects() -> None:
    """Exempt what start-up built (the model, its libraries' modules) from the garbage collector.

    With the model loaded, the heap holds millions of long-lived objects, and every full collection
    walked them all: 250-400 ms pauses of the event loop under load, every few seconds, measured in
    `bench/ratings.py` (the p99 of ratings and chat). After `gc.freeze()` a collection only walks what
    was created since."""
    gc.collect()
    gc.freeze()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Create everything the routes use, and tear it down on shutdown."""
    settings: Settings = app.state.settings
    settings.ensure_secrets()
    url = settings.resolved_database_url
    if settings.migrate_on_start:
        await asyncio.to_thread(upgrade, url)
    database, direct = create_db_engine(url), direct_connections(url)
    sessions = make_session_factory(database)
    metrics = Metrics()
    state = ServiceState(
        settings=settings,
        metrics=metrics,
        database=database,
        sessions=sessions,
        rollout=RolloutStore(
            sessions, default_percentage=settings.default_rollout_percentage, cache_s=settings.rollout_cache_s
        ),
        engine=create_engine(settings, _model_path(settings)),
        base_model_id=settings.base_model,
        feedback=feedback_writer(settings, sessions, metrics, direct),
    )
    app.state.zantara = state
    if (engine_metrics := getattr(state.engine, "metrics_collector", None)) is not None:
        metrics.registry.register(engine_metrics())  # an engine's own metrics (vLLM's) beside ours
    await state.feedback.start()
    on_failure: StartupFailed | None = getattr(app.state, "on_startup_failure", None)
    tasks = [asyncio.create_task(bring_up(state, on_failure)), asyncio.create_task(keep_in_sync(state))]
    guardrail = start_guardrail(state)
    quality = start_quality(state)
    try:
        yield
    finally:
        await stop_quality(quality)
        await stop_guardrail(guardrail)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
        await state.engine.close()
        await state.feedback.close()
        database.dispose()
        if direct is not None:
            await direct.close()


def _openapi(app: FastAPI, settings: Settings) -> Callable[[], dict[str, Any]]:
    """FastAPI's schema of the routes, with the feedback route and the configured request limits."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = feedback.document(FastAPI.openapi(app))
            app.openapi_schema = state_limits(schema, request_limits_of(settings))
        return app.openapi_schema

    return openapi


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service: routes, error envelope, lifespan. Nothing heavy happens until start-up."""
    settings = settings or Settings()
    app = FastAPI(
        title="zantara",
        version="0.1.0",
        lifespan=lifespan,
        description="ZANTARA chat with canary-routed LoRA adapters, ratings and metrics.",
    )
    app.state.settings = settings
    install_error_handlers(app)
    install_limits(app, settings)
    app.openapi = _openapi(app, settings)  # type: ignore[method-assign]
    feedback.install(app)
    for module in (
        chat,
        admin,
        health,
        review,
        review_ab,
        ab_admin,
        review_queue,
        review_dataset,
        lora,
    ):
        app.include_router(module.router)
    return app
