"""The review queue page in a real headless Chromium (Debian's, driven by Playwright) against
`zantara serve` on PostgreSQL: sign in, planted HTML in an answer stays text, a correction that
contradicts a verified fact is refused with the fact, one that fails a dataset check is refused with
the rule and saved with the reviewer's override reason, all by keyboard alone, and the item leaves the
queue; an item whose correction a retrain rejected shows the reason and the rejected text; another is
dismissed, the empty-queue message shows; nothing scrolls sideways at 390 px.

Screenshots go to `ZANTARA_TEST_SCREENSHOTS` (default: the pytest temporary folder). Without
`/usr/bin/chromium` the test fails, it never skips.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from database.engine import create_db_engine, make_session_factory
from feedback.records import InteractionRecord
from feedback.review_queue import corrections_after, reject_corrections
from feedback.store import save_interactions
from tests.database import rate_interaction
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

QUESTION = "Berapa tarif PPN umum sekarang?"


@pytest.fixture(scope="module")
def served(
    demo_dirs: tuple[Path, Path], postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(service URL, database URL) of a running service on a fresh PostgreSQL database."""
    with serving(
        demo_dirs, postgres_url, tmp_path_factory.mktemp("var"), ZANTARA_ADMIN_TOKEN=ADMIN
    ) as served:
        yield served


def plant_answer(database_url: str, key: str, answer: str, stars: int) -> None:
    """A canary answer with planted HTML, rated `stars`, written as the service would."""
    engine = create_db_engine(database_url)
    try:
        sessions = make_session_factory(engine)
        save_interactions(
            sessions,
            [
                InteractionRecord(
                    id=key,
                    user_hash="u",
                    model_requested="zantara",
                    routed=True,
                    variant="tuned",
                    adapter_name="zantara-demo",
                    adapter_version="v1",
                    messages=[
                        {"role": "user", "content": QUESTION + ' <img src=x onerror="window.__pwned=2">'}
                    ],
                    answer=answer,
                    finish_reason="stop",
                    prompt_tokens=3,
                    completion_tokens=3,
                    latency_s=0.1,
                    ttft_s=None,
                    params={},
                    streamed=False,
                    target="canary",
                )
            ],
        )
        rate_interaction(sessions, interaction_id=key, stars=stars, comment="<b>salah</b> total")
    finally:
        engine.dispose()


def rate_a_real_answer(url: str, stars: int) -> str:
    """Ask the running service and rate its answer; the answer's id."""
    chat = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "zantara", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 16},
        timeout=60,
    )
    assert chat.status_code == 200, chat.text
    answer_id = str(chat.json()["id"])
    rated = httpx.post(f"{url}/v1/feedback", json={"response_id": answer_id, "rating": stars}, timeout=30)
    assert rated.status_code == 200, rated.text
    return answer_id


def wait_for_queue(url: str, token: str, size: int) -> list[str]:
    """The queue's ids once it holds `size` items (interactions are written a moment after the answer)."""
    deadline = time.monotonic() + 30
    while True:
        page = httpx.get(f"{url}/review/api/queue", headers={"Authorization": f"Bearer {token}"}).json()
        if page["total"] == size or time.monotonic() > deadline:
            assert page["total"] == size, page
            return [item["interaction_id"] for item in page["items"]]
        time.sleep(0.1)


def test_review_queue_in_a_real_browser(served: tuple[str, str], browser: Browser, screenshots: Path) -> None:
    url, database_url = served
    token = add_reviewer(database_url, "ana")
    plant_answer(database_url, "planted", PLANTED + " Tarif PPN 15%.", stars=1)
    real_id = rate_a_real_answer(url, stars=2)
    assert wait_for_queue(url, token, 2) == ["planted", real_id]

    mobile = phone_page(browser)
    sign_in(mobile, url, token, "/review/queue")
    expect(mobile.locator("article.item")).to_have_count(2)
    no_sideways_scroll(mobile)
    queue_shot = screenshots / "review-queue-390x844.png"
    mobile.screenshot(path=str(queue_shot), full_page=True)

    desk = desk_page(browser)
    sign_in(desk, url, token, "/review/queue")
    planted = desk.locator('article.item[data-id="planted"]')
    assert "<script>window.__pwned = true;" in planted.locator(".answer").inner_text()
    assert 'onerror="window.__pwned=2"' in planted.locator(".conversation").inner_text()
    assert "<b>salah</b> total" in planted.locator(".comment").inner_text()
    assert planted.locator("script, img, b").count() == 0
    assert desk.evaluate("window.__pwned") is None and desk.title() == "Review queue · ZANTARA review"
    assert "zantara-demo@v1" in planted.inner_text() and "canary" in planted.inner_text()
    assert desk.locator("#queue-count").inner_text() == "2"

    # keyboard only: write a correction that contradicts a verified fact, check it, see it refused
    desk.keyboard.press("c")
    expect(planted.locator("textarea[name=correct_answer]")).to_be_focused()
    desk.keyboard.type("Tarif PPN umum adalah 15%.")
    desk.keyboard.press("Tab")
    desk.keyboard.type("Model menyebut tarif yang salah.")
    desk.keyboard.press("Tab")
    desk.keyboard.type("Tarif PPN umum 11%.")
    desk.keyboard.press("Escape")
    desk.keyboard.press("f")
    expect(planted.locator(".facts.bad")).to_contain_text("ppn_rate_general")
    desk.keyboard.press("c")
    desk.keyboard.press("Control+Enter")
    expect(planted.locator(".item-status")).to_contain_text("contradicts a verified fact")
    expect(planted.locator(".item-status")).to_contain_text("11%")

    # too short for the dataset's completeness check: refused with the rule, then overridden
    desk.keyboard.press("Control+a")
    desk.keyboard.type("Tarif PPN umum adalah 11%.")
    desk.keyboard.press("Escape")
    desk.keyboard.press("f")
    expect(planted.locator(".facts.bad")).to_contain_text("completeness: the answer has only 5 words")
    desk.keyboard.press("c")
    desk.keyboard.press("Control+Enter")
    expect(planted.locator(".item-status")).to_contain_text("completeness: the answer has only 5 words")
    expect(planted.locator(".override")).to_be_visible()
    desk.keyboard.press("Escape")
    desk.keyboard.press("o")
    expect(planted.locator("textarea[name=override_reason]")).to_be_focused()
    desk.keyboard.type("Jawaban singkat cukup untuk pertanyaan ini.")
    desk.keyboard.press("Control+Enter")
    expect(planted).to_have_count(0)
    expect(desk.locator("#queue-status")).to_contain_text("Correction saved")
    expect(desk.locator("#queue-count")).to_have_text("1")
    real = desk.locator(f'article.item[data-id="{real_id}"]')
    expect(real).to_have_class("card item current")

    desk.keyboard.press("k")
    desk.keyboard.press("j")
    desk.keyboard.press("d")
    expect(real.locator("input[name=reason]")).to_be_focused()
    desk.keyboard.type("Pertanyaan sudah dijawab benar.")
    desk.keyboard.press("Enter")
    expect(desk.locator("#queue-empty")).to_be_visible()
    expect(desk.locator("#queue-empty")).to_contain_text("no low-rated answers are waiting")
    expect(desk.locator("article.item")).to_have_count(0)

    mobile.reload()
    expect(mobile.locator("#queue-empty")).to_be_visible()
    no_sideways_scroll(mobile)
    empty_shot = screenshots / "review-queue-empty-390x844.png"
    mobile.screenshot(path=str(empty_shot), full_page=True)

    engine = create_db_engine(database_url)
    try:
        (stored,) = corrections_after(make_session_factory(engine), None)
    finally:
        engine.dispose()
    assert (stored.interaction_id, stored.reviewer) == ("planted", "ana") and stored.database_id is not None
    assert stored.correct_answer == "Tarif PPN umum adalah 11%." and stored.lesson == "Tarif PPN umum 11%."
    assert stored.check_override == "Jawaban singkat cukup untuk pertanyaan ini."
    assert wait_for_queue(url, token, 0) == []

    # a retrain leaves the correction out: the item is back, with the reason and the rejected text
    engine = create_db_engine(database_url)
    try:
        reject_corrections(
            make_session_factory(engine),
            {stored.database_id: "tone: formal question answered with casual words: nih"},
        )
    finally:
        engine.dispose()
    desk.reload()
    back = desk.locator('article.item[data-id="planted"]')
    expect(back.locator(".rejected")).to_contain_text("tone: formal question answered with casual words: nih")
    expect(back.locator("textarea[name=correct_answer]")).to_have_value("Tarif PPN umum adalah 11%.")
    for shot in (queue_shot, empty_shot):
        assert shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")
