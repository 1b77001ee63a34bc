"""`zantara retrain` runs in the database: the step each reached and what its steps produced.

A run is `running` until it ends as `promoted` (its adapter became the canary), `rejected` (gates
failed), `nothing` (no new corrections) or `failed` (abandoned with `--fresh`). A run still `running`
when the next one starts is the one a crash (or an error such as an unreachable service) interrupted:
the next run resumes it at its recorded `step`, reading the outputs of the earlier steps from `details`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from database.models import RetrainRun, utcnow

RUN_STATUSES = ("running", "promoted", "rejected", "failed", "nothing")


@dataclass(frozen=True)
class RunRecord:
    """One retrain run, detached from the database session."""

    id: int
    started_at: datetime
    finished_at: datetime | None
    status: str
    step: str
    adapter_name: str
    parent_version: str | None
    adapter_version: str | None
    dataset_version: str | None
    from_scratch: bool
    exit_code: int | None
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            "id": self.id,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "status": self.status,
            "step": self.step,
            "adapter_name": self.adapter_name,
            "parent_version": self.parent_version,
            "adapter_version": self.adapter_version,
            "dataset_version": self.dataset_version,
            "from_scratch": self.from_scratch,
            "exit_code": self.exit_code,
            "details": self.details,
        }


def _record(row: RetrainRun) -> RunRecord:
    return RunRecord(
        id=row.id,
        started_at=row.started_at,
        finished_at=row.finished_at,
        status=row.status,
        step=row.step,
        adapter_name=row.adapter_name,
        parent_version=row.parent_version,
        adapter_version=row.adapter_version,
        dataset_version=row.dataset_version,
        from_scratch=row.from_scratch,
        exit_code=row.exit_code,
        details=dict(row.details or {}),
    )


def _row(session: Session, run_id: int) -> RetrainRun:
    row = session.scalar(select(RetrainRun).where(RetrainRun.id == run_id).with_for_update())
    if row is None:
        raise LookupError(f"retrain run #{run_id} does not exist")
    return row


def unfinished_run(session: Session) -> RunRecord | None:
    """The newest run still `running` (interrupted), or None."""
    row = session.scalar(
        select(RetrainRun)
        .where(RetrainRun.status == "running")
        .order_by(RetrainRun.started_at.desc(), RetrainRun.id.desc())
        .limit(1)
    )
    return _record(row) if row is not None else None


def start_run(
    session: Session, *, adapter_name: str, from_scratch: bool, step: str, details: dict[str, Any]
) -> RunRecord:
    """Insert a new `running` run at `step`."""
    row = RetrainRun(
        adapter_name=adapter_name,
        from_scratch=from_scratch,
        status="running",
        step=step,
        details=details,
        started_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return _record(row)


def update_run(
    session: Session,
    run_id: int,
    *,
    step: str | None = None,
    adapter_name: str | None = None,
    parent_version: str | None = None,
    adapter_version: str | None = None,
    dataset_version: str | None = None,
    from_scratch: bool | None = None,
    exit_code: int | None = None,
    details: dict[str, Any] | None = None,
) -> RunRecord:
    """Change what is given (None leaves a column as it is); `details` is merged into the stored ones."""
    row = _row(session, run_id)
    columns = {
        "step": step,
        "adapter_name": adapter_name,
        "parent_version": parent_version,
        "adapter_version": adapter_version,
        "dataset_version": dataset_version,
        "from_scratch": from_scratch,
        "exit_code": exit_code,
    }
    for name, value in columns.items():
        if value is not None:
            setattr(row, name, value)
    if details:
        row.details = {**(row.details or {}), **details}
    session.flush()
    return _record(row)


def finish_run(
    session: Session, run_id: int, *, status: str, exit_code: int, details: dict[str, Any] | None = None
) -> RunRecord:
    """End a run with `status` (not `running`) and its exit code."""
    if status not in RUN_STATUSES or status == "running":
        raise ValueError(f"a finished run's status is one of {', '.join(RUN_STATUSES[1:])}, not {status!r}")
    row = _row(session, run_id)
    row.status, row.exit_code, row.finished_at = status, exit_code, utcnow()
    if details:
        row.details = {**(row.details or {}), **details}
    session.flush()
    return _record(row)


def list_runs(session: Session, limit: int = 20) -> list[RunRecord]:
    """The newest runs first."""
    rows = session.scalars(select(RetrainRun).order_by(RetrainRun.id.desc()).limit(limit))
    return [_record(row) for row in rows]
