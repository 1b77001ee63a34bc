"""`/healthz` (alive), `/readyz` (model serving; database reachable or degraded), `/metrics` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from database.engine import ping
from feedback.store import count_dead_letters
from service.deps import StateDep
from service.errors import error_response
from service.protocol import ErrorResponse
from service.state import ServiceState

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=dict[str, str], responses={503: {"model": ErrorResponse}})
async def healthz(state: StateDep) -> dict[str, str] | JSONResponse:
    """The process is alive (even while the model still loads); 503 once the engine can never serve
    again (its worker died), so the liveness probe fails and Kubernetes restarts the pod."""
    if not state.engine.alive:
        return error_response(503, "The inference engine stopped; the service restarts.", code="engine_dead")
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep) -> JSONResponse:
    """200 while the model serves: `ready`, or `degraded` while the database is away or the local
    spool does not drain (answers go on; interactions and ratings wait in the spool, counted in
    `spool`); 503 until the model serves. `dead_letters` counts the writes the database refused for
    their data (null while it is away). A start-up failure is logged, never shown here."""
    database_ok, dead_letters = await run_in_threadpool(_database, state)
    draining = not state.feedback.spool_stalled
    checks = {"model": state.started and state.engine.ready, "database": database_ok}
    status = "not_ready" if not checks["model"] else "ready" if database_ok and draining else "degraded"
    body: dict[str, object] = {
        "status": status,
        "checks": checks,
        "adapters": [a.key for a in state.engine.adapters()],
        "spool": state.feedback.spooled(),
        "spool_draining": draining,
        "buffered_interactions": state.feedback.buffered,
        "dead_letters": dead_letters,
    }
    if state.startup_error:
        body["error"] = "start-up failed; the service log says why"
    return JSONResponse(body, status_code=200 if checks["model"] else 503)


def _database(state: ServiceState) -> tuple[bool, int | None]:
    """Whether the database answers, and how many writes it refused (None when it does not answer)."""
    if not ping(state.database):
        return False, None
    try:
        return True, count_dead_letters(state.sessions)
    except SQLAlchemyError:
        return True, None


@router.get("/metrics", response_class=PlainTextResponse)
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
