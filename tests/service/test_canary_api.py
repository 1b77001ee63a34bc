"""Hot-load and canary over HTTP: a registered version reaches every replica without a restart, the
router then has three targets (base, live, canary), promotion and rollback take one call each."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from pathlib import Path

import httpx
import pytest

from database.engine import create_db_engine, make_session_factory
from database.migrate import upgrade
from feedback.registry import record_version
from service.app import create_app
from tests.conftest import admin_headers, running
from tests.service.helpers import assert_error, chat_body


def register_copy(database_url: str, demo_adapter_path: Path, root: Path, version: str) -> str:
    """A new version of the demo adapter on disk (outside every replica's adapters dir), registered
    as a candidate the way `zantara retrain` registers one; returns its key."""
    path = root / "zantara-demo" / version
    shutil.copytree(demo_adapter_path, path)
    (path / "zantara.json").unlink(missing_ok=True)
    upgrade(database_url)
    engine = create_db_engine(database_url)
    with make_session_factory(engine).begin() as session:
        record_version(
            session,
            name="zantara-demo",
            version=version,
            path=str(path),
            base_model="zantara-demo-base",
            dataset_version="ds-test",
            parent_version="v1",
            created_by="pytest",
        )
    engine.dispose()
    return f"zantara-demo@{version}"


async def routed_adapters(client: httpx.AsyncClient, users: int) -> dict[str, str | None]:
    """Each user's adapter (None: the base model), from the response headers of one routed request
    each; clients are not told which target (canary or live) answered them."""
    seen: dict[str, str | None] = {}
    for index in range(users):
        response = await client.post(
            "/v1/chat/completions", json=chat_body(max_tokens=1, user=f"user-{index}")
        )
        assert response.status_code == 200, response.text
        assert "x-zantara-target" not in response.headers
        seen[f"user-{index}"] = response.headers.get("x-zantara-adapter")
    return seen


async def test_a_registered_version_is_hot_loaded_on_every_replica_and_becomes_the_canary(
    settings_factory,
    database_url: str,
    demo_adapter_path: Path,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    key = register_copy(database_url, demo_adapter_path, tmp_path / "published", "v2")
    first = create_app(settings_factory(database_url=database_url, adapter_sync_s=0.2))
    second = create_app(
        settings_factory(database_url=database_url, adapter_sync_s=0.2, var_dir=tmp_path / "replica-2")
    )
    async with running(first) as one, running(second) as two:
        await one.put("/admin/rollout", headers=admin_headers(), json={"percentage": 0})
        promoted = await one.put(
            "/admin/rollout", headers=admin_headers(), json={"percentage": 100, "adapter": "zantara-demo@v1"}
        )
        assert promoted.status_code == 200
        assert (await one.post("/admin/promote", headers=admin_headers(), json={"reason": "v1 ok"})).json()[
            "live_adapter"
        ] == "zantara-demo@v1"

        # the hot-load happens while users chat: no request is dropped or fails
        during = [
            asyncio.create_task(
                one.post("/v1/chat/completions", json=chat_body(max_tokens=4, user=f"busy-{i}"))
            )
            for i in range(12)
        ]
        started = await one.put(
            "/admin/rollout",
            headers=admin_headers(),
            json={"percentage": 30, "adapter": key, "reason": "weekly"},
        )
        assert started.status_code == 200, started.text
        assert [r.status_code for r in await asyncio.gather(*during)] == [200] * 12
        body = started.json()
        assert (body["adapter"], body["live_adapter"], body["percentage"]) == (key, "zantara-demo@v1", 30)
        assert key in body["adapters_loaded"]

        for _ in range(100):  # the other replica loads it through its sync loop, no call needed
            if key in [m["id"] for m in (await two.get("/v1/models")).json()["data"]]:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"{key} never reached the second replica")

        on_one, on_two = await routed_adapters(one, 120), await routed_adapters(two, 120)
        assert on_one == on_two, "replicas route every user the same way"
        shares = Counter(on_one.values())
        assert set(shares) == {key, "zantara-demo@v1"} and 20 <= shares[key] <= 52

        registry = {e["key"]: e for e in (await one.get("/admin/adapters", headers=admin_headers())).json()}
        assert registry[key]["status"] == "canary" and registry["zantara-demo@v1"]["status"] == "live"
        assert registry[key]["dataset_version"] == "ds-test" and registry[key]["parent_version"] == "v1"
        shown = await one.get(f"/admin/adapters/{key}", headers=admin_headers())
        assert shown.json()["loaded"] is True and shown.json()["created_by"] == "pytest"
        assert_error(await one.get("/admin/adapters/zantara-demo@v9", headers=admin_headers()), 404)
        refused = await one.delete(f"/admin/adapters/{key}", headers=admin_headers())
        assert assert_error(refused, 409)["code"] == "adapter_in_rollout"

        await one.post("/admin/promote", headers=admin_headers(), json={"reason": "canary won"})
        await asyncio.sleep(0.1)
        assert set((await routed_adapters(two, 20)).values()) == {key}
        back = await two.post("/admin/rollback", headers=admin_headers(), json={"reason": "regression"})
        assert back.json()["live_adapter"] == "zantara-demo@v1"
        registry = {
            e["key"]: e["status"] for e in (await two.get("/admin/adapters", headers=admin_headers())).json()
        }
        assert registry == {"zantara-demo@v1": "live", key: "rejected"}
        actions = [
            e["action"] for e in (await one.get("/admin/rollout/events", headers=admin_headers())).json()
        ]
        assert actions[:4] == ["rollback", "promote", "set", "promote"]


async def test_metrics_and_interactions_say_which_target_answered(app_client: httpx.AsyncClient) -> None:
    await app_client.put("/admin/rollout", headers=admin_headers(), json={"percentage": 100})
    canary = await app_client.post("/v1/chat/completions", json=chat_body(max_tokens=2, user="u1"))
    assert canary.headers["x-zantara-adapter"] == "zantara-demo@v1"
    await app_client.post("/v1/feedback", json={"response_id": canary.json()["id"], "rating": 2})
    pinned = await app_client.post(
        "/v1/chat/completions", json=chat_body(model="zantara-demo-base", max_tokens=2)
    )
    assert pinned.headers["x-zantara-variant"] == "base" and "x-zantara-adapter" not in pinned.headers
    # the target is ours to know (metrics, stored interactions), not the client's: it could steer ratings
    assert "x-zantara-target" not in canary.headers and "x-zantara-target" not in pinned.headers
    exposition = (await app_client.get("/metrics")).text
    labels = 'adapter="zantara-demo@v1",status="ok",target="canary",variant="tuned"'
    assert f"zantara_requests_total{{{labels}}} 1.0" in exposition
    assert 'zantara_requests_total{adapter="",status="ok",target="pinned",variant="base"} 1.0' in exposition
    assert (
        'zantara_ratings_total{adapter="zantara-demo@v1",stars="2",target="canary",variant="tuned"} 1.0'
        in exposition
    )


@pytest.mark.parametrize("body", [{"percentage": 10, "adapter": "zantara-demo@v7"}, {"percentage": 101}])
async def test_unknown_versions_and_bad_shares_are_refused(app_client: httpx.AsyncClient, body: dict) -> None:  # type: ignore[type-arg]
    before = (await app_client.get("/admin/rollout", headers=admin_headers())).json()
    response = await app_client.put("/admin/rollout", headers=admin_headers(), json=body)
    assert response.status_code in (409, 422)
    assert (await app_client.get("/admin/rollout", headers=admin_headers())).json() == before


async def test_promote_without_a_canary_is_a_conflict(app_client: httpx.AsyncClient) -> None:
    await app_client.put("/admin/rollout", headers=admin_headers(), json={"percentage": 100})
    await app_client.post("/admin/promote", headers=admin_headers())
    assert (
        assert_error(await app_client.post("/admin/promote", headers=admin_headers()), 409)["code"]
        == "no_canary"
    )
    assert_error(await app_client.post("/admin/promote"), 401)
