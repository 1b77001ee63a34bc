"""The `zantara` command: serve, rollout, database, demo model (dataset and training register here too)."""

from __future__ import annotations

import getpass
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from service.adapters_cli import app as adapters_app
from service.gpu_smoke import gpu_smoke
from service.reviewers_cli import app as reviewers_app
from service.settings import Settings
from training.dataset.cli import app as dataset_app
from training.evaluation.cli import EvalHooks
from training.retrain.cli import build_retrain_command
from training.train.cli import train
from zantara.eval_engine import EngineSource, eval_command

app = typer.Typer(
    help="ZANTARA: serving, canary routing, feedback and LoRA fine-tuning.", no_args_is_help=True
)
rollout_app = typer.Typer(
    help="Read or change the canary rollout of a running service.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)
app.add_typer(rollout_app, name="rollout")
app.add_typer(db_app, name="db")
app.add_typer(dataset_app, name="dataset")
app.add_typer(reviewers_app, name="reviewers")
app.add_typer(adapters_app, name="adapters")
app.command("train")(train)
app.command("gpu-smoke")(gpu_smoke)
app.command("eval")(eval_command)
app.command("retrain")(
    build_retrain_command(
        EvalHooks(
            in_process=lambda base, specs: EngineSource(Settings(), base, specs),
            database_url=lambda: Settings().resolved_database_url,
        )
    )
)
console = Console()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default ZANTARA_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default ZANTARA_PORT).")] = None,
) -> None:
    """Start the service on its settings (embedded defaults: demo model, SQLite under ./var); SIGTERM drains
    running requests and streams (up to ZANTARA_GRACEFUL_SHUTDOWN_S), then exits 0. Exits 3, saying why,
    when the model cannot be loaded or the demo model cannot be built."""
    from service.app import create_app
    from service.shutdown import exit_on_startup_failure
    from service.shutdown import serve as serve_app
    from zantara.demo import build_demo_models, needs_demo_models

    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if needs_demo_models(settings):
        try:
            build_demo_models(settings)
        except Exception as error:  # noqa: BLE001 - any failure to build it ends the start, with the reason
            logging.getLogger(__name__).exception("could not build the demo model")
            exit_on_startup_failure(f"the demo model could not be built: {type(error).__name__}: {error}")
    token_source = "ZANTARA_ADMIN_TOKEN" if settings.admin_token else str(settings.var_dir / "admin-token")
    console.print(f"[bold]zantara[/] admin token: {token_source}; database: {masked_url(settings)}")
    serve_app(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level,
        drain_s=settings.graceful_shutdown_s,
    )


def masked_url(settings: Settings) -> str:
    """The database URL for humans and logs: its password shown as `***`."""
    return make_url(settings.resolved_database_url).render_as_string(hide_password=True)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    database_url: Annotated[str | None, typer.Option(help="Default: ZANTARA_DATABASE_URL.")] = None,
) -> None:
    """Apply the Alembic migrations (idempotent)."""
    from database.migrate import current_revision, upgrade

    url = database_url or Settings().resolved_database_url
    upgrade(url, revision)
    console.print(f"database at revision [bold]{current_revision(url)}[/]")


@db_app.command("current")
def db_current(
    database_url: Annotated[str | None, typer.Option(help="Default: ZANTARA_DATABASE_URL.")] = None,
) -> None:
    """Print the schema revision of the database."""
    from database.migrate import current_revision

    console.print(current_revision(database_url or Settings().resolved_database_url) or "empty")


@app.command("demo-model")
def demo_model(
    var_dir: Annotated[Path | None, typer.Option(help="Default: ZANTARA_VAR_DIR (./var).")] = None,
) -> None:
    """Build the tiny demo base model and demo adapter (what `serve` does on first start)."""
    from zantara.demo import build_demo_models

    settings = Settings(var_dir=var_dir) if var_dir else Settings()
    build_demo_models(settings)
    console.print(f"demo base model: {settings.demo_base_path}")


class ServiceClient:
    """Talks to a running service's admin API with the admin token."""

    def __init__(self, url: str | None, token: str | None) -> None:
        settings = Settings()
        self.url = (url or os.environ.get("ZANTARA_URL") or f"http://{settings.host}:{settings.port}").rstrip(
            "/"
        )
        token = token or settings.admin_token
        token_file = settings.var_dir / "admin-token"
        if not token and token_file.is_file():
            token = token_file.read_text().strip()
        if not token:
            console.print("[red]No admin token:[/] set ZANTARA_ADMIN_TOKEN or pass --token.")
            raise typer.Exit(2)
        self.headers = {"Authorization": f"Bearer {token}", "X-Zantara-Actor": _operator()}

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One admin request; prints the service's error message and exits non-zero on failure."""
        try:
            response = httpx.request(method, self.url + path, json=body, headers=self.headers, timeout=30)
        except httpx.HTTPError as error:
            console.print(f"[red]Cannot reach {self.url}:[/] {error}")
            raise typer.Exit(1) from None
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            console.print(f"[red]{response.status_code}:[/] {message}")
            raise typer.Exit(1)
        return response.json() if response.content else None


def _operator() -> str:
    """Who runs the command, for the audit trail (containers may run with a UID that has no name)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


UrlOption = Annotated[
    str | None, typer.Option("--url", help="Service URL (default ZANTARA_URL or host:port).")
]
TokenOption = Annotated[
    str | None, typer.Option("--token", help="Admin token (default ZANTARA_ADMIN_TOKEN).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ExpectOption = Annotated[
    str | None,
    typer.Option(
        "--expect",
        help="Only if the rollout still acts on this version, NAME@VERSION: the active canary (a rollback "
        "without one: the live adapter); else refused (409), nothing changed.",
    ),
]


def _with_expected(body: dict[str, Any], expect: str | None) -> dict[str, Any]:
    """The request body, with the compare-and-set version when one is given."""
    return body | {"expected_adapter": expect} if expect else body


def _show_rollout(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data) + "\n")
        return
    table = Table(show_header=False)
    for key in ("percentage", "adapter", "live_adapter", "updated_at", "updated_by", "adapters_loaded"):
        table.add_row(key, str(data.get(key)))
    console.print(table)


@rollout_app.command("get")
def rollout_get(url: UrlOption = None, token: TokenOption = None, as_json: JsonOption = False) -> None:
    """Show the canary adapter and its share of users, and the live adapter everyone else gets."""
    _show_rollout(ServiceClient(url, token).call("GET", "/admin/rollout"), as_json)


@rollout_app.command("set")
def rollout_set(
    percentage: Annotated[float, typer.Argument(min=0, max=100, help="Share of users on the canary.")],
    adapter: Annotated[
        str | None, typer.Option(help="The canary, NAME or NAME@VERSION (default: keep).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "",
    expect: ExpectOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Set the canary and its share of users; a registered version is hot-loaded (audited)."""
    body: dict[str, Any] = {"percentage": percentage, "reason": reason}
    if adapter:
        body["adapter"] = adapter
    _show_rollout(
        ServiceClient(url, token).call("PUT", "/admin/rollout", _with_expected(body, expect)), as_json
    )


@rollout_app.command("rollback")
def rollout_rollback(
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "",
    expect: ExpectOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """One step back now: the canary's users return to the live adapter (or the base model); without
    a canary, the live adapter gives way to the previous live version or the base model (audited)."""
    body = _with_expected({"reason": reason}, expect)
    _show_rollout(ServiceClient(url, token).call("POST", "/admin/rollback", body), as_json)


@rollout_app.command("promote")
def rollout_promote(
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "",
    expect: ExpectOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make the active canary the live adapter for every user; refused without one (audited)."""
    body = _with_expected({"reason": reason}, expect)
    _show_rollout(ServiceClient(url, token).call("POST", "/admin/promote", body), as_json)


@rollout_app.command("history")
def rollout_history(
    limit: Annotated[int, typer.Option(help="How many events.")] = 20,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """The audit trail of rollout changes, newest first."""
    events = ServiceClient(url, token).call("GET", f"/admin/rollout/events?limit={limit}")
    if as_json:
        sys.stdout.write(json.dumps(events) + "\n")
        return
    table = Table("when", "who", "action", "canary from", "canary to", "live", "reason")
    for e in events:
        live = e["to_live"] if e["from_live"] == e["to_live"] else f"{e['from_live']} -> {e['to_live']}"
        table.add_row(
            e["created_at"],
            e["actor"],
            e["action"],
            f"{e['from_percentage']}% {e['from_adapter']}",
            f"{e['to_percentage']}% {e['to_adapter']}",
            str(live or "base"),
            e["reason"],
        )
    console.print(table)
