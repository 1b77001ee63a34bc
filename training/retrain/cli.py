"""`zantara retrain`: learn from the reviewers' corrections and start the result as the canary.

    zantara retrain                      # weekly, from the Helm chart's CronJob, or by hand
    zantara retrain --from-scratch       # the whole dataset from the base model (the v2.0 milestone)
    zantara retrain --eval-limit 20 --service http://zantara:8000
    zantara retrain --method dpo         # preference tuning on ratings, corrections and A/B verdicts

Exit code 0: the new version is the canary; 1: its gates failed (registered as `rejected` with its
report); 2: error (a run interrupted by an error or a crash is resumed at its step by the next run),
or another run holds the lock; 3: no correction since the parent version, nothing new to learn from.

Settings come from options, else the service's environment variables, resolved as the service resolves
them (`ZANTARA_VAR_DIR`, `ZANTARA_DATABASE_URL`, `ZANTARA_ADAPTERS_DIR`, `ZANTARA_BASE_MODEL`,
`ZANTARA_MODELS_DIR`, `ZANTARA_ADMIN_TOKEN` or `VAR_DIR/admin-token`); training never imports the
service, so the service's CLI builds this command with `build_retrain_command(hooks)`, handing in the
in-process evaluation engine.
"""

from __future__ import annotations

import getpass
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated

import typer

from training.evaluation.cli import EvalHooks
from training.retrain.config import RETRAIN_GATES, RetrainOptions
from training.retrain.pipeline import retrain

DEMO_BASE_MODEL = "zantara-demo-base"
DEFAULT_SERVICE = "http://127.0.0.1:8000"


def resolve_var_dir(var_dir: Path | None, env: Mapping[str, str]) -> Path:
    """`--var-dir`, else `ZANTARA_VAR_DIR`, else `./var` (as the service's settings)."""
    return var_dir or Path(env.get("ZANTARA_VAR_DIR") or "var")


def resolve_database_url(url: str | None, var_dir: Path, env: Mapping[str, str]) -> str:
    """`--database-url`, else `ZANTARA_DATABASE_URL`, else the embedded SQLite file under the var dir."""
    return url or env.get("ZANTARA_DATABASE_URL") or f"sqlite:///{(var_dir / 'zantara.db').resolve()}"


def resolve_adapters_dir(adapters_dir: Path | None, var_dir: Path, env: Mapping[str, str]) -> Path:
    """`--adapters-dir`, else `ZANTARA_ADAPTERS_DIR`, else `VAR_DIR/adapters`."""
    found = adapters_dir or env.get("ZANTARA_ADAPTERS_DIR")
    return Path(found) if found else var_dir / "adapters"


def resolve_base_model(base_model: str | None, var_dir: Path, env: Mapping[str, str], progress: bool) -> str:
    """`--base-model`, else `ZANTARA_BASE_MODEL`; the demo sentinel (the default) is the demo base under
    `ZANTARA_MODELS_DIR` (default `VAR_DIR/models`), built there when missing. Directories are absolute."""
    chosen = base_model or env.get("ZANTARA_BASE_MODEL") or DEMO_BASE_MODEL
    if chosen == DEMO_BASE_MODEL:
        from training.demo.model import ensure_demo_base

        models = Path(env.get("ZANTARA_MODELS_DIR") or var_dir / "models")
        return str(ensure_demo_base(models / DEMO_BASE_MODEL, progress=progress).resolve())
    return str(Path(chosen).resolve()) if Path(chosen).is_dir() else chosen


def resolve_admin_token(var_dir: Path, env: Mapping[str, str]) -> str:
    """`ZANTARA_ADMIN_TOKEN`, else the development token the service keeps in `VAR_DIR/admin-token`."""
    token = env.get("ZANTARA_ADMIN_TOKEN", "")
    path = var_dir / "admin-token"
    if not token and path.is_file():
        token = path.read_text(encoding="utf-8").strip()
    return token


def resolve_api_key(env: Mapping[str, str]) -> str | None:
    """`ZANTARA_API_KEY`, else the first of the service's `ZANTARA_API_KEYS` (for `GET /v1/models`)."""
    keys = [key.strip() for key in env.get("ZANTARA_API_KEYS", "").split(",") if key.strip()]
    return env.get("ZANTARA_API_KEY") or (keys[0] if keys else None)


def build_retrain_command(hooks: EvalHooks) -> Callable[..., None]:
    """The typer command `zantara retrain`, evaluating in process through the service's `hooks`."""

    def retrain_command(
        name: Annotated[
            str | None, typer.Option(help="Adapter name (default: the live adapter's, else the newest).")
        ] = None,
        method: Annotated[
            str,
            typer.Option(
                help="sft (corrections, the default), kto or dpo (every rating, correction and A/B "
                "verdict, the parent adapter as reference, gated on the held-out preference margin)."
            ),
        ] = "sft",
        from_scratch: Annotated[
            bool, typer.Option("--from-scratch", help="Train on the whole dataset from the base model.")
        ] = False,
        force: Annotated[bool, typer.Option("--force", help="Retrain even without new corrections.")] = False,
        fresh: Annotated[
            bool, typer.Option("--fresh", help="Abandon an interrupted run instead of resuming it.")
        ] = False,
        wait: Annotated[
            bool, typer.Option("--wait", help="Wait for a running retrain instead of exiting 2.")
        ] = False,
        service: Annotated[
            list[str] | None,
            typer.Option(
                help=f"Service replica URL, repeatable (default ZANTARA_SERVICE_URL or {DEFAULT_SERVICE})."
            ),
        ] = None,
        percentage: Annotated[
            float | None,
            typer.Option(
                min=0, max=100, help="Canary share (default ZANTARA_DEFAULT_ROLLOUT_PERCENTAGE or 20)."
            ),
        ] = None,
        eval_limit: Annotated[
            int | None, typer.Option(min=1, help="Evaluate on at most N questions per set (faster).")
        ] = None,
        gates: Annotated[
            Path,
            typer.Option(
                help="Gates YAML (default knowledge/data/eval/retrain_gates.yaml).", show_default=False
            ),
        ] = RETRAIN_GATES,
        max_steps: Annotated[int | None, typer.Option(help="Stop training after N optimiser steps.")] = None,
        preset: Annotated[
            str | None, typer.Option(help="Training preset (default: as `zantara train` picks it).")
        ] = None,
        train_config: Annotated[
            Path | None, typer.Option(help="YAML of training config fields, as `zantara train --config`.")
        ] = None,
        corrections_repeat: Annotated[
            int, typer.Option(min=1, help="Continuing a parent: times each new correction is trained on.")
        ] = RetrainOptions.corrections_repeat,
        replay_pairs: Annotated[
            int,
            typer.Option(min=0, help="Continuing a parent: pairs replayed from the dataset's train split."),
        ] = RetrainOptions.replay_pairs,
        include_unvalidated: Annotated[
            bool,
            typer.Option(
                "--include-unvalidated/--validated-only",
                help="Build the dataset with pairs nobody has validated yet (default: validated only).",
            ),
        ] = False,
        load_timeout: Annotated[
            float, typer.Option(help="Seconds to wait for the replicas to serve the new version.")
        ] = 300.0,
        database_url: Annotated[str | None, typer.Option(help="Default: ZANTARA_DATABASE_URL.")] = None,
        var_dir: Annotated[Path | None, typer.Option(help="Default: ZANTARA_VAR_DIR (./var).")] = None,
        adapters_dir: Annotated[
            Path | None, typer.Option(help="Default: ZANTARA_ADAPTERS_DIR (VAR_DIR/adapters).")
        ] = None,
        base_model: Annotated[
            str | None, typer.Option(help="Default: ZANTARA_BASE_MODEL (the demo base).")
        ] = None,
        progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    ) -> None:
        """Corrections since the last version -> dataset -> train -> gates -> registry -> canary.
        Exit 0 canary started, 1 gates failed, 2 error or locked (resumable), 3 nothing new."""
        if method not in ("sft", "kto", "dpo"):
            message = f"error: --method must be sft, kto or dpo, not {method!r}"
            typer.secho(message, fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
        env = os.environ
        _log_to_console()
        root = resolve_var_dir(var_dir, env)
        services = service or [url for url in env.get("ZANTARA_SERVICE_URL", "").split(",") if url.strip()]
        share = (
            percentage if percentage is not None else float(env.get("ZANTARA_DEFAULT_ROLLOUT_PERCENTAGE", 20))
        )
        options = RetrainOptions(
            database_url=resolve_database_url(database_url, root, env),
            var_dir=root,
            adapters_dir=resolve_adapters_dir(adapters_dir, root, env),
            base_model=resolve_base_model(base_model, root, env, progress),
            services=tuple(url.strip() for url in services) or (DEFAULT_SERVICE,),
            admin_token=resolve_admin_token(root, env),
            api_key=resolve_api_key(env),
            name=name,
            from_scratch=from_scratch,
            force=force,
            fresh=fresh,
            wait=wait,
            gates=gates,
            eval_limit=eval_limit,
            max_steps=max_steps,
            preset=preset,
            train_config=train_config,
            corrections_repeat=corrections_repeat,
            replay_pairs=replay_pairs,
            include_unvalidated=include_unvalidated,
            canary_percentage=share,
            load_timeout_s=load_timeout,
            actor=f"retrain:{_operator()}",
            progress=progress,
            method=method,
        )
        outcome = retrain(options, hooks)
        colour = {0: typer.colors.GREEN, 3: typer.colors.YELLOW}.get(outcome.exit_code, typer.colors.RED)
        typer.secho(f"{outcome.status}: {outcome.message}", fg=colour, err=outcome.exit_code in (1, 2))
        raise typer.Exit(outcome.exit_code)

    return retrain_command


def _log_to_console() -> None:
    """Step logs through rich, above the progress bars (unless logging is configured already)."""
    from rich.logging import RichHandler

    logging.basicConfig(format="%(message)s", handlers=[RichHandler(show_path=False, markup=False)])
    logging.getLogger("zantara.retrain").setLevel(logging.INFO)


def _operator() -> str:
    """Who runs the command (containers may run with a UID that has no name)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"
