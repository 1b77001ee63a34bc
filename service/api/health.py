"""`/healthz` (alive), `/readyz` (model loaded and database reachable), `/metrics` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from feedback.db import ping
from service.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive (even while the model still loads)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep) -> JSONResponse:
    """200 when the model and its adapters serve and the database answers, else 503 with what is missing."""
    database_ok = await run_in_threadpool(ping, state.database)
    checks = {"model": state.started and state.engine.ready, "database": database_ok}
    ready = all(checks.values())
    body: dict[str, object] = {
        "status": "ready" if ready else "not_ready",
        "checks": checks,
        "adapters": [a.key for a in state.engine.adapters()],
    }
    if state.startup_error:
        body["error"] = state.startup_error
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(state: StateDep) -> Response:
    """Prometheus exposition; the rollout share is read fresh so every replica reports the same."""
    try:
        rollout = await run_in_threadpool(state.rollout.current)
        state.metrics.rollout_percentage.set(rollout.percentage)
    except Exception:  # noqa: BLE001 - metrics must still be served when the database is down
        pass
    state.metrics.model_ready.set(1 if state.engine.ready else 0)
    state.metrics.adapters_loaded.set(len(state.engine.adapters()))
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
