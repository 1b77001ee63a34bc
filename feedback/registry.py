"""The adapter registry: the one place that reads and writes `adapter_versions`.

Every trained version has its lineage (dataset version, parent version), scores (metrics, gate report),
author and a lifecycle status:

- `candidate`: trained (and, from `zantara retrain`, through its gates), not serving users;
- `rejected`: failed its gates, or was rolled back while it was the canary;
- `canary`: the rollout sends its share of users to it;
- `live`: serves every user outside the canary;
- `retired`: was live, replaced by a newer version.

Loading a version into an engine is per replica and is not a registry status.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from packaging.version import InvalidVersion, Version
from sqlalchemy import select
from sqlalchemy.orm import Session

from database.models import AdapterVersion

STATUSES = ("candidate", "rejected", "canary", "live", "retired")


@dataclass(frozen=True)
class AdapterEntry:
    """One registered adapter version, detached from the database session."""

    name: str
    version: str
    path: str
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

    @property
    def key(self) -> str:
        """`NAME@VERSION`, the adapter's name everywhere else (routing, headers, metrics)."""
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view, with the key."""
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["updated_at"] = self.updated_at.isoformat()
        return {"key": self.key, **data}


class UnknownVersionError(LookupError):
    """No registered adapter has that `NAME@VERSION`."""


def parse_key(key: str) -> tuple[str, str]:
    """Split `NAME@VERSION`; a key without a version raises ValueError."""
    name, sep, version = key.partition("@")
    if not sep or not name or not version:
        raise ValueError(f"expected NAME@VERSION, got {key!r}")
    return name, version


def _entry(row: AdapterVersion) -> AdapterEntry:
    return AdapterEntry(
        name=row.name,
        version=row.version,
        path=row.path,
        base_model=row.base_model,
        dataset_version=row.dataset_version,
        parent_version=row.parent_version,
        metrics=dict(row.metrics or {}),
        gate_report=dict(row.gate_report or {}),
        report_path=row.report_path,
        created_by=row.created_by,
        last_correction_id=row.last_correction_id,
        status=row.status,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _row(session: Session, name: str, version: str, *, lock: bool = False) -> AdapterVersion | None:
    query = select(AdapterVersion).where(AdapterVersion.name == name, AdapterVersion.version == version)
    return session.scalar(query.with_for_update() if lock else query)


def record_version(
    session: Session,
    *,
    name: str,
    version: str,
    path: str,
    base_model: str,
    dataset_version: str | None = None,
    parent_version: str | None = None,
    metrics: dict[str, Any] | None = None,
    created_by: str = "",
    last_correction_id: int | None = None,
    gate_report: dict[str, Any] | None = None,
    report_path: str | None = None,
    status: str = "candidate",
) -> AdapterEntry:
    """Insert a version, or update it with what is given: a lineage field given as None never erases
    one already recorded (the trainer knows the lineage; later callers may not)."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    row = _row(session, name, version, lock=True)
    if row is None:
        row = AdapterVersion(
            name=name, version=version, path=path, base_model=base_model, created_by=created_by
        )
        session.add(row)
    row.path, row.base_model, row.status = path, base_model, status
    given = {
        "dataset_version": dataset_version,
        "parent_version": parent_version,
        "last_correction_id": last_correction_id,
        "report_path": report_path,
    }
    for field, value in given.items():
        if value is not None:
            setattr(row, field, value)
    if metrics is not None:
        row.metrics = metrics
    if gate_report is not None:
        row.gate_report = gate_report
    if created_by:
        row.created_by = created_by
    session.flush()
    return _entry(row)


def note_discovered(
    session: Session, *, name: str, version: str, path: str, base_model: str, metadata: dict[str, Any]
) -> AdapterEntry:
    """A replica found or loaded a version: insert it from its `zantara.json` if it is new, else only
    fill what the registry lacks. Status and recorded lineage are never touched."""
    row = _row(session, name, version, lock=True)
    if row is None:
        row = AdapterVersion(
            name=name, version=version, path=path, base_model=base_model, status="candidate", created_by=""
        )
        session.add(row)
    found = lineage_from_metadata(metadata)
    for field, value in found.items():
        if field == "metrics":
            if not row.metrics and value:
                row.metrics = value
        elif getattr(row, field) is None and value is not None:
            setattr(row, field, value)
    if not row.created_by:
        row.created_by = str(metadata.get("created_by") or "")
    session.flush()
    return _entry(row)


def lineage_from_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Dataset version, parent version and metrics as the trainer writes them into `zantara.json`."""
    dataset = metadata.get("dataset")
    dataset_version = dataset.get("version") if isinstance(dataset, dict) else metadata.get("dataset_version")
    parent = metadata.get("parent")
    parent_version = parent.get("version") if isinstance(parent, dict) else parent
    metrics = metadata.get("metrics")
    return {
        "dataset_version": str(dataset_version) if isinstance(dataset_version, str) else None,
        "parent_version": str(parent_version) if isinstance(parent_version, str) else None,
        "metrics": metrics if isinstance(metrics, dict) else {},
    }


def set_status(
    session: Session,
    key: str,
    status: str,
    *,
    gate_report: dict[str, Any] | None = None,
    report_path: str | None = None,
) -> AdapterEntry:
    """Move a version to `status` (and attach its gate report); unknown versions raise."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    row = _row(session, *parse_key(key), lock=True)
    if row is None:
        raise UnknownVersionError(f"{key} is not in the adapter registry")
    row.status = status
    if gate_report is not None:
        row.gate_report = gate_report
    if report_path is not None:
        row.report_path = report_path
    session.flush()
    return _entry(row)


def get_version(session: Session, key: str) -> AdapterEntry | None:
    """The registered version `NAME@VERSION`, or None."""
    try:
        name, version = parse_key(key)
    except ValueError:
        return None
    row = _row(session, name, version)
    return _entry(row) if row is not None else None


def list_versions(session: Session, name: str | None = None) -> list[AdapterEntry]:
    """Every registered version (of `name`), by name then version order (`v2` before `v10`)."""
    query = select(AdapterVersion)
    if name is not None:
        query = query.where(AdapterVersion.name == name)
    entries = [_entry(row) for row in session.scalars(query)]
    return sorted(entries, key=lambda entry: (entry.name, version_key(entry.version)))


VersionKey = tuple[int, Version | tuple[tuple[int, int | str], ...]]


def version_key(version: str) -> VersionKey:
    """Sort key of an adapter version: PEP 440 order when it parses (`v2` < `v10`, `1.0rc1` < `1.0`),
    else natural order (digit runs compared as numbers); PEP 440 versions rank above free-form ones."""
    try:
        return (1, Version(version))
    except InvalidVersion:
        parts = re.split(r"(\d+)", version)
        return (0, tuple((0, int(part)) if part.isdigit() else (1, part) for part in parts))


def next_version(session: Session, name: str) -> str:
    """`v{N+1}` above every registered `vN` of `name` (`v1` for a new name)."""
    numbers = [
        int(match.group(1))
        for entry in list_versions(session, name)
        if (match := re.fullmatch(r"v(\d+)", entry.version))
    ]
    return f"v{max(numbers, default=0) + 1}"
