"""Adapters at start and at run time: discover `DIR/NAME/VERSION/`, load, record in the registry."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from packaging.version import InvalidVersion, Version
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from feedback.models import AdapterVersion
from service.engines.base import AdapterInfo
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


VersionKey = tuple[int, Version | tuple[tuple[int, int | str], ...]]


def version_key(version: str) -> VersionKey:
    """Sort key of an adapter version: PEP 440 order when it parses (`v2` < `v10`, `1.0rc1` < `1.0`),
    else natural order (digit runs compared as numbers); PEP 440 versions rank above free-form ones."""
    try:
        return (1, Version(version))
    except InvalidVersion:
        parts = re.split(r"(\d+)", version)
        return (0, tuple((0, int(part)) if part.isdigit() else (1, part) for part in parts))


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


def register_adapter(sessions: sessionmaker[Session], info: AdapterInfo, base_model: str) -> None:
    """Insert or refresh the adapter's row in the registry (marked `loaded`)."""
    metrics = info.metadata.get("metrics")
    dataset = info.metadata.get("dataset_version") or info.metadata.get("dataset")
    with sessions.begin() as session:
        row = session.scalar(
            select(AdapterVersion).where(
                AdapterVersion.name == info.name, AdapterVersion.version == info.version
            )
        )
        if row is None:
            row = AdapterVersion(name=info.name, version=info.version, path=info.path, base_model=base_model)
            session.add(row)
        row.path, row.status = info.path, "loaded"
        row.metrics = metrics if isinstance(metrics, dict) else {}
        row.dataset_version = str(dataset) if isinstance(dataset, str) else None


async def load_and_register(state: ServiceState, info: AdapterInfo) -> AdapterInfo:
    """Load an adapter into the engine and record it; metadata comes from its `zantara.json`."""
    path = Path(info.path).resolve()
    info = AdapterInfo(info.name, info.version, str(path), read_metadata(path))
    await state.engine.load_adapter(info)
    await run_in_threadpool(register_adapter, state.sessions, info, state.base_model_id)
    state.metrics.adapters_loaded.set(len(state.engine.adapters()))
    return info


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
