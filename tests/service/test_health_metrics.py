"""`/healthz`, `/readyz` and `/metrics` (parsed as Prometheus exposition)."""

from __future__ import annotations

import gc
from pathlib import Path

import httpx

from service.app import create_app
from tests.conftest import admin_headers, running
from tests.service.helpers import chat_body, metric_samples, metric_total


async def test_start_up_exempts_what_it_built_from_garbage_collection(  # type: ignore[no-untyped-def]
    settings_factory, tmp_path: Path
) -> None:
    """Full collections walked the whole model's objects: 250-400 ms pauses of the event loop under
    load. Once ready, what start-up built is frozen, so a collection walks only what came after."""
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    async with running(create_app(settings_factory(database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}"))):
        assert gc.get_freeze_count() > 100_000


async def test_health_and_readiness(app_client: httpx.AsyncClient) -> None:
    assert (await app_client.get("/healthz")).json() == {"status": "ok"}
    ready = (await app_client.get("/readyz")).json()
    assert ready["checks"] == {"model": True, "database": True} and ready["adapters"] == ["zantara-demo@v1"]


async def test_metrics_follow_requests_ratings_and_rollout(app_client: httpx.AsyncClient) -> None:
    await app_client.put("/admin/rollout", headers=admin_headers(), json={"percentage": 35})
    tuned = await app_client.post(
        "/v1/chat/completions", json=chat_body(model="zantara-demo@v1", max_tokens=5)
    )
    await app_client.post("/v1/chat/completions", json=chat_body(model="zantara-demo-base", max_tokens=5))
    await app_client.post(
        "/v1/chat/completions", json=chat_body(model="zantara-demo-base", max_tokens=5, stream=True)
    )
    await app_client.post("/v1/feedback", json={"response_id": tuned.json()["id"], "rating": 5})
    response = await app_client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    got = metric_samples(response.text)
    pinned = {"variant": "tuned", "adapter": "zantara-demo@v1", "target": "pinned"}
    assert metric_total(got, "zantara_requests_total", status="ok", **pinned) == 1
    assert metric_total(got, "zantara_requests_total", status="ok", variant="tuned") == 1
    assert metric_total(got, "zantara_requests_total", status="ok", variant="base", adapter="") == 2
    generated = tuned.json()["usage"]["completion_tokens"]
    assert metric_total(got, "zantara_generated_tokens_total", **pinned) == generated
    assert metric_total(got, "zantara_request_duration_seconds_count", variant="base") == 2
    assert metric_total(got, "zantara_time_to_first_token_seconds_count", variant="base") == 2
    assert metric_total(got, "zantara_ratings_total", stars="5", **pinned) == 1
    assert metric_total(got, "zantara_rating_stars_sum", **pinned) == 5
    assert got[("zantara_rollout_percentage", ())] == 35
    assert got[("zantara_model_ready", ())] == 1
    assert got[("zantara_adapters_loaded", ())] == 1
    names = {name for name, _ in got}
    assert all(name.startswith("zantara_") for name in names if not name.startswith(("python_", "process_")))


async def test_refused_requests_are_counted_apart_from_served_ones(app_client: httpx.AsyncClient) -> None:
    refused = [
        await app_client.post(
            "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
        ),
        await app_client.post("/v1/chat/completions", json=chat_body(messages=[])),
        await app_client.post("/v1/chat/completions", json=chat_body(model="no-such-model")),
        await app_client.post("/v1/chat/completions", json=chat_body(max_tokens=10**9)),
    ]
    assert [r.status_code for r in refused] == [400, 422, 404, 422]
    await app_client.get("/v1/models")
    got = metric_samples((await app_client.get("/metrics")).text)
    assert metric_total(got, "zantara_requests_total", status="rejected", variant="none") == 4
    for variant in ("base", "tuned"):
        for status in ("ok", "error"):
            assert metric_total(got, "zantara_requests_total", status=status, variant=variant) == 0
