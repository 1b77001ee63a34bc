"""Reviewers and their sign-in sessions: named people, each with their own secret token.

Tokens and session ids are 256-bit random strings; only their SHA-256 is stored, so a copy of the
database lets nobody sign in. (A slow password hash buys nothing for values this random.)
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from database.models import Reviewer, ReviewerSession, utcnow

TOKEN_PREFIX = "zrv_"
"""Reviewer tokens start with this, so a leaked one is recognisable in logs and secret scanners."""


@dataclass(frozen=True)
class ReviewerView:
    """A reviewer as the CLI and the pages show them (never the token)."""

    id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        """False once revoked."""
        return self.revoked_at is None


class ReviewerExistsError(ValueError):
    """A reviewer with this name already exists."""


class UnknownReviewerError(LookupError):
    """No reviewer has this name."""


def hash_secret(secret: str) -> str:
    """Hex SHA-256 of a token or session id: what the database keeps instead of the secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _view(row: Reviewer) -> ReviewerView:
    return ReviewerView(row.id, row.name, row.created_at, row.revoked_at)


def add_reviewer(sessions: sessionmaker[Session], name: str) -> tuple[ReviewerView, str]:
    """Create a reviewer and return them with their token, which is shown this once and never stored."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("a reviewer name needs 1-100 characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        with sessions.begin() as session:
            row = Reviewer(name=name, token_hash=hash_secret(token), created_at=utcnow())
            session.add(row)
            session.flush()
            return _view(row), token
    except IntegrityError:
        raise ReviewerExistsError(name) from None


def list_reviewers(sessions: sessionmaker[Session]) -> list[ReviewerView]:
    """Every reviewer, active and revoked, oldest first."""
    with sessions() as session:
        return [_view(row) for row in session.scalars(select(Reviewer).order_by(Reviewer.id))]


def revoke_reviewer(sessions: sessionmaker[Session], name: str) -> ReviewerView:
    """Revoke a reviewer's token and end their sessions at once; their judgments are kept."""
    with sessions.begin() as session:
        row = session.scalar(select(Reviewer).where(Reviewer.name == name.strip()))
        if row is None:
            raise UnknownReviewerError(name)
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        session.execute(delete(ReviewerSession).where(ReviewerSession.reviewer_id == row.id))
        return _view(row)


def reviewer_for_token(sessions: sessionmaker[Session], token: str) -> ReviewerView | None:
    """The active reviewer holding `token`, or None (unknown or revoked)."""
    with sessions() as session:
        row = session.scalar(select(Reviewer).where(Reviewer.token_hash == hash_secret(token)))
        return _view(row) if row is not None and row.revoked_at is None else None


def start_session(sessions: sessionmaker[Session], reviewer_id: int, ttl: timedelta) -> str:
    """Open a sign-in session for `reviewer_id` (expired ones are swept); returns the session id."""
    session_id = secrets.token_urlsafe(32)
    now = utcnow()
    with sessions.begin() as session:
        session.execute(delete(ReviewerSession).where(ReviewerSession.expires_at < now))
        session.add(
            ReviewerSession(
                id_hash=hash_secret(session_id), reviewer_id=reviewer_id, created_at=now, expires_at=now + ttl
            )
        )
    return session_id


def reviewer_for_session(sessions: sessionmaker[Session], session_id: str) -> ReviewerView | None:
    """The active reviewer of an unexpired session, or None."""
    with sessions() as session:
        row = session.execute(
            select(Reviewer, ReviewerSession.expires_at)
            .join(ReviewerSession, ReviewerSession.reviewer_id == Reviewer.id)
            .where(ReviewerSession.id_hash == hash_secret(session_id))
        ).first()
    if row is None or row[0].revoked_at is not None or _aware(row[1]) <= utcnow():
        return None
    return _view(row[0])


def end_session(sessions: sessionmaker[Session], session_id: str) -> None:
    """Sign out: the session id stops working everywhere."""
    with sessions.begin() as session:
        session.execute(delete(ReviewerSession).where(ReviewerSession.id_hash == hash_secret(session_id)))


def _aware(moment: datetime) -> datetime:
    """SQLite hands timestamps back without a zone; they are UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
