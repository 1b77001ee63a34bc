"""What the review pages' browser tests share: Debian's Chromium driven headless by Playwright, a
service on a fresh PostgreSQL database, a reviewer's sign-in and the phone-width check.

Without `/usr/bin/chromium` a browser test fails (`make test` installs it), it never skips.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

from tests.postgres import fresh_database
from tests.served import demo_env, running_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN = "e2e-admin-token-0123456789"
"""The admin token of the services these tests start (where they set one)."""
PLANTED = (
    '<script>window.__pwned = true; document.title = "pwned"</script><img src=x onerror="window.__pwned=1">'
)
"""HTML planted in an answer: a page that shows it as text runs none of it."""
PHONE = ViewportSize(width=390, height=844)
DESK = ViewportSize(width=1280, height=900)


@contextmanager
def serving(
    demo_dirs: tuple[Path, Path], postgres_url: str, var_dir: Path, **env: str
) -> Iterator[tuple[str, str]]:
    """(service URL, database URL) of `zantara serve` on a fresh PostgreSQL database, with `env` added."""
    with (
        fresh_database(postgres_url) as database_url,
        running_server(demo_env(var_dir, demo_dirs, database_url, **env), timeout_s=120) as server,
    ):
        yield server.url, database_url


@contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Chromium from `/usr/bin/chromium` (fails the test when it is missing)."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (`make test` does it as root)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


def screenshot_folder(tmp_path: Path) -> Path:
    """`ZANTARA_TEST_SCREENSHOTS`, else a folder under `tmp_path`; created."""
    folder = Path(os.environ.get("ZANTARA_TEST_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def phone_page(browser: Browser) -> Page:
    """A page in a 390 x 844 touch-screen context at twice the pixel density."""
    return browser.new_context(
        viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True
    ).new_page()


def desk_page(browser: Browser) -> Page:
    """A page in a 1280 x 900 desktop context."""
    return browser.new_context(viewport=DESK).new_page()


def add_reviewer(database_url: str, name: str) -> str:
    """`zantara reviewers add NAME` as an admin runs it; the token it prints."""
    done = subprocess.run(
        [sys.executable, "-m", "zantara", "reviewers", "add", name, "--database-url", database_url],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def sign_in(page: Page, url: str, token: str, path: str) -> None:
    """Open `path`, be sent to the sign-in page, enter the reviewer's `token`, land back on `path`."""
    page.goto(f"{url}{path}")
    expect(page).to_have_url(f"{url}/review/login?next={path}")
    page.fill("#token", token)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{url}{path}")


def no_sideways_scroll(page: Page) -> None:
    """The page is no wider than a phone's 390 px screen."""
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways on a phone ({width}px)"
