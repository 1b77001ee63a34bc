"""`OUT/report.json` for machines and `OUT/report.html` for people.

The HTML page is rendered by Jinja2 with autoescaping on, so model output (untrusted text) can never
run as markup; its plots are inline SVG bar charts (see `plots.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.dataset.files import write_json
from training.evaluation.plots import Chart, Point, grouped_bars
from training.evaluation.sources import BASE

BAR_METRICS = (
    ("chrf", "chrF", 100.0),
    ("bleu", "BLEU", 100.0),
    ("exact_match", "exact match", 1.0),
    ("fact_precision", "critical-fact precision", 1.0),
    ("register_fit", "register fit", 1.0),
    ("consistency", "consistency", 1.0),
)
WORST = 10


def write_reports(out: Path, report: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[Path, Path]:
    """Write report.json, answers.jsonl (every question with every variant's answer) and report.html."""
    from training.dataset.files import write_jsonl

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", report)
    write_jsonl(out / "answers.jsonl", rows)
    html = render_html(report, rows)
    (out / "report.html").write_text(html, encoding="utf-8")
    return out / "report.json", out / "report.html"


def render_html(report: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The human report: what the gates compare with (base or baseline), gates, metric bars with
    intervals, per-category chrF, the corrected questions, critical errors, worst questions with the
    answers side by side."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    keys = list(report["variants"])
    return env.get_template("report.html.j2").render(
        report=report,
        keys=keys,
        bars=_metric_bars(report["variants"]),
        categories=_category_bars(report["variants"]),
        metrics=BAR_METRICS,
        worst=worst_questions(rows, keys),
        corrections=[row for row in rows if row["set"] == "corrections"],
    )


def worst_questions(rows: list[dict[str, Any]], keys: list[str], count: int = WORST) -> list[dict[str, Any]]:
    """The test questions where the adapters do worst (lowest chrF), or the base's when alone."""
    scored = [row for row in rows if row["set"] == "test"]
    tuned = [key for key in keys if key != BASE] or keys

    def adapter_score(row: dict[str, Any]) -> float:
        return min(row["chrf"][key] for key in tuned)

    return sorted(scored, key=adapter_score)[:count]


def _metric_bars(variants: dict[str, dict[str, Any]]) -> Chart:
    """Grouped bars per metric on the test split (chrF and BLEU divided by 100) with 95% intervals."""
    series = {
        key: [_scaled(variant["test"][name], scale) for name, _, scale in BAR_METRICS]
        for key, variant in variants.items()
    }
    return grouped_bars([label for _, label, _ in BAR_METRICS], series, 1.0)


def _category_bars(variants: dict[str, dict[str, Any]]) -> Chart:
    """chrF per category and variant with 95% intervals."""
    categories = sorted({c for v in variants.values() for c in v["test"].get("by_category", {})})
    series = {
        key: [_scaled(variant["test"]["by_category"].get(c, {}).get("chrf", {}), 1.0) for c in categories]
        for key, variant in variants.items()
    }
    return grouped_bars(categories, series, 100.0)


def _scaled(metric: dict[str, Any], scale: float) -> Point:
    values = (metric.get("value"), metric.get("low"), metric.get("high"))
    return tuple(None if value is None else value / scale for value in values)  # type: ignore[return-value]
