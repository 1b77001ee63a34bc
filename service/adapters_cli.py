"""`zantara adapters list|show`: the adapter registry (every version, its lineage, scores and status)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from feedback.registry import AdapterEntry, get_version, list_versions
from service.reviewers_cli import DatabaseOption, database_sessions

app = typer.Typer(help="The adapter registry: versions, lineage, gate reports, status.", no_args_is_help=True)
console = Console()
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.command("list")
def list_command(
    name: Annotated[str | None, typer.Option(help="Only this adapter name.")] = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every registered version, oldest first, with its status and lineage."""
    with database_sessions(database_url) as sessions, sessions() as session:
        entries = list_versions(session, name)
    if as_json:
        sys.stdout.write(json.dumps([entry.to_dict() for entry in entries]) + "\n")
        return
    table = Table("adapter", "status", "parent", "dataset", "gates", "eval loss", "created", "by")
    for entry in entries:
        table.add_row(
            entry.key,
            entry.status,
            entry.parent_version or "-",
            entry.dataset_version or "-",
            _gates(entry),
            str(entry.metrics.get("eval_loss", "-")),
            entry.created_at.strftime("%Y-%m-%d %H:%M"),
            entry.created_by or "-",
        )
    console.print(table)


@app.command("show")
def show_command(
    key: Annotated[str, typer.Argument(help="NAME@VERSION")],
    database_url: DatabaseOption = None,
) -> None:
    """Everything the registry holds about one version, as JSON (the gate report included)."""
    with database_sessions(database_url) as sessions, sessions() as session:
        entry = get_version(session, key)
    if entry is None:
        Console(stderr=True).print(
            f"[red]{key!r} is not in the adapter registry[/] (`zantara adapters list`)."
        )
        raise typer.Exit(1)
    sys.stdout.write(json.dumps(entry.to_dict(), indent=2, ensure_ascii=False) + "\n")


def _gates(entry: AdapterEntry) -> str:
    """`passed`, `failed` or `-` (no gate report) from the version's gate report."""
    if not entry.gate_report:
        return "-"
    return "passed" if entry.gate_report.get("passed") else "failed"
