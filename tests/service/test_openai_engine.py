"""The `openai` engine against real HTTP upstreams (small OpenAI-compatible servers on free ports, and our
own service in its own process), and vLLM's runtime adapter endpoints on our service."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from service.app import create_app
from service.engines.base import (
    AdapterInfo,
    Delta,
    EngineUnavailableError,
    GenerationError,
    InvalidRequestError,
    SamplingParams,
    UnknownAdapterError,
    generate,
)
from service.engines.openai import OpenAIEngine
from tests.conftest import admin_headers, running
from tests.postgres import free_port
from tests.service.conftest import UPSTREAM_KEY

BASE = "fake-base"
MESSAGES = [{"role": "user", "content": "Apa itu KITAS?"}]


@dataclass
class FakeUpstream:
    """An OpenAI-compatible server that streams `pieces` words, records what it got, and fails on cue."""

    pieces: int = 3
    delay_s: float = 0.0
    status: int | None = None
    error: dict[str, object] = field(default_factory=dict)
    load_status: int = 200
    load_message: str = ""
    adapters: dict[str, str] = field(default_factory=lambda: {"demo@v1": "/adapters/demo/v1"})
    chats: list[dict[str, object]] = field(default_factory=list)
    loads: list[dict[str, object]] = field(default_factory=list)
    unloads: list[dict[str, object]] = field(default_factory=list)
    tokens: dict[str, set[str]] = field(default_factory=dict)
    aborted: int = 0
    url: str = ""

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def bearer(request: Request, call_next):  # type: ignore[no-untyped-def]
            self.tokens.setdefault(request.url.path, set()).add(request.headers.get("authorization", ""))
            return await call_next(request)

        @app.get("/v1/models")
        async def models() -> dict[str, object]:
            cards: list[dict[str, object]] = [{"id": BASE, "root": "/models/base", "parent": None}]
            cards += [{"id": k, "root": p, "parent": BASE} for k, p in self.adapters.items()]
            return {"object": "list", "data": cards}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            body = await request.json()
            self.chats.append(body)
            if self.status is not None:
                return JSONResponse({"error": self.error}, status_code=self.status)
            if body["model"] not in (BASE, *self.adapters):
                return JSONResponse({"error": {"message": "no such model", "code": 404}}, status_code=404)
            if body.get("stream") is False:  # one response, as vLLM answers a non-streaming request
                return JSONResponse(self._whole())
            return StreamingResponse(self._events(), media_type="text/event-stream")

        @app.post("/v1/load_lora_adapter")
        async def load(request: Request) -> Response:
            body = await request.json()
            self.loads.append(body)
            if self.load_status != 200:
                error = {"message": self.load_message, "code": self.load_status}
                return JSONResponse({"error": error}, status_code=self.load_status)
            self.adapters[body["lora_name"]] = body["lora_path"]
            return PlainTextResponse(f"Success: LoRA adapter '{body['lora_name']}' added successfully.")

        @app.post("/v1/unload_lora_adapter")
        async def unload(request: Request) -> Response:
            body = await request.json()
            self.unloads.append(body)
            if self.adapters.pop(body["lora_name"], None) is None:
                return JSONResponse({"error": {"message": "cannot be found", "code": 404}}, status_code=404)
            return PlainTextResponse("Success")

        return app

    async def _events(self) -> AsyncIterator[str]:
        finished = False
        try:
            for i in range(self.pieces):
                await asyncio.sleep(self.delay_s)
                yield _event(
                    {"choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}]}
                )
            yield _event({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
            usage = {"prompt_tokens": 7, "completion_tokens": self.pieces, "total_tokens": 7 + self.pieces}
            yield _event({"choices": [], "usage": usage | {"prompt_tokens_details": {"cached_tokens": 4}}})
            yield "data: [DONE]\n\n"
            finished = True
        finally:
            self.aborted += not finished

    def _whole(self) -> dict[str, object]:
        text = "".join(f"w{i} " for i in range(self.pieces))
        usage = {"prompt_tokens": 7, "completion_tokens": self.pieces, "total_tokens": 7 + self.pieces}
        return {
            "object": "chat.completion",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
            ],
            "usage": usage | {"prompt_tokens_details": {"cached_tokens": 4}},
        }


def _event(chunk: dict[str, object]) -> str:
    return f"data: {json.dumps(chunk)}\n\n"


async def _serve(app: FastAPI) -> tuple[str, uvicorn.Server, asyncio.Task[None]]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    return f"http://127.0.0.1:{port}/v1", server, task


@pytest.fixture
async def fakes() -> AsyncIterator[list[FakeUpstream]]:
    """Two fake upstreams, served on free ports."""
    upstreams = [FakeUpstream(), FakeUpstream()]
    running_servers = []
    for upstream in upstreams:
        upstream.url, server, task = await _serve(upstream.app())
        running_servers.append((server, task))
    yield upstreams
    for server, task in running_servers:
        server.should_exit = True
        await task


async def _engine(urls: list[str], **options: float) -> OpenAIEngine:
    engine = OpenAIEngine(urls, api_key="k", **options)  # type: ignore[arg-type]
    await engine.start()
    return engine


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


async def _ask(engine: OpenAIEngine, adapter: str | None = None) -> str:
    prompt = engine.prepare(MESSAGES, SamplingParams(max_tokens=8))
    return (await generate(engine, prompt, SamplingParams(max_tokens=8), adapter)).text


async def test_discovers_base_and_adapters_and_streams_with_usage(fakes: list[FakeUpstream]) -> None:
    engine = await _engine([fakes[0].url])
    assert engine.model_name == BASE and [a.key for a in engine.adapters()] == ["demo@v1"]
    sampling = SamplingParams(max_tokens=5, temperature=0.5, top_p=0.9, stop=("x",), seed=3)
    prompt = engine.prepare(MESSAGES, sampling)
    deltas = [d async for d in engine.stream(prompt, sampling, "demo@v1")]
    assert "".join(d.text for d in deltas) == "w0 w1 w2 "
    assert deltas[-1] == Delta("", 3, "length", 4) and prompt.prompt_tokens == 7
    sent = fakes[0].chats[0]
    assert sent["model"] == "demo@v1" and sent["messages"] == MESSAGES
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"], sent["stop"], sent["seed"]) == (
        5,
        0.5,
        0.9,
        ["x"],
        3,
    )
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    await engine.close()


async def test_a_caller_that_wants_the_whole_answer_gets_one_response(fakes: list[FakeUpstream]) -> None:
    """`whole=True` (a client that does not stream) asks the upstream for one response, not events,
    and gets it as one `Delta` whose arrival is not taken for the first token's."""
    engine = await _engine([fakes[0].url])
    sampling = SamplingParams(max_tokens=5)
    prompt = engine.prepare(MESSAGES, sampling)
    deltas = [d async for d in engine.stream(prompt, sampling, "demo@v1", whole=True)]
    assert deltas == [Delta("w0 w1 w2 ", 3, "length", 4, whole=True)] and prompt.prompt_tokens == 7
    sent = fakes[0].chats[0]
    assert sent["stream"] is False and "stream_options" not in sent and sent["model"] == "demo@v1"
    await engine.close()


async def test_load_is_spread_over_the_upstreams(fakes: list[FakeUpstream]) -> None:
    engine = await _engine([f.url for f in fakes])
    for _ in range(4):  # one at a time: in turn
        await _ask(engine)
    assert [len(f.chats) for f in fakes] == [2, 2]
    fakes[0].delay_s = fakes[1].delay_s = 0.05
    await asyncio.gather(*(_ask(engine) for _ in range(8)))  # at once: the fewest in flight
    assert [len(f.chats) for f in fakes] == [6, 6]
    assert [u.in_flight for u in engine.upstreams] == [0, 0]
    await engine.close()


async def test_an_unreachable_upstream_is_skipped_and_the_request_retried(fakes: list[FakeUpstream]) -> None:
    engine = await _engine([_dead_url(), fakes[0].url])
    answers = [await _ask(engine) for _ in range(3)]
    assert answers == ["w0 w1 w2 "] * 3 and len(fakes[0].chats) == 3
    await engine.close()
    nowhere = OpenAIEngine([_dead_url(), _dead_url()])
    nowhere._base = BASE  # as if discovered before both went away
    with pytest.raises(EngineUnavailableError):
        await _ask(nowhere)
    await nowhere.close()


async def test_a_request_that_was_sent_is_never_retried(fakes: list[FakeUpstream]) -> None:
    received = 0

    async def read_then_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        received += 1
        writer.close()

    closer = await asyncio.start_server(read_then_hang_up, "127.0.0.1", 0)
    port = closer.sockets[0].getsockname()[1]
    engine = OpenAIEngine([f"http://127.0.0.1:{port}/v1", fakes[0].url])
    engine._base = BASE
    outcomes = await asyncio.gather(*(_ask(engine) for _ in range(6)), return_exceptions=True)
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert received >= 1 and len(failed) == received
    assert all(isinstance(o, GenerationError) for o in failed)
    assert len(fakes[0].chats) == 6 - received  # the failed ones never reached the second upstream
    closer.close()
    await engine.close()


async def test_a_silent_upstream_times_out_without_a_retry(fakes: list[FakeUpstream]) -> None:
    fakes[0].delay_s = 2.0
    engine = await _engine([fakes[0].url, fakes[1].url], timeout_s=0.3)
    with pytest.raises(GenerationError):
        await _ask(engine)
    assert len(fakes[0].chats) + len(fakes[1].chats) == 1
    await engine.close()


TOO_LONG: dict[str, object] = {"message": "too long", "code": "context_length_exceeded", "param": "messages"}
VLLM_400: dict[str, object] = {"message": "bad", "type": "BadRequestError", "code": 400}
ERRORS: list[tuple[int, dict[str, object], type[Exception], str | None]] = [
    (400, TOO_LONG, InvalidRequestError, "context_length_exceeded"),
    (400, VLLM_400, InvalidRequestError, "invalid_request"),
    (422, {"message": "invalid"}, InvalidRequestError, "invalid_request"),
    (404, {"message": "The model does not exist.", "code": 404}, UnknownAdapterError, None),
    (500, {"message": "boom"}, GenerationError, None),
    (401, {"message": "bad key"}, GenerationError, None),
    (503, {"message": "loading"}, EngineUnavailableError, None),
]


@pytest.mark.parametrize(("status", "error", "expected", "code"), ERRORS)
async def test_upstream_errors_map_to_engine_errors(
    fakes: list[FakeUpstream],
    status: int,
    error: dict[str, object],
    expected: type[Exception],
    code: str | None,
) -> None:
    fakes[0].status, fakes[0].error = status, error
    engine = await _engine([fakes[0].url, fakes[1].url])
    with pytest.raises(expected) as raised:
        await _ask(engine)
    if code is not None:
        assert getattr(raised.value, "code", None) == code and str(raised.value) == error["message"]
    assert len(fakes[1].chats) == 0  # answered, so never retried
    await engine.close()


async def test_closing_the_stream_closes_the_upstream_request(fakes: list[FakeUpstream]) -> None:
    fakes[0].pieces, fakes[0].delay_s = 200, 0.02
    engine = await _engine([fakes[0].url])
    prompt = engine.prepare(MESSAGES, SamplingParams())
    stream = engine.stream(prompt, SamplingParams(), None)
    assert (await anext(stream)).text == "w0 "
    await stream.aclose()
    for _ in range(200):
        if fakes[0].aborted:
            break
        await asyncio.sleep(0.02)
    assert fakes[0].aborted == 1 and engine.upstreams[0].in_flight == 0
    await engine.close()


async def test_adapters_are_pushed_to_every_upstream(fakes: list[FakeUpstream]) -> None:
    engine = await _engine([f.url for f in fakes])
    fakes[1].adapters["new@v2"] = "/adapters/new/v2"  # another router replica pushed it already
    await engine.load_adapter(AdapterInfo("new", "v2", "/adapters/new/v2"))
    assert [f.loads for f in fakes] == [[{"lora_name": "new@v2", "lora_path": "/adapters/new/v2"}]] * 2
    assert [a.key for a in engine.adapters()] == ["demo@v1", "new@v2"]
    with pytest.raises(InvalidRequestError) as twice:
        await engine.load_adapter(AdapterInfo("new", "v2", "/adapters/new/v2"))
    assert twice.value.code == "adapter_exists"
    await engine.unload_adapter("new@v2")
    assert [f.unloads for f in fakes] == [[{"lora_name": "new@v2"}]] * 2
    assert "new@v2" not in {a.key for a in engine.adapters()} | set(fakes[0].adapters) | set(
        fakes[1].adapters
    )
    with pytest.raises(UnknownAdapterError):
        await engine.unload_adapter("new@v2")
    await engine.close()


async def test_loads_carry_the_admin_token_and_chats_the_api_key(fakes: list[FakeUpstream]) -> None:
    engine = OpenAIEngine([fakes[0].url], api_key="chat-key", admin_token="admin-token")
    await engine.start()
    await engine.load_adapter(AdapterInfo("new", "v2", "/adapters/new/v2"))
    assert await _ask(engine, "new@v2") == "w0 w1 w2 "
    await engine.unload_adapter("new@v2")
    tokens = fakes[0].tokens
    assert tokens["/v1/load_lora_adapter"] == tokens["/v1/unload_lora_adapter"] == {"Bearer admin-token"}
    assert tokens["/v1/chat/completions"] == tokens["/v1/models"] == {"Bearer chat-key"}
    await engine.close()


@pytest.mark.parametrize(("status", "says"), [(401, "ZANTARA_UPSTREAM_ADMIN_TOKEN"), (500, "(500)")])
async def test_a_load_the_upstream_fails_is_unavailable_not_a_generation_error(
    fakes: list[FakeUpstream], status: int, says: str
) -> None:
    """A wrong admin token (the chart's router once sent the chat key) or a failing upstream: a 503 for
    the caller, with the reason, never a 500."""
    engine = await _engine([f.url for f in fakes])
    fakes[1].load_status, fakes[1].load_message = status, "no"
    with pytest.raises(EngineUnavailableError, match=says.replace("(", r"\(").replace(")", r"\)")):
        await engine.load_adapter(AdapterInfo("new", "v2", "/adapters/new/v2"))
    assert fakes[0].unloads == [{"lora_name": "new@v2"}]
    assert "new@v2" not in {a.key for a in engine.adapters()}
    await engine.close()


async def test_a_refused_load_is_undone_everywhere(fakes: list[FakeUpstream]) -> None:
    engine = await _engine([f.url for f in fakes])
    fakes[1].load_status, fakes[1].load_message = 404, "No adapter found at /nowhere"
    with pytest.raises(InvalidRequestError) as refused:
        await engine.load_adapter(AdapterInfo("bad", "v1", "/nowhere"))
    assert refused.value.code == "invalid_adapter"
    assert fakes[0].unloads == [{"lora_name": "bad@v1"}] and "bad@v1" not in fakes[0].adapters
    assert "bad@v1" not in {a.key for a in engine.adapters()}
    await engine.close()


async def test_an_upstream_that_lost_an_adapter_gets_it_again(fakes: list[FakeUpstream]) -> None:
    engine = await _engine([fakes[0].url])
    fakes[0].adapters.clear()  # it restarted: runtime loads are gone
    assert await _ask(engine, "demo@v1") == "w0 w1 w2 "
    assert fakes[0].loads == [{"lora_name": "demo@v1", "lora_path": "/adapters/demo/v1"}]
    assert [c["model"] for c in fakes[0].chats] == ["demo@v1", "demo@v1"]
    await engine.close()


# vLLM's runtime endpoints on our own service (hf engine, in process)


@pytest.fixture
async def hf_client(settings_factory, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    app = create_app(settings_factory(database_url=f"sqlite:///{tmp_path / 'zantara.db'}"))
    async with running(app) as client:
        yield client


async def test_load_lora_adapter_on_our_service(
    hf_client: httpx.AsyncClient, demo_adapter_path: Path
) -> None:
    body = {"lora_name": "zantara-demo@v2", "lora_path": str(demo_adapter_path)}
    loaded = await hf_client.post("/v1/load_lora_adapter", json=body, headers=admin_headers())
    assert (
        loaded.status_code == 200
        and loaded.text == "Success: LoRA adapter 'zantara-demo@v2' added successfully."
    )
    models = {m["id"]: m for m in (await hf_client.get("/v1/models")).json()["data"]}
    assert models["zantara-demo@v2"]["parent"] == "zantara-demo-base"
    # the key as root, never where the adapter lies on the server
    assert models["zantara-demo@v2"]["root"] == "zantara-demo@v2"
    assert str(demo_adapter_path) not in json.dumps(models) and "/" not in json.dumps(models)
    answer = await hf_client.post(
        "/v1/chat/completions",
        json={"model": "zantara-demo@v2", "messages": MESSAGES, "max_tokens": 2},
    )
    assert answer.headers["x-zantara-adapter"] == "zantara-demo@v2"

    again = await hf_client.post("/v1/load_lora_adapter", json=body, headers=admin_headers())
    assert again.status_code == 400 and again.json()["error"]["code"] == "adapter_exists"
    missing = {"lora_name": "ghost@v1", "lora_path": "/nowhere/ghost"}
    gone = await hf_client.post("/v1/load_lora_adapter", json=missing, headers=admin_headers())
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "invalid_adapter"
    bad_name = {"lora_name": "a b", "lora_path": str(demo_adapter_path)}
    assert (
        await hf_client.post("/v1/load_lora_adapter", json=bad_name, headers=admin_headers())
    ).status_code == 422
    for path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
        refused = await hf_client.post(path, json=body, headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_admin_token"

    # a bare name takes its version from zantara.json (else the folder)
    bare = await hf_client.post(
        "/v1/load_lora_adapter",
        json={"lora_name": "copy", "lora_path": str(demo_adapter_path)},
        headers=admin_headers(),
    )
    assert bare.status_code == 200, bare.text
    assert "copy@v1" in [m["id"] for m in (await hf_client.get("/v1/models")).json()["data"]]

    unload = {"lora_name": "zantara-demo@v2"}
    removed = await hf_client.post("/v1/unload_lora_adapter", json=unload, headers=admin_headers())
    assert (
        removed.status_code == 200
        and removed.text == "Success: LoRA adapter 'zantara-demo@v2' removed successfully."
    )
    assert "zantara-demo@v2" not in [m["id"] for m in (await hf_client.get("/v1/models")).json()["data"]]
    twice = await hf_client.post("/v1/unload_lora_adapter", json=unload, headers=admin_headers())
    assert twice.status_code == 404


# the openai engine in front of our own service in its own process


async def test_the_front_pushes_adapters_to_the_upstream_process(
    settings_factory,
    hf_upstream: str,
    demo_adapter_path: Path,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    settings = settings_factory(
        database_url=f"sqlite:///{tmp_path / 'front.db'}",
        engine="openai",
        upstream_urls=[hf_upstream],
        upstream_api_key=UPSTREAM_KEY,
        adapters_dir=tmp_path / "none",
        build_demo_adapter=False,
    )
    upstream = httpx.AsyncClient(base_url=hf_upstream, headers={"Authorization": f"Bearer {UPSTREAM_KEY}"})
    body = {"lora_name": "zantara-demo@v7", "lora_path": str(demo_adapter_path)}
    try:
        async with running(create_app(settings)) as front:
            loaded = await front.post("/v1/load_lora_adapter", json=body, headers=admin_headers())
            assert loaded.status_code == 200, loaded.text
            upstream_models = {m["id"] for m in (await upstream.get("/models")).json()["data"]}
            assert "zantara-demo@v7" in upstream_models
            answer = await front.post(
                "/v1/chat/completions",
                json={"model": "zantara-demo@v7", "messages": MESSAGES, "max_tokens": 3},
            )
            assert answer.status_code == 200 and answer.headers["x-zantara-adapter"] == "zantara-demo@v7"
            removed = await front.post(
                "/v1/unload_lora_adapter", json={"lora_name": "zantara-demo@v7"}, headers=admin_headers()
            )
            assert removed.status_code == 200, removed.text
            upstream_models = {m["id"] for m in (await upstream.get("/models")).json()["data"]}
            assert "zantara-demo@v7" not in upstream_models
    finally:
        await upstream.post("/unload_lora_adapter", json={"lora_name": "zantara-demo@v7"})
        await upstream.aclose()
