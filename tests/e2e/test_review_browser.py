"""The blind A/B page in a real headless Chromium (Debian's, driven by Playwright) against `zantara serve`:
sign in, judge by keyboard, planted HTML stays text, the queue empties; phone-sized screenshots.

Screenshots go to `ZANTARA_TEST_SCREENSHOTS` (default: the pytest temporary folder); the test prints
their paths. Without `/usr/bin/chromium` the test fails (`make test` installs it), it never skips.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.browser import (
    ADMIN,
    PLANTED,
    add_reviewer,
    desk_page,
    no_sideways_scroll,
    phone_page,
    serving,
    sign_in,
)


@pytest.fixture(scope="module")
def served(
    demo_dirs: tuple[Path, Path], postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(service URL, database URL) of a running service on a fresh PostgreSQL database."""
    var_dir = tmp_path_factory.mktemp("var")
    with serving(
        demo_dirs, postgres_url, var_dir, ZANTARA_ADMIN_TOKEN=ADMIN, ZANTARA_AB_OVERLAP="2"
    ) as served:
        yield served


def queue(url: str, *adapter_answers: str) -> None:
    pairs = [
        {
            "question": f"Kak, modal minimum PT PMA berapa ya? ({n})",
            "category": "company",
            "register": "casual",
            "complexity": "simple",
            "base_model": "zantara-demo-base",
            "adapter": "zantara-demo@v1",
            "base_answer": f"Modal disetor minimal Rp 10 miliar. ({n})",
            "adapter_answer": answer,
        }
        for n, answer in enumerate(adapter_answers)
    ]
    response = httpx.post(f"{url}/admin/ab/pairs", json=pairs, headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 201, response.text


def judge_by_keyboard(page: Page, choice_key: str, digits: str) -> None:
    page.keyboard.press(choice_key)
    for digit in digits:
        page.keyboard.press(digit)
    page.keyboard.press("Enter")


def test_review_ab_in_a_real_browser(served: tuple[str, str], browser: Browser, screenshots: Path) -> None:
    url, database_url = served
    token = add_reviewer(database_url, "ana")
    queue(url, PLANTED, "Modal disetor minimal Rp 10 miliar untuk PT PMA, kak.")

    mobile = phone_page(browser)
    mobile.goto(f"{url}/review/login")
    login_shot = screenshots / "review-login-390x844.png"
    mobile.screenshot(path=str(login_shot), full_page=True)
    sign_in(mobile, url, token, "/review/ab")
    expect(mobile.locator("#answer-A")).to_be_visible()
    no_sideways_scroll(mobile)
    ab_shot = screenshots / "review-ab-390x844.png"
    mobile.screenshot(path=str(ab_shot), full_page=True)

    desk = desk_page(browser)
    sign_in(desk, url, token, "/review/ab")
    answers = desk.locator("#answer-A").inner_text() + desk.locator("#answer-B").inner_text()
    assert "<script>window.__pwned = true;" in answers, "the planted HTML is shown as text"
    assert desk.evaluate("window.__pwned") is None and desk.title() == "Blind A/B · ZANTARA review"
    assert desk.locator("#answer-A script, #answer-B script, #answer-A img, #answer-B img").count() == 0

    judge_by_keyboard(desk, "a", "879654")
    expect(desk.locator("p.saved")).to_be_visible()
    assert "(1)" in desk.locator("#question").inner_text(), "the second pair follows the first"
    judge_by_keyboard(desk, "t", "777770")
    expect(desk.locator("#queue-empty")).to_contain_text("queue is empty")

    mobile.reload()
    expect(mobile.locator("#queue-empty")).to_be_visible()
    empty_shot = screenshots / "review-ab-empty-390x844.png"
    mobile.screenshot(path=str(empty_shot), full_page=True)

    summary = httpx.get(
        f"{url}/admin/ab/summary",
        params={"adapter": "zantara-demo@v1"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    ).json()
    assert summary["judgments"] == 2 and summary["ties"] == 1
    means = summary["mean_ratings"]
    assert means["base"]["completeness"] + means["tuned"]["completeness"] == (9 + 4 + 7 + 10) / 2
    for shot in (login_shot, ab_shot, empty_shot):
        assert shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")
