"""`zantara dataset build`: every source into one versioned, checked and split dataset.

Sources, in order of precedence when two give the same question: the seed bank (questions and
variations), error corrections (files and the feedback database), imported conversations, extra
record files, synthetic questions. With a database, the reviewers' verdicts on unvalidated pairs are
applied (see `validation`); a validated-only build leaves the rest out and writes them to
`unvalidated.jsonl`. All pairs that go in pass the checklist; any error stops the build
before anything is written, and its message names each record (id and source) with the rule and what
it found. A correction from the database that fails a check is the exception: it is left out and
reported (`BuildResult.left_out`, the manifest's `corrections_left_out`), unless its reviewer
overrode the check with a reason (then it goes in, the finding kept as a warning; an override does
not cover personal data or a verified fact contradicted). The output folder appears in one rename,
with `manifest.json` naming the version (a hash of the content), the counts and the inputs' hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from knowledge.checklist import Issue
from knowledge.corrections import DATABASE, CorrectionRecord, overridable
from knowledge.fact_check import FactChecker
from knowledge.facts import load_facts
from knowledge.paths import CONVERSATIONS_DIR, CORRECTIONS_DIR, DATA_DIR, FACTS_FILE, GENERAL_FILE, SEED_FILE
from knowledge.prompts import ZANTARA_SYSTEM_PROMPT
from knowledge.records import CATEGORIES, REGISTERS, SOURCES, Example, Pair, parse_record
from knowledge.register import detect_register
from knowledge.topics import classify
from training.dataset.checks import check_records
from training.dataset.conversations import import_conversations
from training.dataset.corrections import load_corrections_db, load_corrections_file
from training.dataset.files import DatasetInputError, atomic_dir, read_items, write_json, write_jsonl
from training.dataset.generator import Generator
from training.dataset.seed_bank import category_counts, load_seed_bank
from training.dataset.similarity import normalize
from training.dataset.split import SPLITS, SplitResult, leaks, split_pairs
from training.dataset.synthetic import build_synthetic
from training.dataset.validation import UNVALIDATED_FILE, apply_verdicts, load_verdicts
from training.dataset.variations import build_seed_pairs
from training.progress import training_progress

DEFAULT_SEED = SEED_FILE
DEFAULT_FACTS = FACTS_FILE
DEFAULT_GENERAL = GENERAL_FILE
SHOWN_ROOT = DATA_DIR.parents[1]
"""What a manifest's input paths are shown relative to: the folder holding the packages (the checkout, or
site-packages), so the project's own files read `knowledge/data/...` either way."""
PRECEDENCE: dict[str, int] = {
    "seed": 0,
    "variation": 1,
    "correction": 2,
    "conversation": 3,
    "extra": 4,
    "synthetic": 5,
}
SHOWN_ERRORS = 20
"""How many errors a build error's message lists one by one (`BuildError.issues` holds them all)."""


def default_datasets_dir() -> Path:
    """Where a build goes without `--out`: `datasets/` in the var folder (`ZANTARA_VAR_DIR`, else `./var`,
    as the service's), never beside the code (an installed package's folder is not writable)."""
    return Path(os.environ.get("ZANTARA_VAR_DIR") or "var") / "datasets"


class BuildError(Exception):
    """The sources are readable but the dataset they make fails the checklist or leaks across splits."""

    def __init__(self, message: str, issues: list[Issue] | None = None) -> None:
        super().__init__(message)
        self.issues = issues or []


@dataclass
class BuildOptions:
    """What goes into a build (paths default to the project's own data) and how it is split.

    `database_url` adds the database's corrections and applies its dataset review verdicts (a record
    is decided after `reviews_required` verdicts); `database_corrections`, when given, are those
    corrections as the caller already read them (a retrain reads them once, up to the newest one its run
    recorded), and the database is not read for them again. `include_unvalidated` keeps pairs nobody has
    validated yet: true here (a library build keeps every pair, as before review existed), false by
    default on the command line (`--include-unvalidated` turns it on).
    """

    seed_path: Path = DEFAULT_SEED
    facts_path: Path = DEFAULT_FACTS
    corrections: list[Path] = field(default_factory=lambda: sorted(CORRECTIONS_DIR.glob("*.jsonl")))
    conversations: list[Path] = field(default_factory=lambda: sorted(CONVERSATIONS_DIR.glob("*.jsonl")))
    extra: list[Path] = field(default_factory=list)
    database_url: str | None = None
    database_corrections: Sequence[CorrectionRecord] | None = None
    include_unvalidated: bool = True
    reviews_required: int = 1
    per_register: int = 5
    synthetic_per_seed: int = 3
    test_share: float = 0.12
    validation_share: float = 0.15
    split_seed: int = 13


@dataclass(frozen=True)
class LeftOutCorrection:
    """A correction from the database that the build left out, and the errors that made it."""

    correction_id: int
    pair_id: str
    question: str
    issues: list[Issue]

    @property
    def reason(self) -> str:
        """Each rule it broke and what was found, as one line."""
        return "; ".join(f"{issue.check}: {issue.message}" for issue in self.issues)

    def to_json(self) -> dict[str, Any]:
        """The manifest's entry."""
        return {
            "correction_id": self.correction_id,
            "pair_id": self.pair_id,
            "checks": [issue.check for issue in self.issues],
            "reason": self.reason,
        }


@dataclass
class BuildResult:
    """Where the dataset was written, its manifest, and the database corrections it left out."""

    out: Path
    manifest: dict[str, Any]
    warnings: list[Issue]
    notes: list[str]
    left_out: list[LeftOutCorrection] = field(default_factory=list)


@dataclass
class Sources:
    """Every pair the sources give, a description of the inputs, and the checker for their facts."""

    pairs: list[Pair]
    inputs: dict[str, Any]
    fact_checker: FactChecker


def _database_corrections(options: BuildOptions) -> list[CorrectionRecord]:
    """The feedback database's corrections, personal data scrubbed (see `load_corrections_db`)."""
    if options.database_corrections is not None:
        return [record.scrubbed() for record in options.database_corrections]
    return load_corrections_db(options.database_url) if options.database_url else []


def collect_pairs(
    options: BuildOptions, generator: Generator, notes: list[str], progress: bool = True
) -> Sources:
    """Read every source and make the pairs (notes collect what was left out and why)."""
    facts = load_facts(options.facts_path)
    seeds = load_seed_bank(options.seed_path, {fact.id for fact in facts})
    with training_progress(enabled=progress) as bar:
        task = bar.add_task("variations", total=len(seeds), stats=generator.name)
        seed_pairs = build_seed_pairs(seeds, generator, options.per_register, lambda: bar.advance(task))
        by_seed: dict[str, list[Pair]] = {}
        for pair in seed_pairs:
            by_seed.setdefault(pair.seed_id or "", []).append(pair)
        task = bar.add_task("synthetic", total=len(seeds), stats=generator.name)
        synthetic = build_synthetic(
            seeds, by_seed, generator, options.synthetic_per_seed, lambda: bar.advance(task)
        )
    corrections = [record for path in options.corrections for record in load_corrections_file(path)]
    from_database = _database_corrections(options)
    corrections += from_database
    correction_pairs: list[Pair] = []
    for record in corrections:
        made = record.to_pair()
        if made is None:
            notes.append(f"correction {record.origin} skipped: no category given and none could be told")
        else:
            correction_pairs.append(made)
    conversation_pairs: list[Pair] = []
    for path in options.conversations:
        pairs, rejected = import_conversations(path)
        conversation_pairs += pairs
        notes += [
            f"{path.name}:{item.line} conversation {item.conversation_id} left out: {item.reason}"
            for item in rejected
        ]
    extra_pairs = [pair for path in options.extra for pair in load_extra(path)]
    inputs = {
        "seed": _file_entry(options.seed_path, len(seeds)),
        "facts": _file_entry(options.facts_path, len(facts)),
        "corrections": [_file_entry(path) for path in options.corrections],
        "corrections_from_database": len(from_database),
        "conversations": [_file_entry(path) for path in options.conversations],
        "extra": [_file_entry(path) for path in options.extra],
        "seed_categories": category_counts(seeds),
        "facts_verified": sorted(fact.id for fact in facts if fact.verified),
        "facts_needing_confirmation": sorted(fact.id for fact in facts if not fact.verified),
    }
    pairs = seed_pairs + correction_pairs + conversation_pairs + extra_pairs + synthetic
    return Sources(pairs, inputs, FactChecker(facts))


def load_extra(path: Path) -> list[Pair]:
    """Pairs from a record file (Alpaca or chat messages); category and register told when missing."""
    pairs: list[Pair] = []
    for item in read_items(path):
        parsed = parse_record(item.line, item.value)
        if not isinstance(parsed, Example):
            raise DatasetInputError(path, parsed.line, parsed.message)
        meta = dict(parsed.meta)
        category = meta.pop("category", None) or classify(parsed.question)
        if category is None:
            raise DatasetInputError(
                path, item.line, "no 'category' in meta and none can be told from the question"
            )
        pairs.append(
            Pair(
                id=str(meta.pop("id", f"{path.stem}-{item.line}")),
                question=parsed.question,
                answer=parsed.answer,
                category=category,
                register=meta.pop("register", None) or detect_register(parsed.question),
                source=meta.pop("source", None) or "extra",
                validated=bool(meta.pop("validated", False)),
                seed_id=meta.pop("seed_id", None),
                extra=meta,
            )
        )
    return pairs


def deduplicate(pairs: list[Pair], notes: list[str], *, validated_first: bool = False) -> list[Pair]:
    """Keep one pair per question (by source precedence, validated pairs first when asked), and unique
    ids; note what was dropped."""
    kept: dict[str, Pair] = {}

    def rank(pair: Pair) -> tuple[bool, int]:
        return (validated_first and not pair.validated, PRECEDENCE[pair.source])

    for pair in sorted(pairs, key=rank):
        key = normalize(pair.question)
        if key in kept:
            notes.append(f"{pair.id} dropped: same question as {kept[key].id}")
            continue
        kept[key] = pair
    ids = Counter(pair.id for pair in kept.values())
    clashes = [name for name, count in ids.items() if count > 1]
    if clashes:
        raise BuildError(f"duplicate record ids: {', '.join(sorted(clashes)[:5])}")
    order = {id(pair): index for index, pair in enumerate(pairs)}
    return sorted(kept.values(), key=lambda pair: order[id(pair)])


def build(
    options: BuildOptions,
    generator: Generator,
    out: Path | None,
    *,
    force: bool = False,
    progress: bool = True,
    on_stage: Callable[[str], None] = lambda _: None,
) -> BuildResult:
    """Build, check, split and write the dataset; nothing is written unless every step succeeds."""
    if out is not None and out.exists() and not force:
        raise FileExistsError(f"{out} already exists (use --force to replace it)")
    notes: list[str] = []
    on_stage("reading sources and generating variations")
    sources = collect_pairs(options, generator, notes, progress)
    decided = load_verdicts(options.database_url, options.reviews_required) if options.database_url else {}
    reviewed = apply_verdicts(sources.pairs, decided, notes)
    pairs = deduplicate(reviewed.pairs, notes, validated_first=not options.include_unvalidated)
    held = [] if options.include_unvalidated else [pair for pair in pairs if not pair.validated]
    if held:
        pairs = [pair for pair in pairs if pair.validated]
        notes.append(
            f"{len(held)} unvalidated pair(s) left out, written to {UNVALIDATED_FILE} "
            "(`zantara dataset submit` sends them for review; --include-unvalidated keeps them)"
        )
    on_stage(f"checking {len(pairs)} pairs")
    examples = [
        Example(index + 1, "chat", pair.question, pair.answer, ZANTARA_SYSTEM_PROMPT, pair.meta())
        for index, pair in enumerate(pairs)
    ]
    pairs, issues, left_out = set_aside_corrections(pairs, check_records(examples, sources.fact_checker))
    notes += [f"correction #{left.correction_id} left out of the dataset: {left.reason}" for left in left_out]
    errors = [issue for issue in issues if issue.severity == "error"]
    if errors:
        raise BuildError(
            describe_errors(errors, {index + 1: pair for index, pair in enumerate(pairs)}), errors
        )
    result = split_pairs(pairs, options.test_share, options.validation_share, options.split_seed)
    leaked = leaks(result)
    if leaked:
        raise BuildError("split leakage: " + "; ".join(leaked[:5]))
    manifest = make_manifest(result, options, sources.inputs, generator, issues)
    manifest["validation"] = {
        "include_unvalidated": options.include_unvalidated,
        "reviews_required": options.reviews_required,
        "verdicts_read": len(decided),
        "approved": reviewed.approved,
        "edited": reviewed.edited,
        "left_out_rejected": reviewed.rejected,
        "left_out_unvalidated": len(held),
    }
    manifest["corrections_left_out"] = [left.to_json() for left in left_out]
    target = out or default_datasets_dir() / manifest["version"]
    on_stage(f"writing {target}")
    with atomic_dir(target, replace=force or out is None) as folder:
        for name in SPLITS:
            write_jsonl(folder / f"{name}.jsonl", (pair.to_chat() for pair in result.splits[name]))
            write_json(folder / f"{name}.alpaca.json", [pair.to_alpaca() for pair in result.splits[name]])
        if held:
            write_jsonl(folder / UNVALIDATED_FILE, (pair.to_chat() for pair in held))
        manifest["files"] = {path.name: _sha256(path) for path in sorted(folder.iterdir())}
        write_json(folder / "manifest.json", manifest)
    warnings = [issue for issue in issues if issue.severity == "warning"]
    return BuildResult(target, manifest, warnings, notes, left_out)


def set_aside_corrections(
    pairs: list[Pair], issues: list[Issue]
) -> tuple[list[Pair], list[Issue], list[LeftOutCorrection]]:
    """Database corrections with errors (`issues` are by line, one per pair in order): left out with
    their errors, or kept with them as warnings when the reviewer overrode every one of them. Returns
    the pairs kept, their issues, and what was left out."""
    errors: dict[int, list[Issue]] = {}
    for issue in issues:
        if issue.severity == "error":
            errors.setdefault(issue.line, []).append(issue)
    kept: list[Pair] = []
    left_out: list[LeftOutCorrection] = []
    overrides: dict[int, str] = {}
    dropped: set[int] = set()
    for line, pair in enumerate(pairs, start=1):
        origin = str(pair.extra.get("origin", ""))
        found = errors.get(line, [])
        if not found or pair.source != "correction" or not origin.startswith(DATABASE):
            kept.append(pair)
        elif pair.extra.get("check_override") and all(overridable(issue) for issue in found):
            overrides[line] = str(pair.extra["check_override"])
            kept.append(pair)
        else:
            dropped.add(line)
            left_out.append(LeftOutCorrection(int(origin[len(DATABASE) :]), pair.id, pair.question, found))
    remaining: list[Issue] = []
    for issue in issues:
        if issue.line in dropped:
            continue
        if issue.line in overrides and issue.severity == "error":
            why = overrides[issue.line]
            issue = replace(issue, severity="warning", message=f"{issue.message} (kept: overridden: {why})")
        remaining.append(issue)
    return kept, remaining, left_out


def describe_errors(errors: list[Issue], pairs: dict[int, Pair]) -> str:
    """A build error's message: how many errors, then each with its record (id and source), its rule
    and what it found."""
    described = []
    for issue in errors[:SHOWN_ERRORS]:
        pair = pairs.get(issue.line)
        origin = f", {pair.extra['origin']}" if pair and pair.extra.get("origin") else ""
        where = f"{pair.id} ({pair.source}{origin})" if pair else issue.record_id or f"pair {issue.line}"
        described.append(f"{where} {issue.check}: {issue.message}")
    more = f"; ... and {len(errors) - SHOWN_ERRORS} more" if len(errors) > SHOWN_ERRORS else ""
    return f"{len(errors)} error(s) in the generated pairs; nothing was written: {'; '.join(described)}{more}"


def make_manifest(
    result: SplitResult,
    options: BuildOptions,
    inputs: dict[str, Any],
    generator: Generator,
    issues: list[Issue],
) -> dict[str, Any]:
    """Version (content hash), counts per split / category / register / source, inputs and settings."""
    every = [pair for name in SPLITS for pair in result.splits[name]]
    canonical = sorted(
        json.dumps({"split": name, **pair.to_chat()}, ensure_ascii=False, sort_keys=True)
        for name in SPLITS
        for pair in result.splits[name]
    )
    version = "ds-" + hashlib.sha256("\n".join(canonical).encode()).hexdigest()[:12]
    variations = [pair for pair in every if pair.source == "variation"]
    per_seed = Counter(pair.seed_id for pair in variations)
    return {
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "system_prompt_sha256": hashlib.sha256(ZANTARA_SYSTEM_PROMPT.encode()).hexdigest(),
        "counts": {
            "total": len(every),
            "splits": {name: len(result.splits[name]) for name in SPLITS},
            **count_by(every),
            "per_split": {name: count_by(result.splits[name]) for name in SPLITS},
            "groups": result.group_counts(),
        },
        "variations": {
            "total": len(variations),
            "per_seed": {"min": min(per_seed.values(), default=0), "max": max(per_seed.values(), default=0)},
            "register_share": {
                register: round(
                    sum(1 for p in variations if p.register == register) / max(1, len(variations)), 4
                )
                for register in REGISTERS
            },
            "generators": dict(Counter(str(pair.extra.get("generator")) for pair in variations)),
        },
        "checks": {
            "errors": 0,
            "warnings": len(issues),
            "warnings_by_check": dict(Counter(i.check for i in issues)),
        },
        "generator": {"name": generator.name, "fell_back_offline": not getattr(generator, "available", True)},
        "options": {
            "per_register": options.per_register,
            "synthetic_per_seed": options.synthetic_per_seed,
            "test_share": options.test_share,
            "validation_share": options.validation_share,
            "split_seed": options.split_seed,
        },
        **inputs,
    }


def count_by(pairs: list[Pair]) -> dict[str, dict[str, int]]:
    """Counts per category, register, source and validation state, in canonical order."""

    def tally(values: list[str], order: tuple[str, ...]) -> dict[str, int]:
        counts = Counter(values)
        return {name: counts[name] for name in order if counts[name]}

    return {
        "categories": tally([pair.category for pair in pairs], CATEGORIES),
        "registers": tally([pair.register for pair in pairs], REGISTERS),
        "sources": tally([pair.source for pair in pairs], SOURCES),
        "validated": tally(["true" if pair.validated else "false" for pair in pairs], ("true", "false")),
    }


def _file_entry(path: Path, count: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": _display(path), "sha256": _sha256(path)}
    if count is not None:
        entry["records"] = count
    return entry


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(SHOWN_ROOT))
    except ValueError:
        return str(path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
