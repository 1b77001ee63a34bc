"""Registration of trained adapters in the database's adapter registry."""

from __future__ import annotations

from typing import Any


def register_adapter(database_url: str, meta: dict[str, Any], path: str) -> int:
    """Insert (or update) the registry row for the adapter described by `meta`; returns its id."""
    from sqlalchemy import select

    from feedback.db import create_db_engine, make_session_factory
    from feedback.models import AdapterVersion

    engine = create_db_engine(database_url)
    try:
        with make_session_factory(engine)() as session, session.begin():
            row = session.scalar(
                select(AdapterVersion).where(
                    AdapterVersion.name == meta["name"], AdapterVersion.version == meta["version"]
                )
            )
            if row is None:
                row = AdapterVersion(name=meta["name"], version=meta["version"])
                session.add(row)
            row.path = path
            row.base_model = meta["base_model"]
            row.dataset_version = meta["dataset"]["version"]
            row.metrics = meta["metrics"]
            session.flush()
            return row.id
    finally:
        engine.dispose()
