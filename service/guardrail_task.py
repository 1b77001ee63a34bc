"""The canary guardrail's background task: every interval, the replica holding the database lease
runs one check (`router.guardrail.run_check`) and counts what it saw and did in the metrics.

Every replica runs this task; the lease makes sure one of them checks at a time. The lease lasts two
intervals and the holder renews it at every check, so when the holder stops (crash, scale-down) another
replica takes over within two intervals, and it releases the lease at shutdown so the next one takes
over at its next tick. All database work runs in threads, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import socket
from contextlib import suppress

from sqlalchemy.orm import Session, sessionmaker

from feedback.leases import acquire, release
from router.guardrail import ACTOR, CheckOutcome, GuardrailConfig, run_check
from router.rollout import RolloutStore
from service.metrics import Metrics
from service.settings import Settings
from service.state import ServiceState

log = logging.getLogger(__name__)

LEASE = "canary-guardrail"


def guardrail_config(settings: Settings) -> GuardrailConfig:
    """The guardrail's settings from the service's `ZANTARA_CANARY_*` ones."""
    return GuardrailConfig(
        interval_s=settings.canary_interval_s,
        threshold=settings.canary_threshold,
        min_samples=settings.canary_min_samples,
        min_users=settings.canary_min_users,
        step_weights=tuple(settings.canary_step_weights),
        max_weight=settings.canary_max_weight,
        max_error_rate=settings.canary_max_error_rate,
        max_latency_ratio=settings.canary_max_latency_ratio,
        confidence=settings.canary_confidence,
        min_effect=settings.canary_min_effect,
        min_fact_answers=settings.canary_fact_min_answers,
    )


def holder_id() -> str:
    """This process's lease holder name: host, process id and a random part (pids repeat in pods)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


class Guardrail:
    """One replica's guardrail: takes (or renews) the lease, and checks only while holding it."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        rollout: RolloutStore,
        config: GuardrailConfig,
        metrics: Metrics,
        *,
        holder: str | None = None,
    ) -> None:
        self.sessions, self.rollout, self.config, self.metrics = sessions, rollout, config, metrics
        self.holder = holder or holder_id()

    async def tick(self) -> CheckOutcome | None:
        """One interval: None when another replica holds the lease, else what the check saw and did."""
        ttl_s = 2 * self.config.interval_s
        if not await asyncio.to_thread(acquire, self.sessions, LEASE, self.holder, ttl_s):
            return None
        outcome = await asyncio.to_thread(run_check, self.sessions, self.rollout, self.config, actor=ACTOR)
        self._count(outcome)
        return outcome

    async def run(self) -> None:
        """Tick every interval until cancelled; a failed tick (database down) is logged and retried."""
        while True:
            try:
                outcome = await self.tick()
            except Exception:  # noqa: BLE001 - the guardrail must outlive a database outage
                log.exception("canary guardrail check failed")
            else:
                if outcome is not None and outcome.action is not None:
                    log.warning("canary guardrail: %s (%s)", outcome.action, outcome.details.get("reasons"))
                if outcome is not None and outcome.skipped is not None:
                    log.warning(
                        "canary guardrail: %s skipped, the rollout changed after the check", outcome.skipped
                    )
            await asyncio.sleep(self.config.interval_s)

    async def release(self) -> None:
        """Give the lease up (at shutdown), so another replica takes over at its next tick."""
        await asyncio.to_thread(release, self.sessions, LEASE, self.holder)

    def _count(self, outcome: CheckOutcome) -> None:
        if outcome.result is None:
            self.metrics.canary_p_value.set(math.nan)
            return
        self.metrics.canary_checks.labels(outcome.result).inc()
        test = outcome.verdict.test if outcome.verdict else None
        self.metrics.canary_p_value.set(test.p_value if test else math.nan)
        if outcome.action is not None and outcome.after is not None:
            self.metrics.canary_decisions.labels(outcome.action).inc()
            self.metrics.rollout_changes.labels(outcome.action).inc()
            self.metrics.rollout_percentage.set(outcome.after.percentage)
            self.rollout.invalidate()


def start_guardrail(state: ServiceState) -> tuple[Guardrail, asyncio.Task[None]] | None:
    """Start this replica's guardrail task (None when `ZANTARA_CANARY_ENABLED` is off)."""
    if not state.settings.canary_enabled:
        return None
    guardrail = Guardrail(state.sessions, state.rollout, guardrail_config(state.settings), state.metrics)
    return guardrail, asyncio.create_task(guardrail.run(), name="canary-guardrail")


async def stop_guardrail(started: tuple[Guardrail, asyncio.Task[None]] | None) -> None:
    """Cancel the guardrail task and release its lease (best effort: the lease expires anyway)."""
    if started is None:
        return
    guardrail, task = started
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
    try:
        await guardrail.release()
    except Exception as error:  # noqa: BLE001 - shutting down; the lease expires by itself
        log.warning("could not release the canary guardrail lease: %s", error)
