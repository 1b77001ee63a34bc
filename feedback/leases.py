"""Named, expiring database leases: one holder at a time across every replica and process.

A lease is taken with one atomic upsert (`INSERT ... ON CONFLICT DO UPDATE ... WHERE` the lease has
expired or is already ours, `RETURNING` its holder), so two processes asking at once never both get
it, on PostgreSQL (the conflicting row is locked and the condition re-read) as on SQLite (writers
are serialised). Holders renew by acquiring again before `ttl_s` runs out; a holder that dies simply
stops renewing and the lease passes on once it expires.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import case, delete, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from database.models import Lease, utcnow


def acquire(sessions: sessionmaker[Session], name: str, holder: str, ttl_s: float) -> bool:
    """Take the lease `name` for `holder` for `ttl_s` seconds when it is free or expired, or renew it
    when `holder` already has it; True when `holder` holds it afterwards."""
    if ttl_s <= 0:
        raise ValueError(f"ttl_s must be positive, got {ttl_s}")
    now = utcnow()
    with sessions.begin() as session:
        dialect = session.get_bind().dialect.name
        if dialect not in ("postgresql", "sqlite"):
            raise NotImplementedError(f"leases support PostgreSQL and SQLite, not {dialect}")
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement: postgresql.Insert | sqlite.Insert = insert(Lease).values(
            name=name, holder=holder, acquired_at=now, expires_at=now + timedelta(seconds=ttl_s)
        )
        upsert = statement.on_conflict_do_update(
            index_elements=[Lease.name],
            set_={
                "holder": statement.excluded.holder,
                # a renewal keeps the time the holder first took the lease
                "acquired_at": case(
                    (Lease.holder == holder, Lease.acquired_at), else_=statement.excluded.acquired_at
                ),
                "expires_at": statement.excluded.expires_at,
            },
            where=or_(Lease.holder == holder, Lease.expires_at <= now),
        ).returning(Lease.holder)
        return session.execute(upsert).scalar() == holder


def release(sessions: sessionmaker[Session], name: str, holder: str) -> None:
    """Give the lease `name` up if `holder` holds it (someone else's lease is left alone)."""
    with sessions.begin() as session:
        session.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))
