"""Fixtures of the review pages' browser tests (the helpers are in `tests/e2e/browser.py`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from database.migrate import upgrade
from tests.e2e.browser import chromium, screenshot_folder
from tests.pg_control import ControlledPostgres, controlled_postgres


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium, one per test module."""
    with chromium() as launched:
        yield launched


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where a test writes its screenshots (`ZANTARA_TEST_SCREENSHOTS`, else the test's temporary folder)."""
    return screenshot_folder(tmp_path)


@pytest.fixture(scope="module")
def database() -> Iterator[ControlledPostgres]:
    """A migrated PostgreSQL of the module's own that a test can stop and start again."""
    with controlled_postgres() as server:
        upgrade(server.url)
        yield server
