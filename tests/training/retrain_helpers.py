"""Helpers of the retrain tests (supervised and preference tuning): a retrain on the demo model with
small limits, the registry read back, and the loop's signals (answers, ratings, corrections) planted as
the service stores them."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.orm import Session, sessionmaker

from database.engine import create_db_engine, make_session_factory
from database.models import utcnow
from feedback import registry
from feedback.records import InteractionRecord
from knowledge.paths import SEED_FILE
from service.settings import Settings
from tests.database import interaction_record
from tests.postgres import free_port
from training.evaluation.cli import EvalHooks
from training.retrain.config import RetrainOptions
from zantara.eval_engine import EngineSource

NOW = utcnow()


def hooks() -> EvalHooks:
    """The in-process evaluation the service's CLI hands to `zantara retrain`."""
    return EvalHooks(
        in_process=lambda base, specs: EngineSource(Settings(), base, specs),
        database_url=lambda: Settings().resolved_database_url,
    )


def sessions_for(url: str) -> sessionmaker[Session]:
    """A session factory on `url` (its engine lives as long as the test)."""
    return make_session_factory(create_db_engine(url))


def small_seed_bank(path: Path, per_category: int = 2) -> Path:
    """The project's seed bank cut to `per_category` questions of each category."""
    kept: list[str] = []
    taken: dict[str, int] = {}
    for line in SEED_FILE.read_text(encoding="utf-8").splitlines():
        category = json.loads(line)["category"]
        if taken.get(category, 0) < per_category:
            kept.append(line)
            taken[category] = taken.get(category, 0) + 1
    path.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return path


def retrain_options(
    tmp_path: Path, database_url: str, base_model: Path, adapters_dir: Path, **changes: Any
) -> RetrainOptions:
    """Options with small limits: a 12-question seed bank, 2 questions a set, short answers."""
    options = RetrainOptions(
        database_url=database_url,
        var_dir=tmp_path / "var",
        adapters_dir=adapters_dir,
        base_model=str(base_model.resolve()),
        services=(f"http://127.0.0.1:{free_port()}",),
        admin_token="preference-admin-token-0123456789",
        max_steps=1,
        eval_limit=2,
        eval_max_tokens=24,
        connect_attempts=1,
        progress=False,
        dataset_overrides={
            "seed_path": small_seed_bank(tmp_path / "seed.jsonl"),
            "per_register": 4,
            "synthetic_per_seed": 0,
            "validation_share": 0.08,
        },
    )
    return replace(options, **changes)


def register_live(url: str, adapter: Path, name: str = "zantara-demo", version: str = "v1") -> None:
    """Record `adapter` as the live version, as a service would have."""
    meta = json.loads((adapter / "zantara.json").read_text(encoding="utf-8"))
    with sessions_for(url).begin() as session:
        registry.record_version(
            session,
            name=name,
            version=version,
            path=str(adapter.resolve()),
            base_model=meta["base_model"],
            status="live",
        )


def entry(url: str, key: str) -> registry.AdapterEntry | None:
    """The registry entry of `key`."""
    with sessions_for(url)() as session:
        return registry.get_version(session, key)


def write_gates(path: Path, values: dict[str, dict[str, Any]]) -> Path:
    """A gates file over the defaults."""
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def answer(topic: str) -> str:
    """A complete answer of more than 25 words (the checklist's minimum), saying what it is about."""
    return (
        f"Untuk {topic}, Anda perlu menyiapkan dokumen perusahaan yang lengkap, memeriksa ketentuan yang "
        "berlaku di instansi terkait, lalu mengajukan permohonan secara resmi. Jawaban ini baik dan "
        "sebaiknya dikonsultasikan juga dengan konsultan yang berpengalaman agar prosesnya lancar."
    )


def interaction(key: str, user: str, question: str, text: str, minutes_ago: int) -> InteractionRecord:
    """An interaction answered by `zantara-demo@v1` (`minutes_ago` sets the order)."""
    return replace(
        interaction_record(key),
        user_hash=user,
        messages=[{"role": "user", "content": question}],
        answer=text,
        prompt_tokens=10,
        completion_tokens=40,
        latency_s=0.1,
        ttft_s=None,
        params={},
        target="canary",
        created_at=NOW - timedelta(minutes=minutes_ago),
    )
