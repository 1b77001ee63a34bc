"""Ops over HTTP: token required, rollout share and rollback audited, adapters at run time."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import admin_headers
from tests.service.helpers import assert_error, chat_body


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/rollout"),
        ("PUT", "/admin/rollout"),
        ("POST", "/admin/rollback"),
        ("GET", "/admin/adapters"),
    ],
)
async def test_admin_needs_the_token(app_client: httpx.AsyncClient, method: str, path: str) -> None:
    assert_error(await app_client.request(method, path), 401)
    assert_error(await app_client.request(method, path, headers={"Authorization": "Bearer wrong"}), 401)


async def test_rollout_set_and_rollback_are_audited(app_client: httpx.AsyncClient) -> None:
    current = (await app_client.get("/admin/rollout", headers=admin_headers())).json()
    assert current["percentage"] == 20 and current["adapter"] == "zantara-demo@v1"

    changed = await app_client.put(
        "/admin/rollout",
        headers=admin_headers(),
        json={"percentage": 100, "adapter": "zantara-demo", "reason": "canary ok"},
    )
    assert changed.status_code == 200 and changed.json()["percentage"] == 100
    assert changed.json()["adapter"] == "zantara-demo@v1" and changed.json()["updated_by"] == "pytest"
    routed = await app_client.post("/v1/chat/completions", json=chat_body(max_tokens=2, user="anyone"))
    assert routed.headers["x-zantara-variant"] == "tuned"

    back = await app_client.post("/admin/rollback", headers=admin_headers(), json={"reason": "complaints"})
    assert back.json()["percentage"] == 0
    routed = await app_client.post("/v1/chat/completions", json=chat_body(max_tokens=2, user="anyone"))
    assert routed.headers["x-zantara-variant"] == "base"

    events = (await app_client.get("/admin/rollout/events", headers=admin_headers())).json()
    assert [(e["action"], e["from_percentage"], e["to_percentage"], e["actor"]) for e in events] == [
        ("rollback", 100, 0, "pytest"),
        ("set", 20, 100, "pytest"),
        ("initial", None, 20, "system"),
    ]
    assert events[0]["reason"] == "complaints" and events[1]["to_adapter"] == "zantara-demo@v1"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"percentage": 101}, 422),
        ({"percentage": -1}, 422),
        ({"percentage": "half"}, 422),
        ({}, 422),
        ({"percentage": 50, "adapter": "not-loaded"}, 409),
    ],
)
async def test_bad_rollout_changes_are_refused_and_change_nothing(
    app_client: httpx.AsyncClient, body: dict[str, object], status: int
) -> None:
    assert_error(await app_client.put("/admin/rollout", headers=admin_headers(), json=body), status)
    assert (await app_client.get("/admin/rollout", headers=admin_headers())).json()["percentage"] == 20
    events = (await app_client.get("/admin/rollout/events", headers=admin_headers())).json()
    assert [e["action"] for e in events] == ["initial"]


async def test_adapters_load_and_unload_without_restart(
    app_client: httpx.AsyncClient, demo_adapter_path: Path
) -> None:
    loaded = await app_client.post(
        "/admin/adapters",
        headers=admin_headers(),
        json={"name": "zantara-demo", "version": "v2", "path": str(demo_adapter_path)},
    )
    assert loaded.status_code == 201, loaded.text
    pinned = await app_client.post("/v1/chat/completions", json=chat_body(model="zantara-demo@v2"))
    assert pinned.headers["x-zantara-adapter"] == "zantara-demo@v2"
    newest = await app_client.post("/v1/chat/completions", json=chat_body(model="zantara-demo"))
    assert newest.headers["x-zantara-adapter"] == "zantara-demo@v2"
    assert "zantara-demo@v2" in [m["id"] for m in (await app_client.get("/v1/models")).json()["data"]]

    # the rollout serves v1: it cannot be unloaded until ops move away from it
    assert_error(await app_client.delete("/admin/adapters/zantara-demo@v1", headers=admin_headers()), 409)
    await app_client.put(
        "/admin/rollout", headers=admin_headers(), json={"percentage": 20, "adapter": "zantara-demo@v2"}
    )
    removed = await app_client.delete("/admin/adapters/zantara-demo@v1", headers=admin_headers())
    assert removed.status_code == 204
    assert_error(await app_client.post("/v1/chat/completions", json=chat_body(model="zantara-demo@v1")), 404)
    assert_error(await app_client.delete("/admin/adapters/zantara-demo@v1", headers=admin_headers()), 404)
    assert_error(
        await app_client.post(
            "/admin/adapters",
            headers=admin_headers(),
            json={"name": "x", "version": "v1", "path": "/nonexistent"},
        ),
        404,
    )
    assert_error(
        await app_client.post(
            "/admin/adapters",
            headers=admin_headers(),
            json={"name": "bad name!", "version": "v1", "path": "/tmp"},
        ),
        422,
    )


async def test_promote_after_a_rollback_is_a_conflict_and_nothing_goes_live(
    app_client: httpx.AsyncClient,
) -> None:
    """Found live: 50% -> rollback -> promote answered 200 and the rolled-back version went live."""
    await app_client.put("/admin/rollout", headers=admin_headers(), json={"percentage": 50})
    await app_client.post("/admin/rollback", headers=admin_headers(), json={"reason": "bad answers"})
    refused = await app_client.post("/admin/promote", headers=admin_headers(), json={"reason": "oops"})
    assert assert_error(refused, 409)["code"] == "no_canary"
    current = (await app_client.get("/admin/rollout", headers=admin_headers())).json()
    assert (current["live_adapter"], current["percentage"]) == (None, 0)
    routed = await app_client.post("/v1/chat/completions", json=chat_body(max_tokens=2, user="anyone"))
    assert routed.headers["x-zantara-variant"] == "base"
    events = (await app_client.get("/admin/rollout/events", headers=admin_headers())).json()
    assert [e["action"] for e in events] == ["rollback", "set", "initial"]


@pytest.mark.parametrize("path", ["/admin/promote", "/admin/rollback"])
async def test_a_stale_expected_version_is_a_conflict(app_client: httpx.AsyncClient, path: str) -> None:
    await app_client.put("/admin/rollout", headers=admin_headers(), json={"percentage": 50})
    body = {"reason": "as I saw it", "expected_adapter": "zantara-demo@v0"}
    refused = await app_client.post(path, headers=admin_headers(), json=body)
    assert assert_error(refused, 409)["code"] == "conflict"
    stale_set = await app_client.put(
        "/admin/rollout",
        headers=admin_headers(),
        json={"percentage": 80, "expected_adapter": "zantara-demo@v0"},
    )
    assert assert_error(stale_set, 409)["code"] == "conflict"
    current = (await app_client.get("/admin/rollout", headers=admin_headers())).json()
    assert (current["adapter"], current["percentage"], current["live_adapter"]) == (
        "zantara-demo@v1",
        50,
        None,
    )
    done = await app_client.post(path, headers=admin_headers(), json={"expected_adapter": "zantara-demo@v1"})
    assert done.status_code == 200, done.text


async def test_a_rollout_change_reads_the_rollout_not_the_cache(settings_factory, database_url: str) -> None:  # type: ignore[no-untyped-def]
    """Another replica promotes the canary; this replica still caches it as the canary at 20%: a PUT
    of a new share must not bring the promoted version back as a canary."""
    from database.engine import create_db_engine, make_session_factory
    from router.rollout import RolloutStore
    from service.app import create_app
    from tests.conftest import running

    async with running(create_app(settings_factory(database_url=database_url, rollout_cache_s=60))) as client:
        cached = (await client.get("/admin/rollout", headers=admin_headers())).json()
        assert (cached["adapter"], cached["percentage"]) == ("zantara-demo@v1", 20)
        engine = create_db_engine(database_url)
        RolloutStore(make_session_factory(engine), default_percentage=20, cache_s=0).promote(
            actor="other-replica"
        )
        engine.dispose()
        refused = await client.put("/admin/rollout", headers=admin_headers(), json={"percentage": 50})
        assert assert_error(refused, 409)["code"] == "adapter_not_loaded"
        current = (await client.get("/admin/rollout", headers=admin_headers())).json()
        assert (current["adapter"], current["percentage"], current["live_adapter"]) == (
            None,
            0,
            "zantara-demo@v1",
        )
