"""Fixtures of the review pages' browser tests (the helpers are in `tests/e2e/browser.py`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from tests.e2e.browser import chromium, screenshot_folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium, one per test module."""
    with chromium() as launched:
        yield launched


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where a test writes its screenshots (`ZANTARA_TEST_SCREENSHOTS`, else the test's temporary folder)."""
    return screenshot_folder(tmp_path)
