"""Adapters at start and at run time: discover `DIR/NAME/VERSION/`, load, record in the registry."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sqlalchemy import select
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


def discover_adapters(root: Path) -> list[AdapterInfo]:
    """Every `root/NAME/VERSION/adapter_config.json`, oldest first (so the newest is loaded last)."""
    if not root.is_dir():
        return []
    found = []
    for config in root.glob("*/*/adapter_config.json"):
        folder = config.parent
        meta = read_metadata(folder)
        name = str(meta.get("name") or folder.parent.name)
        version = str(meta.get("version") or folder.name)
        found.append((config.stat().st_mtime, AdapterInfo(name, version, str(folder.resolve()), meta)))
    return [info for _, info in sorted(found, key=lambda item: (item[0], item[1].key))]


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
