"""Request limits: body size (413), messages, characters and max_tokens (422, stated in the OpenAPI
schema) against a real `zantara serve` process; chat requests in flight per caller (429: its valid API
key, else its address) and over all callers (503), and an abandoned request's generation stopped,
against the app behind uvicorn in this process."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from service.app import create_app
from service.engines.base import Delta, Engine, PreparedPrompt, SamplingParams
from service.settings import Settings
from service.shutdown import server_config
from service.state import ServiceState
from tests.conftest import wait_ready
from tests.postgres import free_port
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
    for status in ("413", "422", "429", "503", "4XX"):
        assert chat[status]["content"]["application/json"]["schema"] == envelope
    assert "HTTPValidationError" not in schemas


async def _first_data(lines: AsyncIterator[str]) -> str:
    """Read a stream until its first data line (the stream holds its slot from here on)."""
    async for line in lines:
        if line.startswith("data:"):
            return line
    raise AssertionError("the stream ended without data")


async def test_requests_per_key_are_limited_and_the_slot_is_given_back(served: str) -> None:
    """The served process reads the limit from the old variable name, `ZANTARA_MAX_STREAMS_PER_KEY`."""
    streamed = chat_body(max_tokens=64, stream=True, temperature=1, seed=3)
    async with httpx.AsyncClient(base_url=served, timeout=60) as http:
        async with http.stream("POST", "/v1/chat/completions", json=streamed, headers=bearer(KEY_A)) as first:
            assert first.status_code == 200
            lines = first.aiter_lines()
            await _first_data(lines)
            refused = await http.post("/v1/chat/completions", json=streamed, headers=bearer(KEY_A))
            error = assert_error(refused, 429)
            assert error["code"] == "too_many_requests" and refused.headers["retry-after"] == "1"
            not_streamed = await http.post(
                "/v1/chat/completions", json={**streamed, "stream": False}, headers=bearer(KEY_A)
            )
            assert assert_error(not_streamed, 429)["code"] == "too_many_requests"
            other_key = await http.post("/v1/chat/completions", json=streamed, headers=bearer(KEY_B))
            assert other_key.status_code == 200
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


# Every chat request bounded: per caller (its valid API key, else its address) and over all callers.
# These run the app in this process behind a real uvicorn (real sockets, so a client can go away), with
# the engine's state at hand.

KEY_C = "sk-limits-c"
HELD_SEED = 4242
HOLD = chat_body(model="zantara-demo-base", max_tokens=16, seed=HELD_SEED, stream=True)
"""A streamed answer that holds its slot: see `held_answers`."""
LONG = chat_body(model="zantara-demo-base", max_tokens=1500, temperature=2, seed=8)
LONG_TOKENS = 845
"""With this seed the demo model samples 845 tokens before its end token."""
SHORT = chat_body(model="zantara-demo-base", max_tokens=4)
SHORT_STREAM = {**SHORT, "stream": True}


@dataclass
class InProcess:
    """An app served by uvicorn in this process: its URL and its live state."""

    url: str
    app: FastAPI

    @property
    def state(self) -> ServiceState:
        """The service state (engine, metrics) of the running app."""
        return self.app.state.zantara  # type: ignore[no-any-return]

    def refused(self, status: str) -> float:
        """Chat requests counted as refused before routing with `status`."""
        return self.state.metrics.requests.labels("none", "", "none", status)._value.get()


@asynccontextmanager
async def in_process(settings: Settings) -> AsyncIterator[InProcess]:
    """`settings`' app behind uvicorn on a free port, configured as `zantara serve` configures it."""
    app = create_app(settings)
    config = server_config(app, host="127.0.0.1", port=free_port(), log_level="warning", drain_s=5)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    url = f"http://127.0.0.1:{config.port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            await wait_ready(client)
        held_answers(app.state.zantara.engine)
        yield InProcess(url, app)
    finally:
        server.should_exit = True
        await task


def held_answers(engine: Engine) -> None:
    """Requests sampled with `HELD_SEED` stop after their first piece until their client goes away, so
    a test holds a slot for as long as it needs, whatever the model's speed."""
    stream = engine.stream

    def held(
        prompt: PreparedPrompt, sampling: SamplingParams, adapter: str | None, *, whole: bool = False
    ) -> AsyncGenerator[Delta, None]:
        async def pieces() -> AsyncGenerator[Delta, None]:
            async for delta in stream(prompt, sampling, adapter, whole=whole):
                yield delta
                if sampling.seed == HELD_SEED:
                    await asyncio.Event().wait()

        return pieces()

    engine.stream = held  # type: ignore[method-assign]


def _settings(demo_dirs: tuple[Path, Path], var: Path, **values: object) -> Settings:
    return Settings(
        var_dir=var,
        models_dir=demo_dirs[0],
        adapters_dir=demo_dirs[1],
        admin_token=ADMIN,
        database_url=f"sqlite:///{var / 'zantara.db'}",
        **values,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
async def keyed(
    demo_dirs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[InProcess]:
    """Three API keys, one request at a time per key, two in flight over all callers."""
    settings = _settings(
        demo_dirs,
        tmp_path_factory.mktemp("keyed"),
        api_keys=[KEY_A, KEY_B, KEY_C],
        max_concurrent_requests_per_key=1,
        max_concurrent_requests=2,
    )
    async with in_process(settings) as served_app:
        yield served_app


@pytest.fixture(scope="module")
async def open_v1(
    demo_dirs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[InProcess]:
    """`/v1` open (no API keys, the chart's default), one request at a time per client address."""
    settings = _settings(demo_dirs, tmp_path_factory.mktemp("open"), max_concurrent_requests_per_key=1)
    async with in_process(settings) as served_app:
        yield served_app


@asynccontextmanager
async def holding(url: str, headers: dict[str, str]) -> AsyncIterator[None]:
    """A streamed answer admitted and generating (its first token read) until the block ends; then the
    client goes away."""
    async with (
        httpx.AsyncClient(base_url=url, timeout=60) as http,
        http.stream("POST", "/v1/chat/completions", json=HOLD, headers=headers) as response,
    ):
        assert response.status_code == 200, await response.aread()
        lines = response.aiter_lines()  # held: a dropped line iterator closes the response
        await _first_data(lines)
        yield


async def _served_again(url: str, headers: dict[str, str]) -> None:
    """The caller's slot comes back once its client went away: a short request is served."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for _ in range(300):
            response = await http.post("/v1/chat/completions", json=SHORT, headers=headers)
            if response.status_code == 200:
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"the slot never came back: {response.text}")


async def test_non_streamed_requests_beyond_the_per_key_limit_get_429_while_another_key_is_served(
    keyed: InProcess,
) -> None:
    before = keyed.refused("rejected")
    async with holding(keyed.url, bearer(KEY_A)), httpx.AsyncClient(base_url=keyed.url, timeout=60) as http:
        post = partial(http.post, "/v1/chat/completions", json=SHORT)
        refused = await asyncio.gather(*(post(headers=bearer(KEY_A)) for _ in range(6)))
        other_key = await post(headers=bearer(KEY_B))
        for response in refused:
            error = assert_error(response, 429)
            assert error["code"] == "too_many_requests" and response.headers["retry-after"] == "1"
        assert other_key.status_code == 200, other_key.text
    assert keyed.refused("rejected") - before == 6
    await _served_again(keyed.url, bearer(KEY_A))


async def test_beyond_the_global_bound_requests_get_503_overloaded(keyed: InProcess) -> None:
    before = keyed.refused("overloaded")
    async with (
        holding(keyed.url, bearer(KEY_A)),
        holding(keyed.url, bearer(KEY_B)),
        httpx.AsyncClient(base_url=keyed.url, timeout=60) as http,
    ):
        third = await http.post("/v1/chat/completions", json=SHORT, headers=bearer(KEY_C))
        streamed = await http.post("/v1/chat/completions", json=SHORT_STREAM, headers=bearer(KEY_C))
    for response in (third, streamed):
        error = assert_error(response, 503)
        assert error["code"] == "overloaded" and response.headers["retry-after"] == "1"
    assert keyed.refused("overloaded") - before == 2
    await _served_again(keyed.url, bearer(KEY_C))


async def test_bearer_strings_that_are_no_key_share_their_address_limit(open_v1: InProcess) -> None:
    async with (
        holding(open_v1.url, bearer("junk0")),
        httpx.AsyncClient(base_url=open_v1.url, timeout=60) as http,
    ):
        others = [
            await http.post("/v1/chat/completions", json=SHORT_STREAM, headers=bearer(f"junk{n}"))
            for n in (1, 2)
        ]
        anonymous = await http.post("/v1/chat/completions", json=SHORT)
        proxied = await http.post(
            "/v1/chat/completions", json=SHORT, headers={"X-Forwarded-For": "203.0.113.7", **bearer("junk3")}
        )
    for response in (*others, anonymous):
        assert assert_error(response, 429)["code"] == "too_many_requests"
    assert proxied.status_code == 200, "a client behind a trusted proxy is its own caller"
    await _served_again(open_v1.url, {})


async def test_an_abandoned_non_streamed_request_stops_generating(keyed: InProcess) -> None:
    engine = keyed.state.engine
    steps = engine.steps  # type: ignore[attr-defined]
    body = json.dumps(LONG).encode()
    host, port = keyed.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {KEY_A}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    for _ in range(3000):
        if engine.steps > steps:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.01)
    assert engine.running, "the request is not generating"  # type: ignore[attr-defined]
    writer.close()  # the client goes away
    await writer.wait_closed()
    for _ in range(6000):
        if not engine.running:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.01)
    generated = engine.steps - steps  # type: ignore[attr-defined]
    still_running = engine.running  # type: ignore[attr-defined]
    assert not still_running and generated < LONG_TOKENS / 2, f"{generated} tokens for a client gone"
    await _served_again(keyed.url, bearer(KEY_A))


def test_the_limit_settings_and_the_trusted_proxies_reach_the_server(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, forwarded_allow_ips="10.0.0.0/8")
    config = server_config(create_app(settings), host="127.0.0.1", port=1, log_level="warning", drain_s=1)
    assert config.proxy_headers and config.forwarded_allow_ips == "10.0.0.0/8"
    assert Settings(var_dir=tmp_path, max_concurrent_requests_per_key=3).max_concurrent_requests_per_key == 3


def test_the_old_stream_limit_variable_is_still_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ZANTARA_MAX_STREAMS_PER_KEY", "5")
    assert Settings(var_dir=tmp_path).max_concurrent_requests_per_key == 5
    monkeypatch.setenv("ZANTARA_MAX_CONCURRENT_REQUESTS_PER_KEY", "7")
    assert Settings(var_dir=tmp_path).max_concurrent_requests_per_key == 7
