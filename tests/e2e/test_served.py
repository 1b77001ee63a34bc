"""The real thing: `zantara serve` in a subprocess on a free port, driven by the official OpenAI SDK,
plain HTTP and the `zantara rollout` command, on PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import AuthenticationError, BadRequestError, NotFoundError, OpenAI

from tests.served import demo_env, running_server

API_KEY = "sk-test-backend-chat"
ADMIN = "e2e-admin-token-0123456789"


@pytest.fixture(scope="module")
def served(
    demo_dirs: tuple[Path, Path], postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    from tests.postgres import fresh_database

    with fresh_database(postgres_url) as database_url:
        env = demo_env(
            tmp_path_factory.mktemp("var"),
            demo_dirs,
            database_url,
            ZANTARA_API_KEYS=API_KEY,
            ZANTARA_ADMIN_TOKEN=ADMIN,
            ZANTARA_ROLLOUT_CACHE_S="0",
        )
        with running_server(env, timeout_s=120) as server:
            yield server.url


def test_openai_sdk_plain_and_streaming(served: str) -> None:
    client = OpenAI(base_url=f"{served}/v1", api_key=API_KEY)
    raw = client.chat.completions.with_raw_response.create(
        model="zantara",
        user="pak-andi",
        temperature=0,
        max_tokens=12,
        messages=[{"role": "user", "content": "Apa itu KITAS investor?"}],
    )
    completion = raw.parse()
    assert raw.headers["x-zantara-variant"] in {"base", "tuned"}
    assert completion.choices[0].message.content and completion.usage is not None
    assert completion.usage.completion_tokens <= 12

    pinned = client.chat.completions.create(
        model="zantara-demo@v1",
        temperature=0,
        max_tokens=12,
        messages=[{"role": "user", "content": "Apa itu KITAS investor?"}],
    )
    stream = client.chat.completions.create(
        model="zantara-demo@v1",
        temperature=0,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Apa itu KITAS investor?"}],
    )
    pieces, usage = [], None
    for chunk in stream:
        pieces += [c.delta.content or "" for c in chunk.choices]
        usage = chunk.usage or usage
    assert "".join(pieces) == pinned.choices[0].message.content
    assert usage is not None and usage.completion_tokens == pinned.usage.completion_tokens  # type: ignore[union-attr]
    # the system prompt and the question were prefilled for `pinned`: the stream reuses them
    assert usage.prompt_tokens_details is not None and (usage.prompt_tokens_details.cached_tokens or 0) > 0

    rated = httpx.post(
        f"{served}/v1/feedback",
        json={"response_id": pinned.id, "rating": 1},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert rated.status_code == 200 and rated.json()["needs_review"] is True


def test_openai_sdk_sees_errors_as_its_own_exceptions(served: str) -> None:
    client = OpenAI(base_url=f"{served}/v1", api_key=API_KEY, max_retries=0)
    with pytest.raises(NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(BadRequestError) as error:
        client.chat.completions.create(
            model="zantara", messages=[{"role": "user", "content": "kata " * 6000}]
        )
    assert error.value.code == "context_length_exceeded"
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=f"{served}/v1", api_key="wrong", max_retries=0).models.list()
    assert [m.id for m in client.models.list()][:2] == ["zantara", "zantara-demo-base"]


def test_rollout_command_against_the_running_service(served: str) -> None:
    def zantara(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "zantara", "rollout", *args, "--url", served, "--token", ADMIN],
            capture_output=True,
            text=True,
            timeout=60,
        )

    set_ = zantara("set", "30", "--reason", "first canary", "--json")
    assert set_.returncode == 0, set_.stdout + set_.stderr
    assert json.loads(set_.stdout)["percentage"] == 30
    assert json.loads(zantara("get", "--json").stdout)["adapter"] == "zantara-demo@v1"
    stale = zantara("rollback", "--expect", "zantara-demo@v0")
    assert stale.returncode == 1 and "409" in stale.stdout
    back = zantara("rollback", "--reason", "test", "--expect", "zantara-demo@v1", "--json")
    assert json.loads(back.stdout)["percentage"] == 0
    rolled_back = zantara("promote", "--reason", "the rolled-back version")
    assert rolled_back.returncode == 1 and "409" in rolled_back.stdout
    history = json.loads(zantara("history", "--json").stdout)
    assert [e["action"] for e in history][:2] == ["rollback", "set"]
    refused = zantara("set", "50", "--adapter", "missing")
    assert refused.returncode == 1 and "not loaded" in refused.stdout
    wrong = subprocess.run(
        [sys.executable, "-m", "zantara", "rollout", "get", "--url", served, "--token", "bad"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong.returncode == 1 and "401" in wrong.stdout


def test_dataset_generator_calls_the_served_model(served: str) -> None:
    from training.dataset.generator import EndpointClient, EndpointConfig, ModelGenerator

    client = EndpointClient(
        EndpointConfig(base_url=f"{served}/v1", model="zantara", api_key=API_KEY, max_tokens=32)
    )
    text = client.complete("Kamu penulis data latih.", "Tulis satu pertanyaan tentang KITAS.")
    assert isinstance(text, str) and text
    warnings: list[str] = []
    generator = ModelGenerator(client, warn=warnings.append)
    found = generator.variations(
        "KITAS investor itu butuh dokumen apa aja sih?",
        ["Dokumen KITAS investor apa saja?"],
        "casual",
        4,
        "IMM-01",
        [],
    )
    client.close()
    assert warnings == [] and generator.available
    assert len(found) == 4 and len({q for q, _ in found}) == 4
