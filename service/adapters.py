"""Adapters at start and at run time: discover `DIR/NAME/VERSION/`, load, record in the registry."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from feedback.registry import AdapterEntry, VersionKey, get_version, note_discovered, version_key
from service.engines.base import AdapterInfo, Engine
from service.state import ServiceState

log = logging.getLogger(__name__)


def read_metadata(path: Path) -> dict[str, object]:
    """The adapter's `zantara.json` (name, version, base model, dataset, metrics), or {}."""
    meta_file = path / "zantara.json"
    if not meta_file.is_file():
        return {}
    try:
        data = json.loads(meta_file.read_text())
    except json.JSONDecodeError:
        log.warning("ignoring unreadable %s", meta_file)
        return {}
    return data if isinstance(data, dict) else {}


def adapter_order(info: AdapterInfo) -> tuple[VersionKey, str]:
    """Order of adapters: by version (see `version_key`), then by name."""
    return (version_key(info.version), info.name)


def highest_version(adapters: list[AdapterInfo]) -> AdapterInfo | None:
    """The adapter every replica picks as the first canary: the highest version (equal versions: the
    name that sorts last). Deterministic, unlike file times, so replicas with the same adapters agree."""
    return max(adapters, key=adapter_order, default=None)


def discover_adapters(root: Path) -> list[AdapterInfo]:
    """Every `root/NAME/VERSION/adapter_config.json`, by version then name (the highest last)."""
    if not root.is_dir():
        return []
    found = []
    for config in root.glob("*/*/adapter_config.json"):
        folder = config.parent
        meta = read_metadata(folder)
        name = str(meta.get("name") or folder.parent.name)
        version = str(meta.get("version") or folder.name)
        found.append(AdapterInfo(name, version, str(folder.resolve()), meta))
    return sorted(found, key=adapter_order)


def find_adapter(engine: Engine, name: str) -> AdapterInfo | None:
    """A loaded adapter by `NAME@VERSION`, or the most recently loaded version of `NAME`."""
    matches = [a for a in engine.adapters() if a.key == name or (a.name == name and "@" not in name)]
    return matches[-1] if matches else None


def register_adapter(sessions: sessionmaker[Session], info: AdapterInfo, base_model: str) -> AdapterEntry:
    """Make sure the registry knows the loaded version (from its `zantara.json` when it is new); the
    lineage the trainer recorded and the lifecycle status are left as they are."""
    with sessions.begin() as session:
        return note_discovered(
            session,
            name=info.name,
            version=info.version,
            path=info.path,
            base_model=base_model,
            metadata=dict(info.metadata),
        )


async def load_and_register(state: ServiceState, info: AdapterInfo) -> AdapterInfo:
    """Load an adapter into the engine and record it; metadata comes from its `zantara.json`."""
    path = Path(info.path).resolve()
    info = AdapterInfo(info.name, info.version, str(path), read_metadata(path))
    await state.engine.load_adapter(info)
    entry = await run_in_threadpool(register_adapter, state.sessions, info, state.base_model_id)
    state.metrics.adapters_loaded.set(len(state.engine.adapters()))
    state.metrics.adapter_scores(info.key, entry.gate_report.get("scores") or {})
    for target in ("canary", "live", "pinned"):
        state.metrics.serving("tuned", info.key, target)
    return info


def registered_path(sessions: sessionmaker[Session], key: str) -> AdapterInfo | None:
    """A registered version (`NAME@VERSION`) as something the engine can load, or None."""
    with sessions() as session:
        entry = get_version(session, key)
    return None if entry is None else AdapterInfo(entry.name, entry.version, entry.path)


async def ensure_loaded(state: ServiceState, key: str) -> AdapterInfo | None:
    """The adapter `NAME@VERSION` (or newest loaded `NAME`), hot-loading a registered version from its
    registry path when this replica does not hold it yet; None when it is neither loaded nor known."""
    loaded = find_adapter(state.engine, key)
    if loaded is not None:
        return loaded
    info = await run_in_threadpool(registered_path, state.sessions, key)
    if info is None:
        return None
    async with state.loading:
        loaded = find_adapter(state.engine, key)
        if loaded is not None:  # another task loaded it while this one waited
            return loaded
        log.info("hot-loading %s from %s", info.key, info.path)
        return await load_and_register(state, info)


async def sync_with_rollout(state: ServiceState) -> None:
    """Load the rollout's live and canary versions if this replica lacks them: a version started as
    canary through any replica (or by `zantara retrain` in the database) serves here within one sync
    interval plus the rollout cache, without a restart. Until then its users get the next target."""
    rollout = await run_in_threadpool(state.rollout.current)
    state.metrics.rollout_percentage.set(rollout.percentage if rollout.canary_active else 0)
    for key in (rollout.live_adapter, rollout.adapter):
        if key and find_adapter(state.engine, key) is None:
            try:
                await ensure_loaded(state, key)
            except Exception as error:  # noqa: BLE001 - a broken version must not stop serving
                log.error("could not hot-load %s: %s", key, type(error).__name__)


async def keep_in_sync(state: ServiceState) -> None:
    """Run `sync_with_rollout` every `adapter_sync_s` seconds once the model serves, until cancelled;
    a database outage only skips a round."""
    while True:
        await asyncio.sleep(state.settings.adapter_sync_s)
        if not state.started:
            continue
        try:
            await sync_with_rollout(state)
        except SQLAlchemyError as error:
            log.warning("adapter sync skipped: %s", type(error).__name__)


async def start_rollout(state: ServiceState) -> AdapterInfo | None:
    """At start-up: make the highest loaded adapter version the tuned variant while no rollout is
    stored, and record that first rollout (once, across replicas) as an audited `initial` event.

    A database that cannot be reached now only delays the record: the default still routes, and the
    next start records it.
    """
    chosen = highest_version(state.engine.adapters())
    state.rollout.set_default_adapter(chosen.key if chosen else None)
    if chosen is not None:
        try:
            await run_in_threadpool(state.rollout.initialise, chosen.key)
        except SQLAlchemyError as error:
            log.warning("could not record the initial rollout (%s)", type(error).__name__)
    return chosen
