"""`zantara reviewers add|list|revoke`: the named people who may use the review pages."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker

from feedback.reviewers import (
    ReviewerExistsError,
    UnknownReviewerError,
    add_reviewer,
    list_reviewers,
    revoke_reviewer,
)
from service.settings import Settings

app = typer.Typer(help="Reviewers of the review pages, each with their own token.", no_args_is_help=True)
console = Console(stderr=True)

DatabaseOption = Annotated[str | None, typer.Option(help="Default: ZANTARA_DATABASE_URL.")]


@contextmanager
def database_sessions(database_url: str | None) -> Iterator[sessionmaker[Session]]:
    """Sessions on `database_url` (default: the service's), its schema brought up to date first."""
    from database.engine import create_db_engine, make_session_factory
    from database.migrate import upgrade

    url = database_url or Settings().resolved_database_url
    upgrade(url)
    engine = create_db_engine(url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The reviewer's name, shown on their judgments.")],
    database_url: DatabaseOption = None,
) -> None:
    """Create a reviewer and print their token once (only its hash is stored: keep it safe)."""
    with database_sessions(database_url) as sessions:
        try:
            reviewer, token = add_reviewer(sessions, name)
        except ReviewerExistsError:
            console.print(f"[red]A reviewer named {name!r} already exists[/] (`zantara reviewers list`).")
            raise typer.Exit(1) from None
        except ValueError as error:
            console.print(f"[red]{error}[/]")
            raise typer.Exit(2) from None
    console.print(f"reviewer [bold]{reviewer.name}[/] added; their token (shown only now):")
    sys.stdout.write(token + "\n")


@app.command("list")
def list_(
    database_url: DatabaseOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Every reviewer, active and revoked (never their tokens)."""
    with database_sessions(database_url) as sessions:
        reviewers = list_reviewers(sessions)
    if as_json:
        rows = [
            {
                "name": r.name,
                "created_at": r.created_at.isoformat(),
                "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
            }
            for r in reviewers
        ]
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    table = Table("name", "added", "status")
    for r in reviewers:
        table.add_row(
            r.name,
            f"{r.created_at:%Y-%m-%d %H:%M}",
            "active" if r.active else f"revoked {r.revoked_at:%Y-%m-%d}",
        )
    Console().print(table)


@app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The reviewer to lock out.")],
    database_url: DatabaseOption = None,
) -> None:
    """Revoke a reviewer's token and sign them out everywhere; their judgments stay."""
    with database_sessions(database_url) as sessions:
        try:
            revoke_reviewer(sessions, name)
        except UnknownReviewerError:
            console.print(f"[red]No reviewer named {name!r}[/] (`zantara reviewers list`).")
            raise typer.Exit(1) from None
    console.print(f"reviewer [bold]{name}[/] revoked")
