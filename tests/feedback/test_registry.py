"""The adapter registry: lineage is never erased, discovery never overwrites, versions count up."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from feedback.registry import (
    UnknownVersionError,
    get_version,
    list_versions,
    next_version,
    note_discovered,
    record_version,
    set_status,
)


def test_trainer_lineage_survives_a_replica_discovering_the_version(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        record_version(
            session,
            name="zantara",
            version="v2",
            path="/adapters/zantara/v2",
            base_model="base",
            dataset_version="ds-7",
            parent_version="v1",
            metrics={"eval_loss": 1.5},
            created_by="ml",
            last_correction_id=12,
        )
    with sessions.begin() as session:
        set_status(session, "zantara@v2", "canary")
    with sessions.begin() as session:  # what a replica does on load: its zantara.json says less
        note_discovered(
            session, name="zantara", version="v2", path="/other/v2", base_model="base", metadata={}
        )
    with sessions() as session:
        entry = get_version(session, "zantara@v2")
    assert entry is not None
    assert (entry.dataset_version, entry.parent_version, entry.last_correction_id) == ("ds-7", "v1", 12)
    assert entry.metrics == {"eval_loss": 1.5} and entry.status == "canary" and entry.created_by == "ml"
    assert entry.path == "/adapters/zantara/v2"


def test_discovery_fills_a_new_version_from_its_metadata(sessions: sessionmaker[Session]) -> None:
    metadata = {"dataset": {"version": "ds-1"}, "parent": {"version": "v0"}, "metrics": {"eval_loss": 2.0}}
    with sessions.begin() as session:
        entry = note_discovered(
            session, name="demo", version="v1", path="/a/demo/v1", base_model="b", metadata=metadata
        )
    assert (entry.status, entry.dataset_version, entry.parent_version) == ("candidate", "ds-1", "v0")
    with sessions.begin() as session:  # given as None: kept
        record_version(session, name="demo", version="v1", path="/a/demo/v1", base_model="b", status="live")
    with sessions() as session:
        kept = get_version(session, "demo@v1")
    assert kept is not None and kept.dataset_version == "ds-1" and kept.status == "live"


def test_versions_sort_naturally_and_the_next_one_counts_up(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        for version in ("v2", "v10", "v1"):
            record_version(session, name="z", version=version, path=f"/{version}", base_model="b")
        record_version(session, name="other", version="v99", path="/o", base_model="b")
    with sessions() as session:
        assert [e.version for e in list_versions(session, "z")] == ["v1", "v2", "v10"]
        assert next_version(session, "z") == "v11" and next_version(session, "new") == "v1"
        assert get_version(session, "z") is None and get_version(session, "z@v3") is None


def test_bad_statuses_and_unknown_versions_are_refused(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        record_version(session, name="z", version="v1", path="/v1", base_model="b")
    with pytest.raises(ValueError), sessions.begin() as session:
        set_status(session, "z@v1", "loaded")
    with pytest.raises(UnknownVersionError), sessions.begin() as session:
        set_status(session, "z@v9", "live")
