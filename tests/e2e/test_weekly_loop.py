"""The whole weekly loop on the tiny model and a real PostgreSQL, through the real interfaces.

Serve; chat as many users; rate the canary's answers low; correct them through the review API; run
`zantara retrain`; see the new version registered, hot-loaded and receiving the canary share; then
plant bad ratings on it and watch the guardrail roll it back with its audit event.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from database.engine import create_db_engine, make_session_factory
from database.migrate import upgrade
from feedback.reviewers import add_reviewer
from tests.postgres import fresh_database
from tests.served import REPO, demo_env, running_server

ADMIN = "loop-admin-token-0123456789"
CORRECTIONS = {
    "Kalau mau bikin PT PMA, NPWP badannya diurus di mana ya?": (
        "NPWP badan PT PMA sekarang terbit bersama NIB lewat sistem OSS setelah akta pendirian "
        "disahkan Kemenkumham, jadi tidak perlu datang ke kantor pajak. Pastikan alamat dan data "
        "pengurus di akta sudah benar supaya NPWP tidak perlu direvisi."
    ),
    "Apakah KITAS bisa diperpanjang tanpa keluar dari Indonesia?": (
        "Bisa. Perpanjangan KITAS diajukan lewat e-Visa Imigrasi sebelum izin tinggal habis, "
        "dengan sponsor yang sama, tanpa harus keluar dari Indonesia. Ajukan paling lambat beberapa "
        "minggu sebelumnya dan siapkan paspor yang masih berlaku."
    ),
    "Apa bedanya sewa tanah dan hak pakai untuk orang asing?": (
        "Orang asing tidak boleh memiliki hak milik atas tanah. Yang bisa dipakai adalah hak pakai "
        "yang tercatat di sertifikat BPN, sedangkan sewa hanya perjanjian dengan pemilik. Hak pakai "
        "lebih kuat karena terdaftar; sewa bergantung pada isi kontraknya."
    ),
}


@pytest.fixture
def loop(
    demo_dirs: tuple[Path, Path], postgres_url: str, tmp_path: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    """A served demo model with its own adapters folder (retrain writes v2 there), on PostgreSQL,
    with a guardrail that judges quickly."""
    adapters = tmp_path / "adapters"
    shutil.copytree(demo_dirs[1], adapters)
    with fresh_database(postgres_url) as database_url:
        env = demo_env(
            tmp_path / "var",
            (demo_dirs[0], adapters),
            database_url,
            ZANTARA_ADMIN_TOKEN=ADMIN,
            ZANTARA_ROLLOUT_CACHE_S="0",
            ZANTARA_ADAPTER_SYNC_S="0.5",
            ZANTARA_CANARY_INTERVAL_S="1",
            ZANTARA_CANARY_MIN_SAMPLES="8",
            ZANTARA_CANARY_MIN_USERS="8",
            ZANTARA_CANARY_THRESHOLD="2",
        )
        with running_server(env, timeout_s=180) as server:
            yield server.url, env


def chat(client: httpx.Client, user: str, question: str) -> httpx.Response:
    response = client.post(
        "/v1/chat/completions",
        json={
            "model": "zantara",
            "user": user,
            "max_tokens": 12,
            "temperature": 0,
            "messages": [{"role": "user", "content": question}],
        },
    )
    assert response.status_code == 200, response.text
    return response


def rate(client: httpx.Client, response: httpx.Response, stars: int) -> None:
    rated = client.post("/v1/feedback", json={"response_id": response.json()["id"], "rating": stars})
    assert rated.status_code in (200, 202), rated.text


def reviewer_token(database_url: str) -> str:
    upgrade(database_url)
    engine = create_db_engine(database_url)
    try:
        _, token = add_reviewer(make_session_factory(engine), "Dewi")
    finally:
        engine.dispose()
    return token


@pytest.mark.slow
def test_the_weekly_loop_end_to_end(loop: tuple[str, dict[str, str]]) -> None:
    url, env = loop
    admin = {"Authorization": f"Bearer {ADMIN}", "X-Zantara-Actor": "ops"}
    with httpx.Client(base_url=url, timeout=120) as client:
        rollout = client.get("/admin/rollout", headers=admin).json()
        assert (rollout["adapter"], rollout["percentage"]) == ("zantara-demo@v1", 20)

        # 1. many users chat; the canary's answers are rated low (the others are not rated yet)
        canary_answers = 0
        for index in range(45):
            question = list(CORRECTIONS)[index % len(CORRECTIONS)]
            response = chat(client, f"week1-user-{index}", question)
            if response.headers.get("x-zantara-adapter") == "zantara-demo@v1":  # no live adapter yet
                rate(client, response, 1)
                canary_answers += 1
        assert canary_answers >= 3

        # 2. a reviewer corrects one answer per question and dismisses the repeats
        reviewer = {"Authorization": f"Bearer {reviewer_token(env['ZANTARA_DATABASE_URL'])}"}
        queue = client.get("/review/api/queue", headers=reviewer, params={"limit": 100}).json()
        assert queue["total"] == canary_answers
        corrected: set[str] = set()
        for item in queue["items"]:
            question = item["messages"][-1]["content"]
            assert item["adapter"] == "zantara-demo@v1" and item["stars"] == 1
            if question in corrected:
                body: dict[str, Any] = {"action": "dismiss", "reason": "same question, corrected once"}
            else:
                body = {
                    "action": "correct",
                    "correct_answer": CORRECTIONS[question],
                    "why_wrong": "jawaban model tidak menjawab pertanyaan",
                    "lesson": "jawab langsung dengan prosedur yang berlaku",
                }
                corrected.add(question)
            done = client.post(f"/review/api/queue/{item['interaction_id']}", headers=reviewer, json=body)
            assert done.status_code == 201, done.text
        assert client.get("/review/api/queue", headers=reviewer).json()["total"] == 0

        # 3. the weekly retrain: corrections -> dataset -> train from v1 -> gates -> registry -> canary
        started = time.perf_counter()
        retrain = subprocess.run(
            [
                sys.executable,
                "-m",
                "zantara",
                "retrain",
                "--service",
                url,
                "--eval-limit",
                "6",
                "--no-progress",
            ],
            env={**os.environ, **env},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=900,
        )
        retrain_s = time.perf_counter() - started
        assert retrain.returncode == 0, retrain.stdout[-3000:] + retrain.stderr[-3000:]
        registry = {entry["key"]: entry for entry in client.get("/admin/adapters", headers=admin).json()}
        new = registry["zantara-demo@v2"]
        assert (new["status"], new["parent_version"], new["loaded"]) == ("canary", "v1", True)
        assert new["gate_report"]["passed"] is True and new["dataset_version"]
        assert registry["zantara-demo@v1"]["status"] == "candidate"
        gates = [(g["name"], g["value"], g["threshold"], g["status"]) for g in new["gate_report"]["gates"]]
        print(f"retrain took {retrain_s:.0f} s; gates (name, value, threshold, status): {gates}")

        # the canary share now goes to v2, sticky per user; the others get the base model
        targets: dict[str, list[str]] = {"canary": [], "base": []}
        for index in range(60):
            response = chat(client, f"week2-user-{index}", list(CORRECTIONS)[index % 3])
            adapter = response.headers.get("x-zantara-adapter")
            assert adapter in ("zantara-demo@v2", None) and "x-zantara-target" not in response.headers
            target = "canary" if adapter else "base"
            targets[target].append(f"week2-user-{index}")
            # 4. bad ratings planted on the canary, good ones on the base
            rate(client, response, 1 if target == "canary" else 5)
        assert len(targets["canary"]) >= 8, targets

        # 5. the guardrail (one replica holds its lease) rolls the canary back, audited with its numbers
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            events = client.get("/admin/rollout/events", headers=admin).json()
            if events and events[0]["action"] == "auto-rollback":
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no auto-rollback; events: {events[:3]}")
        event = events[0]
        assert (event["from_adapter"], event["to_percentage"], event["actor"]) == (
            "zantara-demo@v2",
            0,
            "guardrail",
        )
        details = event["details"]
        assert details["p_value"] < 0.02 and details["failed_checks"] >= 2
        print(f"auto-rollback details: {details}")
        after = chat(client, targets["canary"][0], list(CORRECTIONS)[0])
        assert after.headers["x-zantara-variant"] == "base" and "x-zantara-adapter" not in after.headers
        statuses = {e["key"]: e["status"] for e in client.get("/admin/adapters", headers=admin).json()}
        assert statuses["zantara-demo@v2"] == "rejected"
