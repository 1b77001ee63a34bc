"""`zantara eval`: score the base and adapters side by side, apply the quality gates, write the reports.

    zantara eval --dataset var/datasets/ds-... --adapter var/adapters/zantara/v3
    zantara eval --dataset DIR --endpoint http://gpu-host:8000/v1 --base BASE --adapter zantara@v3
    zantara eval --dataset DIR --adapter zantara@v4 --baseline zantara@v3 --corrections new.jsonl \
        --gates knowledge/data/eval/retrain_gates.yaml         # a retrain's candidate against its parent

Exit code 0: every gate passed; 1: a gate failed; 2: bad input (unknown dataset, adapter, endpoint,
gates file). The in-process path needs the serving engine, which lives in `service/` (training never
imports service): the service's CLI builds this command with `build_eval_command(hooks)`, handing in
the engine-backed answer source and the default database URL. Programmatically: `evaluate(options,
hooks)` returns the report and the exit code without printing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from training.evaluation.ab import ab_summaries, queue_ab_pairs
from training.evaluation.data import EvalData, EvalInputError, load_eval_data
from training.evaluation.facts import RegistryCheck
from training.evaluation.gates import DEFAULT_GATES, evaluate_gates, load_gates
from training.evaluation.http_source import HttpSource
from training.evaluation.preference_margin import (
    GATE,
    PreferencePair,
    load_pairs,
    pair_items,
    preference_gates,
)
from training.evaluation.report import write_reports
from training.evaluation.runner import Outputs, collect
from training.evaluation.scoring import score
from training.evaluation.sources import BASE, AnswerSource, TokenNLL

EXIT_PASSED, EXIT_GATE_FAILED, EXIT_BAD_INPUT = 0, 1, 2
DEFAULT_OUT = Path("var/eval")
console = Console()
errors = Console(stderr=True)


@dataclass(frozen=True)
class EvalHooks:
    """What the service hands in: the in-process answer source (base model, adapter specs) and the
    default database URL (the A/B review tables)."""

    in_process: Callable[[str | None, list[str]], AnswerSource]
    database_url: Callable[[], str]


@dataclass(frozen=True)
class EvalOptions:
    """One evaluation run as asked on the command line."""

    dataset: Path
    split: str = "test"
    out: Path | None = None
    gates: Path | None = None
    base_model: str | None = None
    adapters: list[str] = field(default_factory=list)
    endpoint: str | None = None
    api_key: str | None = None
    base: str | None = None
    max_tokens: int = 256
    limit: int | None = None
    bootstrap: int = 1000
    ab_sample: int = 0
    database_url: str | None = None
    progress: bool = True
    baseline: str | None = None
    corrections: Path | None = None
    preferences: Path | None = None


@dataclass(frozen=True)
class EvalResult:
    """How an evaluation ended: the exit code, the report (None on bad input) and where it was written,
    or the bad input's message."""

    exit_code: int
    report: dict[str, Any] | None = None
    json_path: Path | None = None
    html_path: Path | None = None
    error: str | None = None


def run_eval(options: EvalOptions, hooks: EvalHooks) -> int:
    """Run the evaluation, write the reports and print a summary; returns the exit code."""
    result = evaluate(options, hooks)
    if result.report is None:
        errors.print(f"[red]error:[/] {result.error}")
        return result.exit_code
    print_summary(result.report)
    console.print(f"reports: {result.json_path} and {result.html_path}")
    return result.exit_code


def evaluate(options: EvalOptions, hooks: EvalHooks) -> EvalResult:
    """Run the evaluation and write the reports, printing nothing but the progress bars (`progress`).

    With `baseline` (an adapter spec as for `adapters`) every adapter is gated against that variant
    instead of the base; with `corrections` the corrected questions are asked too and gated; with
    `preferences` (a preference dataset's `test.jsonl`) the chosen and rejected answers are scored
    teacher-forced and the margin gate applied (`training.evaluation.preference_margin`).
    """
    try:
        config = load_gates(options.gates)
        data = load_eval_data(
            options.dataset, options.split, limit=options.limit, corrections=options.corrections
        )
        registry = RegistryCheck()
        pairs = load_pairs(options.preferences) if options.preferences else None
        source = _source(options, hooks)
        outputs, preference_nll = asyncio.run(_collect(source, data, options, pairs))
        baseline = _baseline_key(options, outputs)
        database_url = options.database_url or hooks.database_url()
        queued = (
            queue_ab_pairs(
                database_url,
                data.all(),
                outputs.answers,
                outputs.variants,
                options.ab_sample,
                data.dataset_version,
            )
            if options.ab_sample
            else {}
        )
    except EvalInputError as exc:
        return EvalResult(EXIT_BAD_INPUT, error=str(exc))
    scores = score(data, outputs, registry, options.bootstrap)
    ab = ab_summaries(database_url, outputs.variants)
    gates = evaluate_gates(config, scores.variants, ab, baseline)
    if pairs is not None:
        gates += preference_gates(
            config[GATE], pairs, preference_nll, scores.variants, baseline, options.bootstrap
        )
    passed = all(gate["status"] != "fail" for gate in gates)
    report: dict[str, Any] = {
        "dataset_version": data.dataset_version,
        "split": options.split,
        "source": source.description,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "accuracy_metric": config["accuracy_improvement"]["metric"],
        "baseline": baseline,
        "compared_with": baseline or BASE,
        "corrections": (
            {"path": str(options.corrections), "n": len(data.items["corrections"])}
            if options.corrections
            else None
        ),
        "preferences": (
            {"path": str(options.preferences), "pairs": len(pairs)} if options.preferences and pairs else None
        ),
        "counts": {name: len(rows) for name, rows in data.items.items()},
        "variants": scores.variants,
        "gates": gates,
        "critical_errors": scores.critical_errors,
        "warnings": scores.warnings,
        "ab": ab,
        "ab_queued": queued,
        "passed": passed,
    }
    out = (
        options.out or DEFAULT_OUT / f"{data.dataset_version or 'dataset'}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    )
    json_path, html_path = write_reports(out, report, scores.rows)
    return EvalResult(EXIT_PASSED if passed else EXIT_GATE_FAILED, report, json_path, html_path)


def build_eval_command(hooks: EvalHooks) -> Callable[..., None]:
    """The typer command `zantara eval`, bound to the service's hooks."""

    def eval_command(
        dataset: Annotated[Path, typer.Option(help="Dataset folder from `zantara dataset build`.")],
        split: Annotated[str, typer.Option(help="Split to score.")] = "test",
        out: Annotated[
            Path | None, typer.Option(help="Report folder (default var/eval/<version>-<time>).")
        ] = None,
        gates: Annotated[
            Path | None, typer.Option(help=f"Gates YAML over the defaults ({DEFAULT_GATES.name}).")
        ] = None,
        base_model: Annotated[
            str | None,
            typer.Option(help="In process: base model path or hub id (default: ZANTARA_BASE_MODEL)."),
        ] = None,
        adapter: Annotated[
            list[str] | None,
            typer.Option(help="Adapter to compare: a directory or NAME@VERSION (repeat for several)."),
        ] = None,
        endpoint: Annotated[
            str | None, typer.Option(help="OpenAI-compatible server URL instead of the in-process engine.")
        ] = None,
        api_key: Annotated[
            str | None, typer.Option(envvar="ZANTARA_EVAL_API_KEY", help="Bearer key for --endpoint.")
        ] = None,
        base: Annotated[
            str | None, typer.Option(help="With --endpoint: the base model's name there.")
        ] = None,
        max_tokens: Annotated[int, typer.Option(min=1, help="Longest answer, in tokens.")] = 256,
        limit: Annotated[int | None, typer.Option(min=1, help="At most this many questions per set.")] = None,
        bootstrap: Annotated[int, typer.Option(min=10, help="Bootstrap resamples for the intervals.")] = 1000,
        ab_sample: Annotated[
            int, typer.Option(min=0, help="Queue this many blind A/B pairs per adapter.")
        ] = 0,
        database_url: Annotated[
            str | None, typer.Option(help="A/B review database (default ZANTARA_DATABASE_URL).")
        ] = None,
        progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
        baseline: Annotated[
            str | None,
            typer.Option(
                help="Gate the adapters against this adapter (a directory or NAME@VERSION) instead of "
                "the base: a retrain's parent."
            ),
        ] = None,
        corrections: Annotated[
            Path | None,
            typer.Option(help='Corrected questions to ask and gate (.jsonl of {"question", "answer"}).'),
        ] = None,
        preferences: Annotated[
            Path | None,
            typer.Option(
                help="Held-out preference pairs (a preference dataset's test.jsonl): the margin gate."
            ),
        ] = None,
    ) -> None:
        """Score the base and each adapter on a dataset split; apply the quality gates (exit 0/1/2)."""
        options = EvalOptions(
            dataset=dataset,
            split=split,
            out=out,
            gates=gates,
            base_model=base_model,
            adapters=list(adapter or []),
            endpoint=endpoint,
            api_key=api_key,
            base=base,
            max_tokens=max_tokens,
            limit=limit,
            bootstrap=bootstrap,
            ab_sample=ab_sample,
            database_url=database_url,
            progress=progress,
            baseline=baseline,
            corrections=corrections,
            preferences=preferences,
        )
        raise typer.Exit(run_eval(options, hooks))

    return eval_command


def _source(options: EvalOptions, hooks: EvalHooks) -> AnswerSource:
    adapters = options.adapters
    if options.baseline:
        adapters = [options.baseline, *(spec for spec in adapters if spec != options.baseline)]
        if len(adapters) < 2:
            raise EvalInputError("--baseline needs an --adapter to compare with it")
    if options.endpoint:
        if options.base_model:
            raise EvalInputError(
                "--base-model is for the in-process engine; with --endpoint name it with --base"
            )
        if not options.base:
            raise EvalInputError("--endpoint needs --base: the base model's name on that server")
        return HttpSource(options.endpoint, options.base, adapters, api_key=options.api_key)
    if options.base:
        raise EvalInputError("--base names the base model on an --endpoint; in process use --base-model")
    return hooks.in_process(options.base_model, adapters)


def _baseline_key(options: EvalOptions, outputs: Outputs) -> str | None:
    """The baseline's variant key: the first adapter the source started (`_source` puts it first)."""
    return outputs.variants[1].key if options.baseline else None


async def _collect(
    source: AnswerSource, data: EvalData, options: EvalOptions, pairs: list[PreferencePair] | None
) -> tuple[Outputs, dict[str, list[TokenNLL]] | None]:
    """Every variant's answers and golden-answer NLL, then (with `pairs`) the NLL of every preference
    answer, teacher-forced."""
    try:
        variants = await source.start()
        keys = [variant.key for variant in variants]
        if len(set(keys)) != len(keys):
            raise EvalInputError(f"an adapter is named twice (baseline {options.baseline!r}?): {keys}")
        outputs = await collect(
            source, variants, data, max_tokens=options.max_tokens, progress=options.progress
        )
        scored = await source.golden_nll(variants, pair_items(pairs), lambda: None) if pairs else None
        return outputs, scored
    finally:
        await source.close()


def print_summary(report: dict[str, Any]) -> None:
    """The metrics and gate tables and the verdict on the console."""
    columns = ["variant", "chrF", "BLEU", "exact", "fact precision", "consistency", "perplexity", "critical"]
    metrics = Table(*columns, *(["corrections chrF"] if report.get("corrections") else []))
    for key, variant in report["variants"].items():
        test = variant["test"]
        label = f"{key} (baseline)" if key == report.get("baseline") else key
        metrics.add_row(
            label,
            *(
                str(test[name]["value"])
                for name in ("chrf", "bleu", "exact_match", "fact_precision", "consistency")
            ),
            str(test["perplexity"]["value"] if test["perplexity"]["value"] is not None else "unavailable"),
            str(variant["critical_errors"]),
            *([str(variant["corrections"]["chrf"]["value"])] if "corrections" in variant else []),
        )
    console.print(metrics)
    gates = Table("gate", "variant", "value", "threshold", "status", "detail")
    colours = {"pass": "green", "fail": "red", "skipped": "dim"}
    for gate in report["gates"]:
        status = f"[{colours[gate['status']]}]{gate['status']}[/]"
        gates.add_row(
            gate["name"], gate["variant"], str(gate["value"]), str(gate["threshold"]), status, gate["detail"]
        )
    console.print(gates)
    verdict = "[green]all gates passed[/]" if report["passed"] else "[red]a gate failed[/]"
    console.print(verdict)
