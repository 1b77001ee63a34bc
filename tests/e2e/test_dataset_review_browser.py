"""The dataset validation page in a real headless Chromium (Debian's, driven by Playwright) against
`zantara serve`: records sent with `zantara dataset submit`, sign in, approve / edit / reject by
keyboard, planted HTML stays text, the empty message; phone-sized screenshots.

Screenshots go to `ZANTARA_TEST_SCREENSHOTS` (default: the pytest temporary folder). Without
`/usr/bin/chromium` the test fails (`make test` installs it), it never skips.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from database.engine import create_db_engine, make_session_factory
from feedback.dataset_review import record_key, verdicts
from knowledge.prompts import ZANTARA_SYSTEM_PROMPT
from tests.e2e.browser import (
    PLANTED,
    add_reviewer,
    desk_page,
    no_sideways_scroll,
    phone_page,
    serving,
    sign_in,
)

PAIRS = [
    (
        "Kak, NIB perlu diperbarui tiap tahun?",
        "Tidak perlu, kak. Perbarui datanya di OSS kalau ada perubahan.",
    ),
    ("Berapa modal minimum PT PMA?", "Modal disetor minimal Rp10 miliar per bidang usaha, di luar tanah."),
    ("Apakah KITAS investor bisa diperpanjang?", f"Bisa. {PLANTED}"),
]
EDITED = "Modal disetor PT PMA minimal Rp10 miliar per KBLI, di luar tanah dan bangunan."


@pytest.fixture(scope="module")
def served(
    demo_dirs: tuple[Path, Path], postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(service URL, database URL) of a running service on a fresh PostgreSQL database."""
    var_dir = tmp_path_factory.mktemp("var")
    with serving(demo_dirs, postgres_url, var_dir, ZANTARA_DATASET_REVIEWS_REQUIRED="1") as served:
        yield served


def zantara(*args: str) -> str:
    """Run the `zantara` command as a user does; its standard output."""
    done = subprocess.run(
        [sys.executable, "-m", "zantara", *args], capture_output=True, text=True, check=True
    )
    return done.stdout


def submit(folder: Path, database_url: str) -> list[str]:
    """A built dataset holding PAIRS unvalidated, sent for review; record ids in review order."""
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"version": "ds-e2e"}), encoding="utf-8")
    rows = [
        {
            "messages": [
                {"role": "system", "content": ZANTARA_SYSTEM_PROMPT},
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ],
            "meta": {"id": f"e2e-s{n:02d}", "category": "company", "register": "casual"}
            | {"source": "synthetic", "validated": False},
        }
        for n, (question, answer) in enumerate(PAIRS)
    ]
    (folder / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    assert "3 new record(s)" in " ".join(
        zantara("dataset", "submit", str(folder), "--database-url", database_url).split()
    )
    return sorted(record_key(question, answer) for question, answer in PAIRS)


def shown(page: Page) -> tuple[str, str]:
    return page.locator("#question").inner_text(), page.locator("#answer").inner_text()


def test_dataset_validation_in_a_real_browser(
    served: tuple[str, str], browser: Browser, screenshots: Path, tmp_path: Path
) -> None:
    url, database_url = served
    token = add_reviewer(database_url, "ana")
    order = submit(tmp_path / "dataset", database_url)
    pairs = {record_key(question, answer): (question, answer) for question, answer in PAIRS}

    mobile = phone_page(browser)
    sign_in(mobile, url, token, "/review/dataset")
    expect(mobile.locator("#answer")).to_be_visible()
    no_sideways_scroll(mobile)
    record_shot = screenshots / "review-dataset-390x844.png"
    mobile.screenshot(path=str(record_shot), full_page=True)

    desk = desk_page(browser)
    sign_in(desk, url, token, "/review/dataset")
    actions: dict[str, str] = {}
    for record in order:
        assert shown(desk) == pairs[record], "records come oldest first, then by id"
        if PLANTED in pairs[record][1]:
            assert desk.evaluate("window.__pwned") is None and desk.title().startswith("Dataset validation")
            assert desk.locator("#answer script, #answer img").count() == 0
            desk.keyboard.press("a")
            desk.keyboard.press("Enter")
            expect(desk.locator("p.saved")).to_contain_text("approved")
            actions[record] = "approve"
        elif "edit" not in actions.values():
            desk.keyboard.press("e")
            expect(desk.locator("#edit-answer")).to_be_focused()
            desk.keyboard.press("Control+A")
            desk.keyboard.type(EDITED)
            desk.keyboard.press("Control+Enter")
            expect(desk.locator("p.saved")).to_contain_text("edited")
            actions[record] = "edit"
        else:
            desk.keyboard.press("r")
            expect(desk.locator("#reason")).to_be_focused()
            desk.keyboard.type("terlalu umum")
            desk.keyboard.press("Enter")
            expect(desk.locator("p.saved")).to_contain_text("rejected")
            actions[record] = "reject"
    expect(desk.locator("#queue-empty")).to_contain_text("every record has the reviews it needs")
    expect(desk.locator("#count-validated")).to_have_text("2")
    expect(desk.locator("#count-rejected")).to_have_text("1")

    mobile.reload()
    expect(mobile.locator("#queue-empty")).to_be_visible()
    empty_shot = screenshots / "review-dataset-empty-390x844.png"
    mobile.screenshot(path=str(empty_shot), full_page=True)

    engine = create_db_engine(database_url)
    try:
        decided = verdicts(make_session_factory(engine))
    finally:
        engine.dispose()
    status = {"approve": "validated", "edit": "validated", "reject": "rejected"}
    assert {record: decided[record].status for record in order} == {r: status[a] for r, a in actions.items()}
    edited = next(record for record, action in actions.items() if action == "edit")
    assert (decided[edited].question, decided[edited].answer) == (pairs[edited][0], EDITED)
    for shot in (record_shot, empty_shot):
        assert shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")
