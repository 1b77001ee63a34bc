"""`zantara dataset ...`: build, check, stats, submit, import-conversations, import-corrections, and
`zantara dataset preferences build|check` (KTO/DPO datasets from the feedback loop).

Registered in the main CLI with `app.add_typer(dataset_app, name="dataset")`.
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from knowledge.checklist import Issue
from knowledge.fact_check import FactChecker
from knowledge.facts import load_facts
from training.dataset.build import (
    DEFAULT_FACTS,
    DEFAULT_SEED,
    BuildError,
    BuildOptions,
    build,
    default_datasets_dir,
)
from training.dataset.checks import Report, check_file
from training.dataset.conversations import import_conversations
from training.dataset.corrections import load_corrections_file, store_corrections
from training.dataset.files import DatasetInputError, write_jsonl
from training.dataset.generator import EndpointClient, EndpointConfig, Generator, ModelGenerator
from training.dataset.preferences import (
    DEFAULT_DESIRABLE,
    DEFAULT_PER_USER_CAP,
    DEFAULT_UNDESIRABLE,
    PreferenceOptions,
)
from training.dataset.preferences_build import (
    DEFAULT_TEST_SHARE,
    NothingToBuildError,
    PreferenceBuildError,
    PreferenceBuildOptions,
    build_preferences,
    newest_dataset,
)
from training.dataset.preferences_filters import check_preference_file, eval_questions
from training.dataset.stats import dataset_stats, file_stats, render, source_stats
from training.dataset.validation import unvalidated_records

app = typer.Typer(help="Build, check and inspect the ZANTARA training dataset.", no_args_is_help=True)
preferences_app = typer.Typer(
    help="Preference (KTO, DPO) datasets from ratings, corrections and A/B verdicts.", no_args_is_help=True
)
app.add_typer(preferences_app, name="preferences")
console = Console()
errors = Console(stderr=True)

EXIT_ERRORS = 1
EXIT_BAD_INPUT = 2
EXIT_NOTHING = 3


class PreferenceKind(StrEnum):
    """The preference dataset kinds: KTO (unpaired, labelled answers) or DPO (chosen/rejected pairs)."""

    kto = "kto"
    dpo = "dpo"


@app.command("build")
def build_command(
    out: Annotated[
        Path | None,
        typer.Option(help="Output folder (default: datasets/<version> in ZANTARA_VAR_DIR, ./var)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
    seed: Annotated[Path, typer.Option(help="Seed question bank (.jsonl).")] = DEFAULT_SEED,
    facts: Annotated[Path, typer.Option(help="Fact registry (.yaml).")] = DEFAULT_FACTS,
    corrections: Annotated[
        list[Path] | None,
        typer.Option(help="Corrections file(s) (.jsonl/.json); default: knowledge/data/corrections/*.jsonl."),
    ] = None,
    no_corrections: Annotated[bool, typer.Option(help="Leave correction files out.")] = False,
    database_url: Annotated[
        str | None,
        typer.Option(help="Also take corrections and the dataset reviewers' verdicts from this database."),
    ] = None,
    include_unvalidated: Annotated[
        bool,
        typer.Option(
            "--include-unvalidated/--validated-only",
            help="Keep pairs nobody has validated yet (default: leave them out, in unvalidated.jsonl).",
        ),
    ] = False,
    reviews_required: Annotated[
        int,
        typer.Option(
            min=1,
            max=10,
            envvar="ZANTARA_DATASET_REVIEWS_REQUIRED",
            help="Verdicts a reviewed record needs before it is decided (as the service's setting).",
        ),
    ] = 1,
    conversations: Annotated[
        list[Path] | None,
        typer.Option(
            help="Chat-log export(s) to import (.jsonl/.csv); default: knowledge/data/conversations/*.jsonl."
        ),
    ] = None,
    no_conversations: Annotated[bool, typer.Option(help="Leave chat-log exports out.")] = False,
    extra: Annotated[
        list[Path] | None, typer.Option(help="Extra record file(s), Alpaca or chat messages.")
    ] = None,
    per_register: Annotated[
        int, typer.Option(min=4, max=6, help="Variations per register per seed question.")
    ] = 5,
    synthetic: Annotated[int, typer.Option(min=0, max=9, help="Synthetic questions per seed question.")] = 3,
    generator_url: Annotated[
        str | None,
        typer.Option(
            help="OpenAI-compatible base URL (e.g. http://localhost:8000/v1); default: offline rules."
        ),
    ] = None,
    generator_model: Annotated[
        str, typer.Option(help="Model name sent to the generator endpoint.")
    ] = "zantara",
    split_seed: Annotated[int, typer.Option(help="Seed of the group shuffle before splitting.")] = 13,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Build the training set (chat JSONL + Alpaca JSON, train/validation/test, manifest)."""
    options = BuildOptions(
        seed_path=seed,
        facts_path=facts,
        database_url=database_url,
        include_unvalidated=include_unvalidated,
        reviews_required=reviews_required,
        extra=extra or [],
        per_register=per_register,
        synthetic_per_seed=synthetic,
        split_seed=split_seed,
    )
    if no_corrections or corrections:
        options.corrections = [] if no_corrections else list(corrections or [])
    if no_conversations or conversations:
        options.conversations = [] if no_conversations else list(conversations or [])
    generator = _generator(generator_url, generator_model)
    try:
        result = build(
            options,
            generator,
            out,
            force=force,
            progress=progress,
            on_stage=lambda stage: errors.print(f"[dim]{stage}[/]"),
        )
    except DatasetInputError as exc:
        errors.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except BuildError as exc:
        errors.print(f"[red]error:[/] {exc}")
        _print_issues(exc.issues[:50], errors)
        raise typer.Exit(EXIT_ERRORS) from None
    except FileExistsError as exc:
        errors.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    finally:
        if isinstance(generator, ModelGenerator):
            generator.client.close()
    counts = result.manifest["counts"]
    console.print(f"[green]built[/] {result.manifest['version']} -> {result.out}")
    console.print(f"{counts['total']} pairs: " + ", ".join(f"{k} {v}" for k, v in counts["splits"].items()))
    review = result.manifest["validation"]
    console.print(
        f"review: {review['approved']} approved, {review['edited']} edited, "
        f"{review['left_out_rejected']} rejected and {review['left_out_unvalidated']} unvalidated left out"
    )
    console.print(f"{len(result.warnings)} warning(s) from the checklist; {len(result.notes)} note(s)")
    for note in result.notes[:20]:
        console.print(f"  [dim]{note}[/]")


@app.command("check")
def check_command(
    file: Annotated[
        Path, typer.Argument(help="A .json array or .jsonl file of Alpaca or chat-messages records.")
    ],
    facts: Annotated[Path, typer.Option(help="Fact registry for the figures check.")] = DEFAULT_FACTS,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    max_shown: Annotated[int, typer.Option(help="Show at most this many findings per severity.")] = 200,
) -> None:
    """Run the review checklist on FILE. Exit 0 clean (warnings allowed), 1 errors, 2 unreadable input."""
    try:
        checker = FactChecker(load_facts(facts)) if facts.exists() else None
        report = check_file(file, checker)
    except DatasetInputError as exc:
        if as_json:
            console.print_json(json.dumps({"file": str(file), "unreadable": str(exc)}))
        else:
            errors.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if as_json:
        typer.echo(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        _print_report(report, max_shown, facts_used=checker is not None)
    if report.errors:
        raise typer.Exit(EXIT_ERRORS)


@app.command("stats")
def stats_command(
    path: Annotated[
        Path | None, typer.Argument(help="A built dataset folder or a record file; default: knowledge/data/.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Counts and the distribution of the sources, a built dataset, or a record file."""
    try:
        if path is None:
            stats = source_stats()
        elif path.is_dir():
            stats = dataset_stats(path)
        else:
            stats = file_stats(path)
    except DatasetInputError as exc:
        errors.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if as_json:
        typer.echo(json.dumps(stats, ensure_ascii=False, indent=2))
    else:
        render(stats, console)


@app.command("submit")
def submit_command(
    dataset: Annotated[Path, typer.Argument(help="A dataset folder from `zantara dataset build`.")],
    database_url: Annotated[
        str,
        typer.Option(
            envvar="ZANTARA_DATABASE_URL", help="The service's database (schema must be up to date)."
        ),
    ],
) -> None:
    """Send the dataset's unvalidated pairs to the review page (/review/dataset); known ones are skipped."""
    from database.engine import create_db_engine, make_session_factory
    from feedback.dataset_review import submit_records

    try:
        version, pairs = unvalidated_records(dataset)
    except DatasetInputError as exc:
        errors.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    engine = create_db_engine(database_url)
    try:
        added = submit_records(make_session_factory(engine), version, pairs)
    finally:
        engine.dispose()
    console.print(
        f"{added} new record(s) submitted for review from {version}; "
        f"{len(pairs) - added} of {len(pairs)} unvalidated already known"
    )


@app.command("import-conversations")
def import_conversations_command(
    file: Annotated[Path, typer.Argument(help="Chat-log export (.jsonl, .json or .csv).")],
    out: Annotated[Path, typer.Option(help="Where to write the scrubbed pairs (chat-messages .jsonl).")],
) -> None:
    """Anonymise and filter a chat-log export into training pairs (pass them to build with --extra)."""
    try:
        pairs, rejected = import_conversations(file)
    except DatasetInputError as exc:
        errors.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    write_jsonl(out, (pair.to_chat() for pair in pairs))
    console.print(f"{len(pairs)} pair(s) written to {out}; {len(rejected)} conversation(s) left out")
    for item in rejected:
        console.print(f"  [dim]{file}:{item.line} {item.conversation_id}: {item.reason}[/]")


@app.command("import-corrections")
def import_corrections_command(
    file: Annotated[Path, typer.Argument(help="Corrections file (.jsonl or .json array).")],
    database_url: Annotated[str, typer.Option(help="Database to store them in (schema must be up to date).")],
    reviewer: Annotated[
        str, typer.Option(help="Recorded as the reviewer of the imported corrections.")
    ] = "import",
) -> None:
    """Validate a corrections file and store its records in the feedback database (skipping known ones)."""
    try:
        records = load_corrections_file(file)
    except DatasetInputError as exc:
        errors.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    added = store_corrections(database_url, records, reviewer)
    console.print(f"{added} correction(s) stored, {len(records) - added} already present")


@preferences_app.command("build")
def preferences_build_command(
    kind: Annotated[
        PreferenceKind, typer.Option(help="kto (labelled answers) or dpo (chosen/rejected pairs).")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Output folder (default: preferences/<version> in ZANTARA_VAR_DIR, ./var)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
    database_url: Annotated[
        str | None,
        typer.Option(help="The feedback database (default: ZANTARA_DATABASE_URL, else VAR/zantara.db)."),
    ] = None,
    eval_dataset: Annotated[
        Path | None,
        typer.Option(
            help="Dataset folder the evaluator uses: no row may share a question with its test or "
            "validation split (default: the newest `zantara dataset build` under VAR/datasets)."
        ),
    ] = None,
    desirable: Annotated[
        int, typer.Option(min=2, max=5, help="Stars from which a rated answer is desirable.")
    ] = DEFAULT_DESIRABLE,
    undesirable: Annotated[
        int, typer.Option(min=1, max=4, help="Stars up to which a rated answer is undesirable.")
    ] = DEFAULT_UNDESIRABLE,
    per_user_cap: Annotated[
        int, typer.Option(min=1, help="Rows at most from one user's answers.")
    ] = DEFAULT_PER_USER_CAP,
    test_share: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="Share of questions held out as test.jsonl.")
    ] = DEFAULT_TEST_SHARE,
    facts: Annotated[Path, typer.Option(help="Fact registry for the figures check.")] = DEFAULT_FACTS,
) -> None:
    """Build a KTO or DPO dataset from the feedback database. Exit 0 built, 1 unusable (KTO with one
    label only), 2 bad input, 3 nothing to build."""
    from sqlalchemy.exc import SQLAlchemyError

    from database.engine import create_db_engine, make_session_factory
    from feedback.preferences import read_signals
    from training.retrain.cli import resolve_database_url, resolve_var_dir

    try:
        thresholds = PreferenceOptions(desirable=desirable, undesirable=undesirable)
    except ValueError as exc:
        errors.print(f"[red]error:[/] --desirable/--undesirable: {exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    env = os.environ
    url = resolve_database_url(database_url, resolve_var_dir(None, env), env)
    evaluated = eval_dataset or newest_dataset(default_datasets_dir())
    if evaluated is None:
        errors.print(
            f"[red]error:[/] no dataset under {default_datasets_dir()} to check leakage against: "
            "build one with `zantara dataset build` or pass --eval-dataset DIR"
        )
        raise typer.Exit(EXIT_BAD_INPUT)
    try:
        evaluation = eval_questions(evaluated)
    except DatasetInputError as exc:
        errors.print(f"[red]error:[/] --eval-dataset: {exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    engine = create_db_engine(url)
    try:
        signals = read_signals(make_session_factory(engine))
    except SQLAlchemyError as exc:
        errors.print(
            f"[red]error:[/] cannot read the feedback database ({type(exc).__name__}); "
            "is it reachable and its schema up to date (`zantara db upgrade`)?"
        )
        raise typer.Exit(EXIT_BAD_INPUT) from None
    finally:
        engine.dispose()
    options = PreferenceBuildOptions(
        kind=kind.value,
        evaluation=evaluation,
        thresholds=thresholds,
        per_user_cap=per_user_cap,
        test_share=test_share,
        facts_path=facts,
    )
    try:
        result = build_preferences(signals, options, out, force=force)
    except NothingToBuildError as exc:
        errors.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_NOTHING) from None
    except PreferenceBuildError as exc:
        errors.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_ERRORS) from None
    except FileExistsError as exc:
        errors.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    _print_preferences(result.manifest, result.out)


@preferences_app.command("check")
def preferences_check_command(
    file: Annotated[Path, typer.Argument(help="A preference .jsonl (TRL KTO or DPO rows).")],
    facts: Annotated[Path, typer.Option(help="Fact registry for the figures check.")] = DEFAULT_FACTS,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    max_shown: Annotated[int, typer.Option(help="Show at most this many findings per severity.")] = 200,
) -> None:
    """The review checklist on a preference file. Exit 0 clean (warnings allowed), 1 errors, 2 unreadable."""
    try:
        checker = FactChecker(load_facts(facts)) if facts.exists() else None
        report = check_preference_file(file, checker)
    except DatasetInputError as exc:
        errors.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if as_json:
        typer.echo(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        _print_report(report, max_shown, facts_used=checker is not None)
    if report.errors:
        raise typer.Exit(EXIT_ERRORS)


def _print_preferences(manifest: dict[str, Any], out: Path) -> None:
    counts = manifest["counts"]
    console.print(f"[green]built[/] {manifest['version']} -> {out}")
    console.print(f"{counts['total']} row(s): " + ", ".join(f"{k} {v}" for k, v in counts["splits"].items()))
    console.print("by source: " + json.dumps(counts["sources"], ensure_ascii=False))
    left = manifest["left_out"]
    console.print("left out: " + (", ".join(f"{k} {v}" for k, v in left.items()) or "none"))
    balance = manifest.get("balance")
    if balance:
        console.print(
            f"KTO balance {balance['desirable']}:{balance['undesirable']}; desirable_weight "
            f"{balance['desirable_weight']}, undesirable_weight {balance['undesirable_weight']} "
            f"(weighted {balance['weighted_ratio']})"
        )


def _generator(url: str | None, model: str) -> Generator:
    if not url:
        return Generator()
    client = EndpointClient(EndpointConfig.from_env(url, model))
    return ModelGenerator(client, warn=lambda message: errors.print(f"[yellow]warning:[/] {message}"))


def _print_report(report: Report, max_shown: int, facts_used: bool) -> None:
    if not facts_used:
        errors.print("[yellow]note:[/] no fact registry found; figures were not checked")
    console.print(
        f"{report.source}: {report.records} record(s), {len(report.errors)} error(s), "
        f"{len(report.warnings)} warning(s)"
    )
    for title, issues in (("Errors", report.errors), ("Warnings", report.warnings)):
        if issues:
            console.print(f"[bold]{title}[/]")
            _print_issues(issues[:max_shown], console)
            if len(issues) > max_shown:
                console.print(f"  ... and {len(issues) - max_shown} more (use --json for all)")


def _print_issues(issues: list[Issue], target: Console) -> None:
    for issue in issues:
        colour = "red" if issue.severity == "error" else "yellow"
        record = f" {issue.record_id}" if issue.record_id else ""
        target.print(
            f"  line {issue.line}{escape(record)} [{colour}]{issue.check}[/]: {escape(issue.message)}",
            highlight=False,
        )
