"""The steps of `zantara retrain` (the driver, lock and resume logic are in `training.retrain.pipeline`).

Each step first looks for its output (the parent and corrections recorded on the run, the dataset's
`manifest.json`, the adapter's `zantara.json`, the eval report, the registry row, the rollout already on
the version) and does only what is missing, so a run interrupted anywhere, even on another machine
whose var dir is empty, resumes without training or registering twice. An output that later steps no
longer need (the dataset once the adapter is trained and evaluated) is not rebuilt.

A stored correction the dataset build leaves out (it fails a dataset check and no reviewer overrode
it) does not stop the run: it is rejected with its rule (back in the review queue with the reason),
dropped from the corrections the gates and the focus view read, and named in the run log, on the
run (`details.corrections_left_out`) and in the registered version's gate report.

A preference run (`--method kto|dpo`) also builds a KTO/DPO dataset from every signal after the SFT
dataset (`training.retrain.preference`), trains the parent on it (the parent adapter is the reference),
and is gated on the margin of the held-out pairs plus the no-forgetting gates instead of the corrections
gate. A new rating or A/B verdict is something to learn from, not only a correction: the run has nothing
new when the preference dataset is the one the parent was trained on.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from feedback import registry, retrain_runs
from feedback.registry import AdapterEntry
from feedback.retrain_runs import RunRecord
from training.evaluation.cli import EvalHooks, EvalOptions
from training.evaluation.sources import BASE
from training.retrain.config import (
    EXIT_GATES_FAILED,
    EXIT_NOTHING_NEW,
    FOCUS_PRESET,
    Finished,
    RetrainError,
    RetrainOptions,
)

if TYPE_CHECKING:
    from knowledge.corrections import CorrectionRecord
    from training.dataset.build import LeftOutCorrection

log = logging.getLogger("zantara.retrain")


class Steps:
    """The seven steps; each reads what earlier ones recorded in `self.details`."""

    def __init__(self, options: RetrainOptions, sessions: sessionmaker[Session], hooks: EvalHooks) -> None:
        self.options, self.sessions, self.hooks = options, sessions, hooks
        self._record: RunRecord | None = None
        self._corrections: list[CorrectionRecord] | None = None

    @property
    def record(self) -> RunRecord:
        """The run as last saved."""
        assert self._record is not None, "no run opened"
        return self._record

    @property
    def details(self) -> dict[str, Any]:
        """What the steps so far produced."""
        return self.record.details

    @property
    def run_dir(self) -> Path:
        """Where this run keeps its files (corrections, training log, eval report)."""
        return self.options.var_dir / "retrain" / f"run-{self.record.id}"

    def save(self, **changes: Any) -> None:
        """Record step outputs on the run (see `feedback.retrain_runs.update_run`)."""
        with self.sessions.begin() as session:
            self._record = retrain_runs.update_run(session, self.record.id, **changes)

    def corrections(self) -> list[CorrectionRecord]:
        """Every correction no retrain rejected, up to the run's `last_correction_id` once recorded,
        read once per process: the collect step, the dataset and the left-out bookkeeping all see the
        same corrections, and one stored while the run goes on waits for the next run."""
        from feedback.review_queue import corrections_after

        if self._corrections is None:
            newest = self.details.get("last_correction_id")
            self._corrections = [
                item
                for item in corrections_after(self.sessions, None)
                if newest is None or (item.database_id or 0) <= newest
            ]
        return self._corrections

    # -- what exists already --------------------------------------------------------------------

    def trained(self) -> bool:
        """The adapter was written completely (its `zantara.json` is the trainer's last file)."""
        return (
            bool(self.details.get("adapter_dir"))
            and (Path(self.details["adapter_dir"]) / "zantara.json").is_file()
        )

    def registered(self) -> AdapterEntry | None:
        """The registry entry this run wrote (with its gate report), if any."""
        key = self.details.get("adapter")
        if not key or "passed" not in self.details:
            return None
        with self.sessions() as session:
            entry = registry.get_version(session, key)
        return entry if entry is not None and entry.report_path == self.details.get("report_path") else None

    def evaluated(self) -> bool:
        """The gates were applied: the report is on disk, or already in the registry."""
        report = self.details.get("report_path")
        return report is not None and (Path(report).is_file() or self.registered() is not None)

    # -- steps ------------------------------------------------------------------------------------

    def step_parent(self) -> None:
        """The version to continue from and compare against."""
        from router.rollout import RolloutStore

        if "parent" in self.details:
            log.info("parent %s (recorded)", self.details["parent"])
            return
        rollout = RolloutStore(self.sessions, default_percentage=0.0, cache_s=0.0).current()
        with self.sessions() as session:
            entries = registry.list_versions(session)
        live, canary = rollout.live_adapter, rollout.adapter
        name = self.options.name or self.record.adapter_name or default_name(live, canary, entries)
        parent = pick_parent(name, live, canary, entries)
        if parent is not None and not (Path(parent.path) / "adapter_config.json").is_file():
            raise RetrainError(f"the parent adapter {parent.key} is not at its registered path {parent.path}")
        from_scratch = self.record.from_scratch or parent is None
        how = "training from scratch" if from_scratch else "continuing from it"
        log.info("adapter %s; parent %s; %s", name, parent.key if parent else "none", how)
        self.save(
            adapter_name=name,
            parent_version=parent.version if parent else None,
            from_scratch=from_scratch,
            details={
                "parent": parent.key if parent else None,
                "parent_path": parent.path if parent else None,
                "parent_dataset_version": parent.dataset_version if parent else None,
                "after_correction_id": parent.last_correction_id if parent else None,
                "method": self.options.method,
            },
        )

    def step_collect(self) -> None:
        """Corrections newer than the parent's (none ends the run, exit 3, unless forced), and the
        small `{question, answer}` file of them for the eval's corrections gate."""
        after = self.details.get("after_correction_id")
        recorded = "last_correction_id" in self.details
        path = self.details.get("corrections_file")
        if recorded and (path is None or Path(path).is_file() or self.evaluated()):
            log.info("%s new correction(s) (recorded)", self.details.get("corrections", 0))
            return
        known = self.corrections()
        found = [item for item in known if after is None or (item.database_id or 0) > after]
        asked = self.details.get("force") or self.details.get("asked_from_scratch")
        if not found and not asked and not self.preference_run:
            since = f" after correction #{after}" if after is not None else ""
            raise Finished("nothing", EXIT_NOTHING_NEW, f"nothing new to learn from: no corrections{since}")
        newest = self.details["last_correction_id"] if recorded else None
        newest = newest or max((item.database_id or 0 for item in known), default=0)
        target = self.run_dir / "corrections.jsonl"
        _write_jsonl(target, [_eval_pair(item) for item in found])
        log.info("%d new correction(s) after #%s, up to #%s", len(found), after, newest or None)
        self.save(
            details={
                "corrections": len(found),
                "corrections_file": str(target) if found else None,
                "last_correction_id": max(newest, after or 0) or None,
            }
        )

    def step_dataset(self) -> None:
        """The dataset sources plus every stored correction, written as `VAR/datasets/<version>`."""
        from training.dataset.build import BuildError, BuildOptions, build
        from training.dataset.files import DatasetInputError
        from training.dataset.generator import Generator

        recorded = self.details.get("dataset_dir")
        if recorded and (
            (Path(recorded) / "manifest.json").is_file() or (self.trained() and self.evaluated())
        ):
            log.info("dataset %s (built)", self.record.dataset_version)
            self._preference_dataset()
            return
        root = self.options.var_dir / "datasets"
        building = root / f".retrain-run-{self.record.id}"
        options = BuildOptions(
            **{
                "include_unvalidated": self.options.include_unvalidated,
                **self.options.dataset_overrides,
                "database_url": self.options.database_url,
                "database_corrections": self.corrections(),
            }
        )
        try:
            result = build(
                options,
                Generator(),
                building,
                force=True,
                progress=self.options.progress,
                on_stage=lambda stage: log.info("dataset: %s", stage),
            )
        except (BuildError, DatasetInputError) as error:
            raise RetrainError(f"the dataset does not build: {error}") from error
        version = result.manifest["version"]
        target = root / version
        if (target / "manifest.json").is_file():
            shutil.rmtree(building)
        else:
            shutil.rmtree(target, ignore_errors=True)
            os.replace(building, target)
        if self.record.dataset_version not in (None, version):
            log.warning("dataset rebuilt as %s (was %s)", version, self.record.dataset_version)
        for note in result.notes:
            if note.startswith("correction"):
                log.warning("dataset: %s", note)
        self._leave_out(result.left_out)
        counts = result.manifest["counts"]
        log.info("dataset %s: %s pairs %s", version, counts["total"], counts["splits"])
        self.save(
            dataset_version=version,
            details={
                "dataset_dir": str(target),
                "dataset_pairs": counts["splits"],
                "dataset_corrections": counts["sources"].get("correction", 0),
            },
        )
        self._preference_dataset()

    @property
    def preference_run(self) -> bool:
        """Whether this run tunes on preferences (KTO, DPO) rather than supervised pairs."""
        return str(self.details.get("method") or self.options.method) != "sft"

    def _preference_dataset(self) -> None:
        """A preference run's KTO/DPO dataset (kept when built; rebuilt when a later step needs it).
        Nothing new (exit 3) when the parent was trained on this very dataset, unless forced."""
        from training.retrain.preference import build_run_preferences

        if not self.preference_run:
            return
        recorded = self.details.get("preference_dir")
        kept = recorded is not None and (Path(recorded) / "manifest.json").is_file()
        if kept or (recorded and self.trained() and self.evaluated()):
            log.info("preference dataset %s (built)", self.details.get("preference_version"))
            return
        built = build_run_preferences(
            self.options, self.sessions, Path(self.details["dataset_dir"]), self.record.id
        )
        asked = self.details.get("force") or self.details.get("asked_from_scratch")
        if built["preference_version"] == self.details.get("parent_dataset_version") and not asked:
            raise Finished(
                "nothing",
                EXIT_NOTHING_NEW,
                f"nothing new to learn from: the parent was trained on {built['preference_version']}",
            )
        log.info("preference dataset %s: %s", built["preference_version"], built["preference_counts"])
        self.save(details=built)

    def _leave_out(self, found: list[LeftOutCorrection]) -> None:
        """Record the corrections the dataset left out on the run, reject them (back to the review queue
        with the reason), and drop them from the run's corrections; ends the run (exit 3) when no new
        correction is left to learn from and the run was not forced."""
        from feedback.review_queue import reject_corrections

        left = {entry["correction_id"]: entry for entry in self.details.get("corrections_left_out", [])}
        if found:
            interactions = {item.database_id: item.interaction_id for item in self.corrections()}
            for item in found:
                left[item.correction_id] = {
                    **item.to_json(),
                    "interaction_id": interactions.get(item.correction_id),
                    "run": self.record.id,
                }
            self.save(details={"corrections_left_out": list(left.values())})
            reasons = {item.correction_id: f"{item.reason} (retrain run #{self.record.id})" for item in found}
            rejected = reject_corrections(self.sessions, reasons)
            log.warning("back in the review queue with the reason: correction(s) %s", _ids(rejected))
        path = self.details.get("corrections_file")
        if not left or not path or not Path(path).is_file():
            return
        rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]
        kept = [row for row in rows if row["id"] not in left]
        if len(kept) < len(rows):
            _write_jsonl(Path(path), kept)
            self.save(details={"corrections": len(kept), "corrections_file": path if kept else None})
        if not kept and not (self.details.get("force") or self.details.get("asked_from_scratch")):
            raise Finished(
                "nothing",
                EXIT_NOTHING_NEW,
                "nothing new to learn from: every new correction failed a dataset check",
            )

    def left_out_note(self) -> str:
        """The corrections this run left out, with their rules, for the run's final message."""
        left = self.details.get("corrections_left_out") or []
        named = ", ".join(
            f"correction #{item['correction_id']} ({', '.join(item['checks'])})" for item in left
        )
        return f"; left out for failing a dataset check, back in the review queue: {named}" if left else ""

    def step_train(self) -> None:
        """Train the next version, from the parent adapter or from scratch (resuming its checkpoints)."""
        from training.train.config import load_config
        from training.train.trainer import train

        name = self.record.adapter_name
        version = self.record.adapter_version or self._next_version(name)
        out = self.options.adapters_dir / name / version
        self.save(adapter_version=version, details={"adapter": f"{name}@{version}", "adapter_dir": str(out)})
        if self.trained():
            log.info("adapter %s@%s (trained) in %s", name, version, out)
            return
        if (out / "adapter_config.json").is_file():  # saved, but the run died before its zantara.json
            shutil.rmtree(out)
        parent = None if self.record.from_scratch else self.details.get("parent_path")
        preference = self.preference_run
        fields = {
            # a focus run validates on replayed pairs, not on the corrections it teaches: early stopping
            # would keep the parent's weights; the gates judge forgetting instead
            "early_stopping_patience": 0 if parent else None,
            **self.options.train_overrides,
            "dataset": (
                Path(self.details["preference_dir"])
                if preference
                else self._training_dataset(continuing=parent is not None)
            ),
            "method": self.details.get("method") or self.options.method,
            "base_model": self.options.base_model,
            "output_dir": out,
            "name": name,
            "version": version,
            "preset": self.options.preset or (FOCUS_PRESET if parent and not preference else None),
            "max_steps": self.options.max_steps,
            "init_adapter": Path(parent) if parent else None,
            "resume": True,
            "log_jsonl": self.run_dir / "train.jsonl",
            "created_by": self.options.actor,
        }
        from training.train.preference import ReferenceModelError

        try:
            metrics = train(load_config(self.options.train_config, **fields)).metrics
        except (ValueError, FileNotFoundError, FileExistsError, ReferenceModelError) as error:
            raise RetrainError(f"training failed: {error}") from error
        if preference:
            log.info(
                "reference model: %s; validation reward margin %s (parent %s)",
                (metrics.get("reference") or {}).get("adapter") or "the base model",
                metrics.get("eval_reward_margin"),
                metrics.get("eval_reward_margin_parent"),
            )
        log.info(
            "trained %s@%s: eval loss %s (parent %s, base %s) in %s s",
            name,
            version,
            metrics.get("eval_loss"),
            metrics.get("eval_loss_parent"),
            metrics.get("eval_loss_base"),
            metrics.get("train_seconds"),
        )

    def _training_dataset(self, *, continuing: bool) -> Path:
        """What the trainer reads: from scratch the whole dataset; continuing a parent, the focus view
        (new corrections repeated, a replay sample; `training.retrain.focus`) in the run's folder."""
        from training.retrain.focus import write_focus_view

        dataset = Path(self.details["dataset_dir"])
        if not continuing:
            return dataset
        corrections = self.details.get("corrections_file")
        options = self.options
        view = write_focus_view(
            dataset,
            Path(corrections) if corrections else None,
            self.run_dir / "training-view",
            repeat=options.corrections_repeat,
            replay=options.replay_pairs,
            validation=options.validation_pairs,
        )
        log.info("training view: %s", view["note"])
        self.save(details={"training_view": {**view, "dir": str(self.run_dir / "training-view")}})
        return self.run_dir / "training-view"

    def step_evaluate(self) -> None:
        """The gates, against the parent (the base when there is none), with the corrections gate."""
        from training.evaluation.cli import evaluate

        if self.evaluated():
            log.info("gates %s (evaluated)", "passed" if self.details.get("passed") else "failed")
            return
        out = self.run_dir / "eval"
        corrections = None if self.preference_run else self.details.get("corrections_file")
        if self.preference_run and not self.details.get("preference_dir"):
            raise RetrainError("the preference dataset was not built")
        pairs = Path(self.details["preference_dir"]) / "test.jsonl" if self.preference_run else None
        if pairs is not None and not pairs.is_file():
            raise RetrainError(f"the held-out preference pairs are missing ({pairs}): rerun with --fresh")
        options = EvalOptions(
            dataset=Path(self.details["dataset_dir"]),
            out=out,
            gates=self.options.gates,
            base_model=self.options.base_model,
            adapters=[self.details["adapter_dir"]],
            baseline=self.details.get("parent_path"),
            corrections=Path(corrections) if corrections else None,
            preferences=pairs,
            limit=self.options.eval_limit,
            max_tokens=self.options.eval_max_tokens,
            database_url=self.options.database_url,
            progress=self.options.progress,
        )
        result = evaluate(options, self.hooks)
        if result.exit_code not in (0, 1) or result.report is None or result.json_path is None:
            raise RetrainError(f"the evaluation could not run: {result.error or 'no report written'}")
        report = result.report
        failed = [
            f"{g['name']} {g['value']} vs {g['threshold']}" for g in report["gates"] if g["status"] == "fail"
        ]
        log.info("gates %s%s", "passed" if report["passed"] else "failed: ", "; ".join(failed))
        self.save(
            details={
                "report_path": str(result.json_path),
                "passed": bool(report["passed"]),
                "failed_gates": failed,
                "gate_report": gate_summary(report),
            }
        )

    def step_register(self) -> None:
        """Record the version: `candidate` when its gates passed, else `rejected` (the run ends, exit 1)."""
        key, passed = self.details["adapter"], bool(self.details["passed"])
        if self.registered() is None:
            out = Path(self.details["adapter_dir"])
            meta = json.loads((out / "zantara.json").read_text(encoding="utf-8"))
            with self.sessions.begin() as session:
                entry = registry.record_version(
                    session,
                    name=self.record.adapter_name,
                    version=str(self.record.adapter_version),
                    path=str(out.resolve()),
                    base_model=str(meta.get("base_model") or self.options.base_model),
                    dataset_version=(
                        self.details.get("preference_version")
                        if self.preference_run
                        else self.record.dataset_version
                    ),
                    parent_version=None if self.record.from_scratch else self.record.parent_version,
                    metrics=meta.get("metrics") or {},
                    created_by=self.options.actor,
                    last_correction_id=self.details.get("last_correction_id"),
                    gate_report={**self.details["gate_report"], **self._left_out_report()},
                    report_path=self.details["report_path"],
                    status="candidate" if passed else "rejected",
                )
            log.info("registered %s as %s", entry.key, entry.status)
        else:
            log.info("%s (registered)", key)
        if not passed:
            failed = "; ".join(self.details.get("failed_gates", []))
            raise Finished(
                "rejected", EXIT_GATES_FAILED, f"{key} failed its gates ({failed}); kept as rejected"
            )

    def step_canary(self) -> None:
        """Ask the service to hot-load the version and start it as the canary; wait until it serves it."""
        from training.retrain.service_client import CanaryClient, ServiceError

        key, options = self.details["adapter"], self.options
        if not options.admin_token:
            raise RetrainError("no admin token: set ZANTARA_ADMIN_TOKEN (or keep it in VAR_DIR/admin-token)")
        client = CanaryClient(
            options.services,
            admin_token=options.admin_token,
            api_key=options.api_key,
            actor=options.actor,
            attempts=options.connect_attempts,
        )
        try:
            current = client.rollout()
            if current.get("adapter") == key and float(current.get("percentage") or 0) > 0:
                log.info("%s is the canary at %s%% (already)", key, current["percentage"])
                percentage = float(current["percentage"])
            else:
                against = self.details.get("parent") or "the base model"
                reason = f"zantara retrain run #{self.record.id}: gates passed against {against}"
                changed = client.start_canary(key, options.canary_percentage, reason)
                percentage = float(changed.get("percentage", options.canary_percentage))
                log.info("%s is the canary at %s%% (asked %s)", key, percentage, client.urls[0])
            self.save(details={"canary_percentage": percentage})
            client.wait_listed(key, options.load_timeout_s, on_poll=lambda line: log.info("canary: %s", line))
        except ServiceError as error:
            raise RetrainError(str(error)) from error
        finally:
            client.close()

    def _left_out_report(self) -> dict[str, Any]:
        """What the registry keeps of the corrections this run left out (nothing when none was)."""
        left = self.details.get("corrections_left_out")
        return {"corrections_left_out": left} if left else {}

    def _next_version(self, name: str) -> str:
        """The registry's next `vN`, past any folder already on disk (a manual `zantara train`)."""
        with self.sessions() as session:
            number = int(registry.next_version(session, name)[1:])
        while (self.options.adapters_dir / name / f"v{number}").exists():
            number += 1
        return f"v{number}"


def default_name(live: str | None, canary: str | None, entries: list[AdapterEntry]) -> str:
    """The adapter name a run trains: the live one's, the canary's, the newest registered, or `zantara`."""
    for key in (live, canary):
        if key and "@" in key:
            return registry.parse_key(key)[0]
    newest = max(entries, key=lambda entry: entry.created_at, default=None)
    return newest.name if newest else "zantara"


def pick_parent(
    name: str, live: str | None, canary: str | None, entries: list[AdapterEntry]
) -> AdapterEntry | None:
    """The live version of `name`, else its canary, else its highest registered version not rejected
    (`entries` in the registry's version order)."""
    usable = {entry.key: entry for entry in entries if entry.name == name and entry.status != "rejected"}
    for key in (live, canary):
        if key in usable:
            return usable[key]
    ordered = [entry for entry in entries if entry.key in usable]
    return ordered[-1] if ordered else None


def gate_summary(report: dict[str, Any]) -> dict[str, Any]:
    """What the registry keeps of an eval report: verdict, gates, baseline, corrections, critical errors,
    and the candidate's test-split `scores` (fact precision, consistency) the service exports."""
    skipped = {BASE, report.get("baseline")}
    candidates = [key for key in report.get("variants", {}) if key not in skipped]
    test = report["variants"][candidates[-1]]["test"] if candidates else {}
    scores = {name: (test.get(name) or {}).get("value") for name in ("fact_precision", "consistency")}
    return {
        "passed": report["passed"],
        "baseline": report.get("baseline"),
        "dataset_version": report.get("dataset_version"),
        "split": report.get("split"),
        "gates": report["gates"],
        "corrections": report.get("corrections"),
        "preferences": report.get("preferences"),
        "critical_errors": report.get("critical_errors", []),
        "scores": scores,
    }


def _eval_pair(item: CorrectionRecord) -> dict[str, Any]:
    """A stored correction as the corrections gate reads it, personal data scrubbed as in the dataset."""
    record = item.scrubbed()
    return {"id": item.database_id, "question": record.query, "answer": record.correct_answer}


def _ids(ids: list[int]) -> str:
    return ", ".join(f"#{number}" for number in ids) or "none new"


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(
        "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8"
    )
    os.replace(temporary, path)
