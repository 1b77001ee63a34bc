"""Small helpers shared by the HTTP tests."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from database.engine import create_db_engine
from database.models import Interaction, Rating
from service.state import ServiceState

DOMAIN_QUESTION = "Berapa modal minimum untuk mendirikan PT PMA?"
QUESTION = [{"role": "user", "content": DOMAIN_QUESTION}]
"""A domain question as engine messages."""
GENERAL = [{"role": "user", "content": "Bagaimana cara membuat nasi goreng yang enak?"}]
"""An everyday question as engine messages."""
PLANTED_HTML = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'">'
"""Markup that changes the page title if a review page ever renders it unescaped."""


def chat_body(content: str | list[dict[str, str]] = DOMAIN_QUESTION, **extra: object) -> dict[str, object]:
    """A chat completion request body with greedy decoding and a short answer."""
    body: dict[str, object] = {
        "model": "zantara",
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": 16,
    }
    body.update(extra)
    return body


def parse_sse(response: httpx.Response) -> list[str]:
    """The `data:` payloads of a server-sent event stream, in order."""
    return [line[len("data:") :].strip() for line in response.text.splitlines() if line.startswith("data:")]


def stream_text(payloads: list[str]) -> str:
    """The answer reassembled from stream chunks."""
    text = []
    for payload in payloads:
        if payload == "[DONE]":
            break
        for choice in json.loads(payload)["choices"]:
            text.append(choice["delta"].get("content") or "")
    return "".join(text)


async def settled(client: httpx.AsyncClient) -> None:
    """Wait until the service has written every interaction it buffered (they are written in the
    background, a moment after the answer)."""
    for _ in range(600):
        ready = (await client.get("/readyz")).json()
        if not ready["buffered_interactions"] and not any(ready["spool"].values()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"interactions were never written: {ready}")


def row_counts(database_url: str) -> tuple[int, int]:
    """(interactions, ratings) stored."""
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as connection:
            return (
                connection.scalar(select(func.count()).select_from(Interaction)) or 0,
                connection.scalar(select(func.count()).select_from(Rating)) or 0,
            )
    finally:
        engine.dispose()


def assert_error(response: httpx.Response, status: int) -> dict[str, object]:
    """The response is `status` with OpenAI's error envelope; returns the error object."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"} and error["message"]
    return error  # type: ignore[no-any-return]


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition, keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric_total(
    got: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """The sum of `name`'s samples whose labels include `labels` (as PromQL's sum by would)."""
    wanted = set(labels.items())
    return sum(value for (sample, pairs), value in got.items() if sample == name and wanted <= set(pairs))


def csrf_of(html: str) -> str:
    """The CSRF token a review page's form carries."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, token: str) -> httpx.Response:
    """Sign a reviewer in through the login form with their token (the session cookie lands in
    `client`); the form's answer."""
    page = await client.get("/review/login", params={"next": "/review/ab"})
    return await client.post(
        "/review/login", data={"token": token, "csrf_token": csrf_of(page.text), "next": "/review/ab"}
    )


def bearer_headers(token: str) -> dict[str, str]:
    """The Authorization header for a bearer `token` (a reviewer's or an API key)."""
    return {"Authorization": f"Bearer {token}"}


def service_state(app: FastAPI) -> ServiceState:
    """The live state (engine, writer, metrics) of an app whose lifespan runs."""
    return app.state.zantara  # type: ignore[no-any-return]


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    """Wait until `condition()` holds, polling every 20 ms; fail naming `what` after `timeout_s`."""
    for _ in range(int(timeout_s / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
