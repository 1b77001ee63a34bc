"""Ops endpoints (admin bearer token): canary and share, promotion, rollback, audit trail, adapter registry
and adapters at run time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from feedback.registry import AdapterEntry, get_version, list_versions
from router.rollout import (
    Check,
    Rollout,
    RolloutConflict,
    adapter_is,
    canary_is,
    check_canary_loaded,
    not_live,
    rolls_back,
)
from service.adapters import ensure_loaded, find_adapter, load_and_register
from service.deps import ActorDep, StateDep, require_admin
from service.engines.base import AdapterInfo, InvalidRequestError
from service.errors import APIError
from service.protocol import ErrorResponse, Text
from service.state import ServiceState

NAME = r"^[A-Za-z0-9._-]+$"
ADAPTER_KEY = r"^[A-Za-z0-9._-]+(@[A-Za-z0-9._-]+)?$"
ADAPTER_KEY_MAX = 165
"""An adapter `NAME` (up to 100 characters) or `NAME@VERSION` (version up to 64)."""


def _expected_adapter() -> Any:
    """The optional compare-and-set field of every rollout change."""
    return Field(
        None,
        max_length=ADAPTER_KEY_MAX,
        pattern=ADAPTER_KEY,
        description="Compare-and-set: the version this change expects to act on, the active canary (a "
        "rollback without one: the live adapter); `NAME@VERSION`, a bare `NAME` matches any version. "
        "409 `conflict` when the rollout, read under its lock, has another one.",
    )


router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses={code: {"model": ErrorResponse} for code in (401, 404, 409, 422)},
)


class RolloutView(BaseModel):
    """The rollout as ops see it: the canary (`adapter`) and its share, and the live adapter."""

    percentage: float = Field(description="Share of users sent to the canary adapter.")
    adapter: str | None = Field(description="The canary adapter, `NAME@VERSION`.")
    live_adapter: str | None = Field(description="The adapter everyone else gets; null: the base model.")
    updated_at: datetime | None
    updated_by: str
    adapters_loaded: list[str]


class RolloutChange(BaseModel):
    """`PUT /admin/rollout` body."""

    model_config = ConfigDict(strict=True)

    percentage: float = Field(ge=0, le=100, description="Share of users sent to the canary adapter.")
    adapter: str | None = Field(
        None,
        max_length=ADAPTER_KEY_MAX,
        pattern=ADAPTER_KEY,
        description="The canary, `NAME` or `NAME@VERSION` (a registered version not loaded yet is "
        "hot-loaded first); default: keep the current one.",
    )
    reason: Text = Field("", max_length=2000)
    expected_adapter: str | None = _expected_adapter()


class RollbackRequest(BaseModel):
    """`POST /admin/rollback` and `POST /admin/promote` body (optional)."""

    model_config = ConfigDict(strict=True)

    reason: Text = Field("", max_length=2000)
    expected_adapter: str | None = _expected_adapter()

    def expect(self, condition: Callable[[str], Check] = canary_is) -> list[Check]:
        """The compare-and-set condition this body asks for (`condition` of its expected adapter)."""
        return [condition(self.expected_adapter)] if self.expected_adapter else []


class RolloutEventView(BaseModel):
    """One audit entry."""

    id: int
    created_at: datetime
    actor: str
    action: str
    from_percentage: float | None
    to_percentage: float
    from_adapter: str | None
    to_adapter: str | None
    from_live: str | None
    to_live: str | None
    reason: str
    details: dict[str, Any]


class AdapterLoad(BaseModel):
    """`POST /admin/adapters` body: a PEFT adapter directory to load now."""

    model_config = ConfigDict(strict=True)

    name: str = Field(min_length=1, max_length=100, pattern=NAME)
    version: str = Field(min_length=1, max_length=64, pattern=NAME)
    path: Text = Field(
        min_length=1, max_length=4096, description="A PEFT adapter directory on the server (else a 400)."
    )


class AdapterView(BaseModel):
    """A loaded adapter."""

    key: str
    name: str
    version: str
    path: str


class RegistryView(AdapterView):
    """A registered adapter version: lineage, scores, author, lifecycle status, and whether this
    replica has it loaded."""

    base_model: str
    dataset_version: str | None
    parent_version: str | None
    metrics: dict[str, Any]
    gate_report: dict[str, Any]
    report_path: str | None
    created_by: str
    last_correction_id: int | None
    status: str
    created_at: datetime
    updated_at: datetime
    loaded: bool


def _view(state_rollout: Rollout, loaded: list[AdapterInfo]) -> RolloutView:
    """The rollout and the adapters this replica holds."""
    return RolloutView.model_validate({**asdict(state_rollout), "adapters_loaded": [a.key for a in loaded]})


@router.get("/rollout", response_model=RolloutView)
async def get_rollout(state: StateDep) -> RolloutView:
    """The current share and adapter."""
    state.rollout.invalidate()
    current = await run_in_threadpool(state.rollout.current)
    return _view(current, state.engine.adapters())


@router.put("/rollout", response_model=RolloutView)
async def set_rollout(body: RolloutChange, state: StateDep, who: ActorDep) -> RolloutView:
    """Set the canary and its share of users; a registered version this replica does not hold yet is
    hot-loaded first (the other replicas load it within seconds). Audited; the rollout it replaces is
    read fresh, and checked again inside the row lock (409 when it changed meanwhile)."""
    current = await run_in_threadpool(state.rollout.fresh)
    wanted = body.adapter or current.adapter
    adapter = await ensure_loaded(state, wanted) if wanted else None
    held = [a.key for a in state.engine.adapters()]
    try:
        check_canary_loaded(body.percentage, wanted, adapter.key if adapter else None, held)
    except RolloutConflict as conflict:
        raise APIError(409, str(conflict), code=conflict.code, param="adapter") from None
    key = adapter.key if adapter else wanted
    expect = [not_live(key, body.percentage)]
    if body.adapter is None:
        expect.append(adapter_is(current.adapter))  # keeping the canary: the one read above
    if body.expected_adapter:
        expect.append(canary_is(body.expected_adapter))
    _, after = await _applied(
        lambda: state.rollout.change(
            percentage=body.percentage,
            adapter=key,
            actor=who,
            action="set",
            reason=body.reason,
            expect=expect,
        )
    )
    return _changed(state, "set", after)


@router.post("/promote", response_model=RolloutView)
async def promote(state: StateDep, who: ActorDep, body: RollbackRequest | None = None) -> RolloutView:
    """Make the active canary the live adapter for every user (the previous live version retires);
    409 `no_canary` without an active canary (a rolled-back one is never promoted). Audited."""
    request = body or RollbackRequest()
    _, after = await _applied(
        lambda: state.rollout.promote(actor=who, reason=request.reason, expect=request.expect())
    )
    return _changed(state, "promote", after)


@router.post("/rollback", response_model=RolloutView)
async def rollback(state: StateDep, who: ActorDep, body: RollbackRequest | None = None) -> RolloutView:
    """One step back, at once: an active canary stops receiving users (they return to the live adapter
    or the base model); without one, the live adapter gives way to the previous live version or the
    base model. `expected_adapter` names the version it takes off (the active canary, else the live
    one). Audited."""
    request = body or RollbackRequest()
    _, after = await _applied(
        lambda: state.rollout.rollback(actor=who, reason=request.reason, expect=request.expect(rolls_back))
    )
    return _changed(state, "rollback", after)


async def _applied(change: Callable[[], tuple[Rollout, Rollout]]) -> tuple[Rollout, Rollout]:
    """Run a rollout change in a worker thread; a refused compare-and-set is a 409 with its code."""
    try:
        return await run_in_threadpool(change)
    except RolloutConflict as conflict:
        raise APIError(409, str(conflict), code=conflict.code) from None


def _changed(state: ServiceState, action: str, after: Rollout) -> RolloutView:
    state.metrics.rollout_changes.labels(action).inc()
    state.metrics.rollout_percentage.set(after.percentage if after.canary_active else 0)
    return _view(after, state.engine.adapters())


@router.get("/rollout/events", response_model=list[RolloutEventView])
async def rollout_events(
    state: StateDep, limit: Annotated[int, Query(ge=1, le=1000, description="How many events.")] = 50
) -> list[RolloutEventView]:
    """The audit trail, newest first."""
    rows = await run_in_threadpool(state.rollout.history, limit)
    return [RolloutEventView.model_validate(row, from_attributes=True) for row in rows]


@router.get("/adapters", response_model=list[RegistryView])
async def list_adapters(state: StateDep) -> list[RegistryView]:
    """The adapter registry: every version with lineage, scores and status, and whether it is loaded
    on this replica."""
    entries = await run_in_threadpool(_registry, state.sessions)
    loaded = {a.key for a in state.engine.adapters()}
    return [RegistryView(**entry.to_dict(), loaded=entry.key in loaded) for entry in entries]


@router.get("/adapters/{key}", response_model=RegistryView)
async def show_adapter(
    key: Annotated[str, Path(max_length=ADAPTER_KEY_MAX, pattern=ADAPTER_KEY)], state: StateDep
) -> RegistryView:
    """One registered version, `NAME@VERSION`."""
    entry = await run_in_threadpool(_registered, state.sessions, key)
    if entry is None:
        raise APIError(404, f"{key!r} is not in the adapter registry.", code="adapter_not_found")
    loaded = {a.key for a in state.engine.adapters()}
    return RegistryView(**entry.to_dict(), loaded=entry.key in loaded)


def _registry(sessions: sessionmaker[Session]) -> list[AdapterEntry]:
    with sessions() as session:
        return list_versions(session)


def _registered(sessions: sessionmaker[Session], key: str) -> AdapterEntry | None:
    with sessions() as session:
        return get_version(session, key)


@router.post("/adapters", response_model=AdapterView, status_code=201)
async def load_adapter(body: AdapterLoad, state: StateDep) -> AdapterView:
    """Load an adapter without a restart and record it in the adapter registry; 404 when `path` holds no
    PEFT adapter, 409 when `NAME@VERSION` is already loaded."""
    if not await run_in_threadpool(_is_adapter_dir, body.path):
        raise APIError(
            404,
            f"No PEFT adapter (adapter_config.json) at {body.path!r}.",
            code="adapter_not_found",
            param="path",
        )
    try:
        info = await load_and_register(state, AdapterInfo(body.name, body.version, body.path))
    except InvalidRequestError as error:
        status = 409 if error.code == "adapter_exists" else 400
        raise APIError(status, str(error), code=error.code, param=error.param) from None
    return AdapterView.model_validate(info, from_attributes=True)


def _is_adapter_dir(path: str) -> bool:
    """True when `path` is a directory with an `adapter_config.json` (False for any unusable path)."""
    try:
        return (FilePath(path) / "adapter_config.json").is_file()
    except OSError:  # e.g. a name longer than the file system allows
        return False


@router.delete("/adapters/{key}", status_code=204)
async def unload_adapter(
    key: Annotated[str, Path(max_length=ADAPTER_KEY_MAX, pattern=ADAPTER_KEY)], state: StateDep
) -> None:
    """Unload an adapter; refused while the rollout sends users to it."""
    current = await run_in_threadpool(state.rollout.current)
    adapter = find_adapter(state.engine, key)
    if adapter is None:
        raise APIError(404, f"Adapter {key!r} is not loaded.", code="adapter_not_loaded")
    try:
        current.check_unload(adapter.key)
    except RolloutConflict as conflict:
        raise APIError(409, str(conflict), code=conflict.code) from None
    await state.engine.unload_adapter(adapter.key)
    state.metrics.adapters_loaded.set(len(state.engine.adapters()))
