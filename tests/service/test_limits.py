"""Request limits against a real `zantara serve` process: body size (413), messages, characters and
max_tokens (422, stated in the OpenAPI schema), concurrent streams per API key (429, slot given back)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.served import demo_env, running_server
from tests.service.helpers import assert_error, chat_body, parse_sse

KEY_A, KEY_B = "sk-limits-a", "sk-limits-b"
ADMIN = "limits-admin-token-0123456789"
LIMITS = {
    "ZANTARA_MAX_BODY_BYTES": "4096",
    "ZANTARA_MAX_MESSAGES": "3",
    "ZANTARA_MAX_MESSAGE_CHARS": "300",
    "ZANTARA_MAX_TOKENS_LIMIT": "64",
    "ZANTARA_MAX_STREAMS_PER_KEY": "1",
}


def bearer(key: str) -> dict[str, str]:
    """Authorization header for `key`."""
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def served(demo_dirs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    var = tmp_path_factory.mktemp("var")
    env = demo_env(
        var,
        demo_dirs,
        f"sqlite:///{var / 'zantara.db'}",
        ZANTARA_API_KEYS=f"{KEY_A},{KEY_B}",
        ZANTARA_ADMIN_TOKEN=ADMIN,
        **LIMITS,
    )
    with running_server(env, timeout_s=180) as server:
        yield server.url


@pytest.fixture
async def client(served: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served, timeout=60, headers=bearer(KEY_A)) as http:
        yield http


async def test_a_body_over_the_limit_is_refused_before_it_is_parsed(client: httpx.AsyncClient) -> None:
    too_big = b"{" + b" " * 5000  # malformed too: the size is checked first
    for path in ("/v1/chat/completions", "/v1/feedback"):
        error = assert_error(await client.post(path, content=too_big), 413)
        assert error["code"] == "request_too_large" and "4096" in str(error["message"])
    admin = await client.put("/admin/rollout", content=too_big, headers=bearer(ADMIN))
    assert assert_error(admin, 413)["type"] == "invalid_request_error"


async def test_a_chunked_body_is_counted_while_it_streams_in(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"model": "zantara", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}]}'

    response = await client.post("/v1/chat/completions", content=chunks())
    assert "content-length" not in response.request.headers
    assert assert_error(response, 413)["code"] == "request_too_large"
    small = await client.post("/v1/chat/completions", json=chat_body(max_tokens=2))
    assert small.status_code == 200, small.text


@pytest.mark.parametrize(
    ("case", "body", "param"),
    [
        ("four messages", chat_body(messages=[{"role": "user", "content": "hai"}] * 4), "messages"),
        ("a long message", chat_body(content="a" * 301), "messages.0.content"),
        ("a long text part", chat_body(content=[{"type": "text", "text": "a" * 301}]), "messages.0.content"),
        ("max_tokens over the limit", chat_body(max_tokens=65), "max_tokens"),
        (
            "max_completion_tokens over the limit",
            chat_body(max_completion_tokens=65),
            "max_completion_tokens",
        ),
        ("temperature over 2", chat_body(temperature=2.5), "temperature"),
        ("top_p over 1", chat_body(top_p=1.5), "top_p"),
        ("top_p of 0", chat_body(top_p=0), "top_p"),
        ("negative temperature", chat_body(temperature=-0.1), "temperature"),
        ("a NUL character", chat_body(content="a\u0000b"), "messages.0.content"),
    ],
)
async def test_configured_bounds_answer_422_in_openai_shape(
    client: httpx.AsyncClient, case: str, body: dict[str, object], param: str
) -> None:
    error = assert_error(await client.post("/v1/chat/completions", json=body), 422)
    assert error["type"] == "invalid_request_error" and str(error["param"]).startswith(param), error


async def test_requests_at_the_bounds_are_served(client: httpx.AsyncClient) -> None:
    body = chat_body(
        messages=[{"role": "user", "content": "a" * 300}] * 3, max_tokens=64, temperature=2, top_p=1
    )
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text


async def test_the_schema_states_the_configured_bounds(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    schemas = schema["components"]["schemas"]
    request = schemas["ChatCompletionRequest"]["properties"]
    assert request["messages"]["maxItems"] == 3 and request["messages"]["minItems"] == 1
    for name in ("max_tokens", "max_completion_tokens"):
        assert {"type": "integer", "minimum": 1, "maximum": 64}.items() <= request[name]["anyOf"][0].items()
    assert (request["temperature"]["minimum"], request["temperature"]["maximum"]) == (0, 2)
    assert (request["top_p"]["exclusiveMinimum"], request["top_p"]["maximum"]) == (0, 1)
    assert request["n"]["minimum"] == request["n"]["maximum"] == 1
    content = schemas["ChatMessage"]["properties"]["content"]["oneOf"][0]
    assert content["maxLength"] == 300 and schemas["TextPart"]["properties"]["text"]["maxLength"] == 300
    chat = schema["paths"]["/v1/chat/completions"]["post"]["responses"]
    envelope = {"$ref": "#/components/schemas/ErrorResponse"}
    for status in ("413", "422", "429", "4XX"):
        assert chat[status]["content"]["application/json"]["schema"] == envelope
    assert "HTTPValidationError" not in schemas


async def _first_data(lines: AsyncIterator[str]) -> str:
    """Read a stream until its first data line (the stream holds its slot from here on)."""
    async for line in lines:
        if line.startswith("data:"):
            return line
    raise AssertionError("the stream ended without data")


async def test_streams_per_key_are_limited_and_the_slot_is_given_back(served: str) -> None:
    streamed = chat_body(max_tokens=64, stream=True, temperature=1, seed=3)
    async with httpx.AsyncClient(base_url=served, timeout=60) as http:
        async with http.stream("POST", "/v1/chat/completions", json=streamed, headers=bearer(KEY_A)) as first:
            assert first.status_code == 200
            lines = first.aiter_lines()
            await _first_data(lines)
            refused = await http.post("/v1/chat/completions", json=streamed, headers=bearer(KEY_A))
            error = assert_error(refused, 429)
            assert error["code"] == "too_many_streams" and refused.headers["retry-after"] == "1"
            not_streamed = await http.post(
                "/v1/chat/completions", json={**streamed, "stream": False}, headers=bearer(KEY_A)
            )
            other_key = await http.post("/v1/chat/completions", json=streamed, headers=bearer(KEY_B))
            assert not_streamed.status_code == 200 and other_key.status_code == 200
            assert parse_sse(other_key)[-1] == "[DONE]"
            rest = [line async for line in lines if line.startswith("data:")]
            assert rest[-1] == "data: [DONE]"
        again = await http.post("/v1/chat/completions", json=streamed, headers=bearer(KEY_A))
        assert again.status_code == 200 and parse_sse(again)[-1] == "[DONE]"


async def test_a_client_that_disconnects_gives_its_slot_back(served: str) -> None:
    streamed = chat_body(max_tokens=64, stream=True, temperature=1, seed=5)
    async with httpx.AsyncClient(base_url=served, timeout=60) as http:
        async with http.stream("POST", "/v1/chat/completions", json=streamed, headers=bearer(KEY_B)) as first:
            await _first_data(first.aiter_lines())
        # the connection is closed mid-stream: the server notices and frees the slot
        deadline = time.monotonic() + 30
        while True:
            response = await http.post("/v1/chat/completions", json=streamed, headers=bearer(KEY_B))
            if response.status_code == 200 or time.monotonic() > deadline:
                break
            assert_error(response, 429)
            await asyncio.sleep(0.1)
        assert response.status_code == 200 and parse_sse(response)[-1] == "[DONE]"
