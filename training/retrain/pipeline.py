"""The `zantara retrain` pipeline: new corrections -> dataset version -> adapter -> gates -> canary.

1. lock: the database lease `retrain` (renewed in the background), so two runs never overlap;
2. resume the interrupted run (status `running`) from its recorded step, or start a new one;
3. parent: the live adapter, else the canary, else the newest registered version not rejected;
4. collect: corrections newer than the parent's `last_correction_id` (none: exit 3);
5. dataset: the dataset sources plus every stored correction, as a new dataset version;
6. train: continue from the parent adapter (or from scratch) into `ADAPTERS/NAME/vN+1`;
7. evaluate: `zantara eval`'s gates against the parent, with the corrections gate;
8. register: `candidate` when the gates pass, else `rejected` with its report (exit 1);
9. canary: the service hot-loads it and starts it as the canary (exit 0).

Every step is logged, counted on one progress bar (training and evaluation show their own bars inside
it) and recorded on the run's `retrain_runs` row; the steps themselves are in `training.retrain.steps`.
Example, as the service's CLI runs it:

    outcome = retrain(RetrainOptions(database_url=..., var_dir=..., adapters_dir=..., base_model=...), hooks)
    raise SystemExit(outcome.exit_code)
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from feedback import leases, retrain_runs
from training.evaluation.cli import EvalHooks
from training.progress import training_progress
from training.retrain.config import EXIT_ERROR, EXIT_PROMOTED, STEPS, Finished, RetrainError, RetrainOptions
from training.retrain.steps import Steps

LEASE = "retrain"
log = logging.getLogger("zantara.retrain")


@dataclass(frozen=True)
class RetrainOutcome:
    """How a run ended: exit code, the run's status, its id, a sentence for humans, the new version."""

    exit_code: int
    status: str
    run_id: int | None
    message: str
    adapter: str | None = None


def retrain(options: RetrainOptions, hooks: EvalHooks) -> RetrainOutcome:
    """Run (or resume) the pipeline under the `retrain` lease; expected failures become exit codes."""
    from database.engine import create_db_engine, make_session_factory

    engine = create_db_engine(options.database_url)
    sessions = make_session_factory(engine)
    try:
        keeper = LeaseKeeper(sessions, options.lease_ttl_s)
        if not keeper.acquire(wait=options.wait):
            return RetrainOutcome(EXIT_ERROR, "locked", None, _busy_message(sessions))
        with keeper:
            return Pipeline(options, sessions, hooks, keeper).run()
    except SQLAlchemyError as error:
        cause = getattr(error, "orig", None) or error
        message = f"database error (is its schema up to date? `zantara db upgrade`): {cause}"
        return RetrainOutcome(EXIT_ERROR, "error", None, message)
    finally:
        engine.dispose()


def _busy_message(sessions: sessionmaker[Session]) -> str:
    with sessions() as session:
        running = retrain_runs.unfinished_run(session)
    where = ""
    if running is not None:
        where = f" (run #{running.id} at step {running.step}, started {running.started_at:%Y-%m-%d %H:%M})"
    return f"another `zantara retrain` holds the lock{where}; try later or pass --wait"


class LeaseKeeper:
    """Holds the `retrain` lease, renewing it from a background thread every third of its TTL."""

    def __init__(self, sessions: sessionmaker[Session], ttl_s: float) -> None:
        self.sessions, self.ttl_s = sessions, ttl_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="retrain-lease", daemon=True)

    def acquire(self, *, wait: bool) -> bool:
        """Take the lease; with `wait`, poll until it is free."""
        waiting = False
        while not leases.acquire(self.sessions, LEASE, self.holder, self.ttl_s):
            if not wait:
                return False
            if not waiting:
                log.info("waiting for the retrain lock: %s", _busy_message(self.sessions))
                waiting = True
            time.sleep(min(5.0, self.ttl_s / 3))
        return True

    def check(self) -> None:
        """Raise when a renewal found the lease taken by someone else."""
        if self.lost:
            raise RetrainError("lost the retrain lock (it expired and another run took it)")

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        leases.release(self.sessions, LEASE, self.holder)

    def _renew(self) -> None:
        renewed = time.monotonic()
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if leases.acquire(self.sessions, LEASE, self.holder, self.ttl_s):
                    renewed = time.monotonic()
                else:
                    self.lost = True
            except SQLAlchemyError as error:
                log.warning("could not renew the retrain lock: %s", error)
                self.lost = time.monotonic() - renewed > self.ttl_s


class Pipeline(Steps):
    """One run: open (resume or start), the steps in order, and how it ended."""

    def __init__(
        self, options: RetrainOptions, sessions: sessionmaker[Session], hooks: EvalHooks, keeper: LeaseKeeper
    ) -> None:
        super().__init__(options, sessions, hooks)
        self.keeper = keeper

    def run(self) -> RetrainOutcome:
        """Open the run and go through the steps; each skips what a previous attempt already did."""
        self.open()
        step = self.record.step
        done = STEPS.index(step) if step in STEPS else len(STEPS)
        with training_progress(enabled=self.options.progress) as bar:
            task = bar.add_task(f"retrain #{self.record.id}", total=len(STEPS), completed=done, stats=step)
            try:
                for index, step in enumerate(STEPS):
                    self.keeper.check()
                    bar.update(task, completed=index, stats=step)
                    log.info("run #%s: step %d/%d %s", self.record.id, index + 1, len(STEPS), step)
                    started = time.perf_counter()
                    getattr(self, f"step_{step}")()
                    if index >= done:  # a step the run had not finished yet: move the run past it
                        done = index + 1
                        seconds = {
                            **self.details.get("seconds", {}),
                            step: round(time.perf_counter() - started, 1),
                        }
                        self.save(
                            step=STEPS[done] if done < len(STEPS) else "done", details={"seconds": seconds}
                        )
                bar.update(task, completed=len(STEPS), stats="done")
            except Finished as end:
                return self.finish(end.status, end.exit_code, str(end))
            except Exception as error:  # noqa: BLE001 - any failure leaves the run resumable: exit 2
                return self.interrupted(step, error)
        key, share = self.details["adapter"], self.details["canary_percentage"]
        return self.finish("promoted", EXIT_PROMOTED, f"{key} is the canary at {share}%")

    def open(self) -> None:
        """Resume the interrupted run (or abandon it with `--fresh`), else start a new one."""
        options = self.options
        with self.sessions.begin() as session:
            found = retrain_runs.unfinished_run(session)
            if found is not None and options.fresh:
                abandoned = {"message": "abandoned: a later run was started with --fresh"}
                retrain_runs.finish_run(
                    session, found.id, status="failed", exit_code=EXIT_ERROR, details=abandoned
                )
                log.info("run #%s abandoned (--fresh)", found.id)
                found = None
            if found is None:
                found = retrain_runs.start_run(
                    session,
                    adapter_name=options.name or "",
                    from_scratch=options.from_scratch,
                    step=STEPS[0],
                    details={"force": options.force, "asked_from_scratch": options.from_scratch},
                )
                log.info("run #%s started", found.id)
            else:
                log.info("resuming run #%s at step %s (pass --fresh to start over)", found.id, found.step)
        self._record = found

    def finish(self, status: str, exit_code: int, message: str) -> RetrainOutcome:
        """End the run with `status` (the message names the corrections it left out, if any)."""
        message += self.left_out_note()
        with self.sessions.begin() as session:
            self._record = retrain_runs.finish_run(
                session, self.record.id, status=status, exit_code=exit_code, details={"message": message}
            )
        log.info("run #%s %s: %s", self.record.id, status, message)
        return RetrainOutcome(exit_code, status, self.record.id, message, self.details.get("adapter"))

    def interrupted(self, step: str, error: Exception) -> RetrainOutcome:
        """Leave the run `running` at `step` with the error recorded, for the next run to resume."""
        if not isinstance(error, RetrainError | OSError):
            log.exception("run #%s: step %s crashed", self.record.id, step)
        self.save(exit_code=EXIT_ERROR, details={"last_error": f"{step}: {error}"})
        message = f"step {step} failed: {error}; the next `zantara retrain` resumes run #{self.record.id}"
        log.error("run #%s: %s", self.record.id, message)
        return RetrainOutcome(EXIT_ERROR, "running", self.record.id, message, self.details.get("adapter"))
