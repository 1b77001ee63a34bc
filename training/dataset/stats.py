"""`zantara dataset stats`: counts and a quick picture of the distribution.

Three views: the project's sources (seed bank, fact registry, general set, corrections), a built
dataset folder (its manifest, per split), or any record file (counts from each record's meta).
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from knowledge.facts import load_facts
from knowledge.paths import CORRECTIONS_DIR
from knowledge.records import CATEGORIES, REGISTERS, Example, parse_record
from knowledge.register import detect_register, words
from training.dataset.build import DEFAULT_FACTS, DEFAULT_GENERAL, DEFAULT_SEED
from training.dataset.files import DatasetInputError, read_items
from training.dataset.seed_bank import category_counts, load_seed_bank

BAR_WIDTH = 30


def source_stats(
    seed_path: Path = DEFAULT_SEED, facts_path: Path = DEFAULT_FACTS, general_path: Path = DEFAULT_GENERAL
) -> dict[str, Any]:
    """Counts of the project's own data: seeds per category and register, facts by status, general set."""
    facts = load_facts(facts_path)
    seeds = load_seed_bank(seed_path, {fact.id for fact in facts})
    general = read_items(general_path) if general_path.exists() else []
    corrections = [item for path in sorted(CORRECTIONS_DIR.glob("*.jsonl")) for item in read_items(path)]
    return {
        "seed_questions": len(seeds),
        "seed_categories": category_counts(seeds),
        "seed_registers": _ordered(Counter(seed.register for seed in seeds), REGISTERS),
        "hand_variants": sum(len(texts) for seed in seeds for texts in seed.variants.values()),
        "facts": {
            "total": len(facts),
            "verified": sorted(f.id for f in facts if f.verified),
            "needs_confirmation": sorted(f.id for f in facts if not f.verified),
        },
        "general_set": {
            "records": len(general),
            "registers": _ordered(
                Counter(item.value.get("register", "?") for item in general if isinstance(item.value, dict)),
                REGISTERS,
            ),
        },
        "corrections": len(corrections),
    }


def file_stats(path: Path) -> dict[str, Any]:
    """Counts of one record file: per category, register, source, and answer lengths in words."""
    examples: list[Example] = []
    for item in read_items(path):
        parsed = parse_record(item.line, item.value)
        if not isinstance(parsed, Example):
            raise DatasetInputError(path, parsed.line, parsed.message)
        examples.append(parsed)
    lengths = [len(words(example.answer)) for example in examples] or [0]
    return {
        "records": len(examples),
        "categories": _ordered(Counter(str(e.meta.get("category", "?")) for e in examples), CATEGORIES),
        "registers": _ordered(
            Counter(str(e.meta.get("register") or detect_register(e.question)) for e in examples), REGISTERS
        ),
        "sources": dict(Counter(str(e.meta.get("source", "?")) for e in examples).most_common()),
        "answer_words": {"min": min(lengths), "median": statistics.median(lengths), "max": max(lengths)},
    }


def dataset_stats(folder: Path) -> dict[str, Any]:
    """The manifest of a built dataset folder (its counts were taken when it was built)."""
    manifest_path = folder / "manifest.json"
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetInputError(manifest_path, None, f"not a built dataset ({exc})") from None
    return manifest


def render(stats: dict[str, Any], console: Console) -> None:
    """Print every count table of `stats` with a bar per row, then the scalar values."""
    for title, value in stats.items():
        if isinstance(value, dict) and value and all(isinstance(v, int) for v in value.values()):
            console.print(_table(title, value))
        elif isinstance(value, dict):
            render({f"{title}.{key}": inner for key, inner in value.items()}, console)
        elif isinstance(value, list):
            console.print(f"[bold]{title}[/] ({len(value)}): {', '.join(map(str, value)) or '-'}")
        else:
            console.print(f"[bold]{title}[/]: {value}")


def _table(title: str, counts: dict[str, int]) -> Table:
    total = sum(counts.values()) or 1
    biggest = max(counts.values()) or 1
    table = Table(title=title, title_justify="left", show_edge=False)
    table.add_column("value")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    table.add_column("")
    for name, count in counts.items():
        table.add_row(
            name, str(count), f"{count / total:.0%}", "█" * max(1, round(BAR_WIDTH * count / biggest))
        )
    return table


def _ordered(counts: Counter[str], order: tuple[str, ...]) -> dict[str, int]:
    known = {name: counts[name] for name in order if counts[name]}
    return {**known, **{name: count for name, count in counts.items() if name not in known}}
