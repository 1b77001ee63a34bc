"""The per-adapter quality gauges' background task: every `ZANTARA_QUALITY_REFRESH_S` it reads the
correction rate and the distinct raters of each adapter version over the last
`ZANTARA_QUALITY_WINDOW_S` (`feedback.quality.adapter_quality`, one grouped query, in a thread) into
`zantara_adapter_correction_rate` and `zantara_adapter_raters`, so a scrape never waits on the
database."""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from datetime import timedelta

from database.models import utcnow
from feedback.quality import AdapterQuality, adapter_quality
from service.state import ServiceState

log = logging.getLogger(__name__)


async def refresh_quality(state: ServiceState) -> list[AdapterQuality]:
    """Read the window once and set the gauges; returns what it read."""
    since = utcnow() - timedelta(seconds=state.settings.quality_window_s)
    qualities = await asyncio.to_thread(adapter_quality, state.sessions, since)
    state.metrics.adapter_quality(qualities)
    return qualities


async def keep_quality(state: ServiceState) -> None:
    """Refresh the gauges every interval until cancelled; a failed read (database down) keeps the last
    values and is retried at the next interval."""
    while True:
        try:
            await refresh_quality(state)
        except Exception:  # noqa: BLE001 - the gauges must outlive a database outage
            log.warning("could not read the per-adapter quality gauges", exc_info=True)
        await asyncio.sleep(state.settings.quality_refresh_s)


def start_quality(state: ServiceState) -> asyncio.Task[None]:
    """Start this replica's quality gauge task."""
    return asyncio.create_task(keep_quality(state), name="adapter-quality")


async def stop_quality(task: asyncio.Task[None]) -> None:
    """Cancel the task."""
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
