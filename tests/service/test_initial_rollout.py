"""Without a stored rollout, every replica picks the same adapter and the first start records it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

from service.adapters import discover_adapters, highest_version, version_key
from service.app import create_app
from service.engines.base import AdapterInfo
from tests.conftest import admin_headers, running


def _adapter_copies(demo_adapter_path: Path, root: Path, versions: list[str]) -> Path:
    """Copies of the demo adapter as `zantara-demo/VERSION`, the higher versions written first (older)."""
    for age, version in enumerate(sorted(versions, key=version_key, reverse=True)):
        folder = root / "zantara-demo" / version
        shutil.copytree(demo_adapter_path, folder)
        meta = json.loads((folder / "zantara.json").read_text())
        (folder / "zantara.json").write_text(json.dumps({**meta, "version": version}))
        stamp = 1_700_000_000 + age * 3600  # the highest version has the oldest files
        for path in folder.rglob("*"):
            os.utime(path, (stamp, stamp))
    return root


def test_versions_sort_naturally_and_ties_go_by_name() -> None:
    versions = ["v2", "v10", "v9", "1.0rc1", "1.0", "2026-01-05", "2026-01-10"]
    assert sorted(versions, key=version_key) == [
        "2026-01-05",
        "2026-01-10",
        "1.0rc1",
        "1.0",
        "v2",
        "v9",
        "v10",
    ]
    adapters = [AdapterInfo(name, "v3", f"/a/{name}") for name in ("beta", "alpha")]
    assert highest_version(adapters) == adapters[0] and highest_version([]) is None


def test_discovery_order_does_not_depend_on_file_times(demo_adapter_path: Path, tmp_path: Path) -> None:
    root = _adapter_copies(demo_adapter_path, tmp_path / "adapters", ["v9", "v10", "v2"])
    assert [a.version for a in discover_adapters(root)] == ["v2", "v9", "v10"]


async def test_two_replicas_on_one_database_record_one_initial_rollout_to_the_highest_version(
    settings_factory, demo_adapter_path: Path, postgres_database_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    adapters = _adapter_copies(demo_adapter_path, tmp_path / "adapters", ["v9", "v10"])
    replicas = [
        create_app(
            settings_factory(
                database_url=postgres_database_url,
                adapters_dir=adapters,
                build_demo_adapter=False,
                var_dir=tmp_path / f"var-{index}",
            )
        )
        for index in range(2)
    ]
    async with running(replicas[0]) as first, running(replicas[1]) as second:
        views = await asyncio.gather(
            first.get("/admin/rollout", headers=admin_headers()),
            second.get("/admin/rollout", headers=admin_headers()),
        )
        events = (await first.get("/admin/rollout/events", headers=admin_headers())).json()
    for view in views:
        assert view.status_code == 200, view.text
        assert (view.json()["adapter"], view.json()["percentage"]) == ("zantara-demo@v10", 20)
    assert [
        (e["action"], e["actor"], e["from_percentage"], e["to_percentage"], e["to_adapter"]) for e in events
    ] == [("initial", "system", None, 20, "zantara-demo@v10")]
