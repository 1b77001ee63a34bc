"""Who gets in, what is stored about users, and what the logs show: tokens, user hashes, secrets."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from database.engine import create_db_engine, make_session_factory
from database.migrate import upgrade
from database.models import Correction, Interaction
from service.app import create_app
from service.settings import Settings
from tests.conftest import ADMIN_TOKEN, running
from tests.database import get_interaction
from tests.service.helpers import assert_error, chat_body
from zantara.cli import app as cli_app

API_KEY = "kunci-rahasia-é-0123456789"
"""A configured key that is not ASCII: clients send it as UTF-8 bytes."""


@pytest.fixture
async def guarded_client(settings_factory, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    """A ready service with API keys on /v1 (SQLite: authentication does not depend on the database)."""
    settings = settings_factory(database_url=f"sqlite:///{tmp_path / 'zantara.db'}", api_keys=[API_KEY])
    async with running(create_app(settings)) as client:
        yield client


WRONG_AUTHORIZATIONS: list[bytes] = [
    "Bearer é".encode(),
    b"Bearer \xff\xfe",
    "Bearer kunci-rahasia-é-012345678".encode(),
    b"",
    b"Bearer",
    b"Bearer ",
    b"Bearer " + b"x" * 8000,
    b"Basic dXNlcjpwYXNz",
    b"Token " + API_KEY.encode(),
    b"Bearer " + ADMIN_TOKEN.encode(),
]
ROUTES = [
    ("POST", "/v1/chat/completions", chat_body(max_tokens=2)),
    ("POST", "/v1/feedback", {"response_id": "chatcmpl-unknown", "rating": 5}),
    ("PUT", "/admin/rollout", {"percentage": 10}),
]


async def test_a_wrong_token_of_any_shape_is_a_401(guarded_client: httpx.AsyncClient) -> None:
    for method, path, body in ROUTES:
        for authorization in WRONG_AUTHORIZATIONS:
            if path.startswith("/admin") and authorization == b"Bearer " + ADMIN_TOKEN.encode():
                continue
            response = await guarded_client.request(
                method, path, json=body, headers=[(b"Authorization", authorization)]
            )
            error = assert_error(response, 401)
            assert (
                error["type"] == "authentication_error" and response.headers["www-authenticate"] == "Bearer"
            )


async def test_the_right_tokens_still_get_in(guarded_client: httpx.AsyncClient) -> None:
    chat = await guarded_client.post(
        "/v1/chat/completions",
        json=chat_body(max_tokens=2),
        headers=[(b"Authorization", b"Bearer " + API_KEY.encode())],
    )
    assert chat.status_code == 200, chat.text
    rollout = await guarded_client.get("/admin/rollout", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert rollout.status_code == 200, rollout.text


async def _stored(database_url: str, interaction_id: str) -> Interaction:
    """The stored interaction (the interaction log may write it a moment after the answer)."""
    engine = create_db_engine(database_url)
    try:
        for _ in range(200):
            found = get_interaction(make_session_factory(engine), interaction_id)
            if found is not None:
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(f"interaction {interaction_id} was never stored")
    finally:
        engine.dispose()


async def test_user_keys_are_stored_as_an_hmac_and_no_secret_reaches_logs_or_metrics(
    settings_factory, postgres_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    url = make_url(postgres_database_url)
    password = url.password or "s3cret-PW-in-the-url"  # a trusting test server ignores it
    database_url = url.set(password=password).render_as_string(hide_password=False)
    hash_key = "user-hash-key-0123456789abcdef"
    settings = settings_factory(database_url=database_url, user_hash_key=hash_key, api_keys=[API_KEY])
    user, prompt = "siti.rahayu@example.co.id", "Rahasia-prompt: berapa modal PT PMA untuk kafe saya?"
    auth = [(b"Authorization", b"Bearer " + API_KEY.encode())]
    async with running(create_app(settings)) as client:
        answer = await client.post("/v1/chat/completions", json=chat_body(prompt, user=user), headers=auth)
        assert answer.status_code == 200, answer.text
        stored = await _stored(database_url, answer.json()["id"])
        rated = await client.post(
            "/v1/feedback", json={"response_id": stored.id, "rating": 1, "comment": "salah"}, headers=auth
        )
        assert rated.status_code == 200, rated.text
        metrics = (await client.get("/metrics")).text
        await client.get("/admin/rollout", headers=[(b"Authorization", b"Bearer wrong-token")])

    assert stored.user_hash == hmac.new(hash_key.encode(), user.encode(), hashlib.sha256).hexdigest()
    assert stored.user_hash != hashlib.sha256(f"user:zantara:{user}".encode()).hexdigest()
    secrets = [password, hash_key, ADMIN_TOKEN, API_KEY, user, prompt, "wrong-token"]
    assert [s for s in secrets if s in caplog.text] == []
    assert [s for s in secrets if s in metrics] == []


async def test_development_generates_the_user_hash_key_once(settings_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(database_url=f"sqlite:///{tmp_path / 'zantara.db'}")
    assert settings.user_hash_key == ""
    settings.ensure_secrets()
    key_file = settings.var_dir / "user-hash-key"
    assert key_file.read_text().strip() == settings.user_hash_key and len(settings.user_hash_key) >= 16
    assert key_file.stat().st_mode & 0o077 == 0
    again = settings_factory(database_url=f"sqlite:///{tmp_path / 'zantara.db'}")
    assert again.ensure_user_hash_key() == settings.user_hash_key  # the same users keep their hash


def test_production_refuses_a_missing_user_hash_key_without_echoing_secrets() -> None:
    admin = "admin-token-0123456789"
    with pytest.raises(ValidationError) as refused:
        Settings(
            environment="production",
            database_url="postgresql+psycopg://z:pw-LEAK@db/z",
            admin_token=admin,
        )
    message = str(refused.value)
    assert "ZANTARA_USER_HASH_KEY" in message
    assert "pw-LEAK" not in message and "0123456789" not in message
    settings = Settings(
        environment="production", admin_token=admin, user_hash_key="k" * 16, api_keys=["key-0123456789"]
    )
    assert "0123456789" not in repr(settings) and "kkkk" not in repr(settings)


def test_production_refuses_an_open_v1_unless_it_says_so() -> None:
    secrets = {"environment": "production", "admin_token": "a" * 16, "user_hash_key": "k" * 16}
    with pytest.raises(ValidationError, match="ZANTARA_API_KEYS must be set in production"):
        Settings(**secrets)  # type: ignore[arg-type]
    assert Settings(**secrets, open_access=True).api_keys == []  # type: ignore[arg-type]
    assert Settings(**secrets, api_keys="key-1").api_keys == ["key-1"]  # type: ignore[arg-type]


def test_serve_prints_the_database_url_without_its_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, demo_dirs: tuple[Path, Path]
) -> None:
    """`serve` names the database without its password (the demo model is the cached one, so nothing
    is built here)."""
    from service import shutdown

    served: dict[str, object] = {}
    monkeypatch.setattr(shutdown, "serve", lambda app, **options: served.update(options))
    monkeypatch.setenv(
        "ZANTARA_DATABASE_URL", "postgresql+psycopg://zantara:s3cret-PW@db.internal:5432/zantara"
    )
    monkeypatch.setenv("ZANTARA_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("ZANTARA_MODELS_DIR", str(demo_dirs[0]))
    monkeypatch.setenv("ZANTARA_ADAPTERS_DIR", str(demo_dirs[1]))
    result = CliRunner().invoke(cli_app, ["serve", "--port", "8123"])
    assert result.exit_code == 0, result.output
    printed = result.output.replace("\n", "")
    assert (
        "s3cret-PW" not in printed and "postgresql+psycopg://zantara:***@db.internal:5432/zantara" in printed
    )
    assert served["port"] == 8123


def test_database_errors_do_not_carry_the_prompt(database_url: str) -> None:
    upgrade(database_url)
    engine = create_db_engine(database_url)
    prompt = "Rahasia-prompt: NIK saya 3171012345678901"
    row = {"query": prompt, "model_answer_wrong": "x", "correct_answer": "y", "reviewer": "qa"}
    try:
        with engine.begin() as connection:
            connection.execute(insert(Correction).values(id=1, **row))
            with pytest.raises(IntegrityError) as duplicate:
                connection.execute(insert(Correction).values(id=1, **row))
    finally:
        engine.dispose()
    assert prompt not in str(duplicate.value) and "3171012345678901" not in str(duplicate.value)
