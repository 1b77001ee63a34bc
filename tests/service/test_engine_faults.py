"""The engine under faults: one bad request fails alone, adapter bookkeeping holds under concurrency,
and a worker that dies makes the liveness probe fail instead of leaving requests hanging."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from service.app import create_app
from service.engines.base import (
    AdapterInfo,
    EngineError,
    InvalidRequestError,
    SamplingParams,
    UnknownAdapterError,
    generate,
)
from service.engines.decoding import TextAssembler
from service.engines.hf import HFEngine
from tests.conftest import running
from tests.service.helpers import GENERAL, QUESTION, assert_error, chat_body

GREEDY = SamplingParams(max_tokens=16, temperature=0)
POISON = "\x00poison"  # a stop string that makes the planted detokenizer failure below fire
TIMEOUT_S = 60  # a hung request fails the test instead of hanging it


@pytest.fixture
async def engine(demo_base_path: Path):  # type: ignore[no-untyped-def]
    # a wide batch window: requests sent together are admitted into one batch
    engine = HFEngine(str(demo_base_path), batch_window_s=0.3)
    await engine.start()
    yield engine
    await engine.close()


async def answer(engine: HFEngine, messages: list[dict[str, str]], sampling: SamplingParams = GREEDY) -> str:
    done = generate(engine, engine.prepare(messages, sampling), sampling, None)
    return (await asyncio.wait_for(done, TIMEOUT_S)).text


async def test_one_poisoned_request_fails_alone(engine: HFEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = [await answer(engine, QUESTION), await answer(engine, GENERAL)]
    add = TextAssembler.add

    def poisoned_add(self: TextAssembler, token_id: int) -> str:
        if POISON in self._stop:
            raise KeyError("planted detokenizer failure")
        return add(self, token_id)

    monkeypatch.setattr(TextAssembler, "add", poisoned_add)
    steps = engine.steps
    results = await asyncio.gather(
        answer(engine, QUESTION),
        answer(engine, GENERAL),
        # overflowed the logits (inf / nan) and failed every request of its batch
        answer(engine, QUESTION, SamplingParams(max_tokens=16, temperature=1e-40)),
        answer(engine, GENERAL, SamplingParams(max_tokens=16, temperature=1e-40, top_p=1e-40)),
        answer(engine, QUESTION, SamplingParams(max_tokens=16, temperature=0, stop=(POISON,))),
        return_exceptions=True,
    )
    assert engine.steps - steps <= 20, "the requests were not batched together"
    assert results[:4] == [expected[0], expected[1], expected[0], expected[1]]
    assert isinstance(results[4], EngineError) and "planted detokenizer failure" in str(results[4])
    assert engine.alive and engine.ready
    assert await answer(engine, GENERAL) == expected[1]


async def test_concurrent_loads_of_one_key_load_one_adapter(
    engine: HFEngine, demo_adapter_path: Path
) -> None:
    info = AdapterInfo("demo", "v1", str(demo_adapter_path))
    results = await asyncio.wait_for(
        asyncio.gather(*(engine.load_adapter(info) for _ in range(4)), return_exceptions=True), TIMEOUT_S
    )
    assert results.count(None) == 1, results
    refused = [r for r in results if r is not None]
    assert all(isinstance(r, InvalidRequestError) and r.code == "adapter_exists" for r in refused)
    assert [a.key for a in engine.adapters()] == ["demo@v1"]
    assert len(engine._model.peft_config) == 1


async def test_concurrent_unloads_of_one_key_keep_the_worker_alive(
    engine: HFEngine, demo_adapter_path: Path
) -> None:
    await engine.load_adapter(AdapterInfo("demo", "v1", str(demo_adapter_path)))
    results = await asyncio.wait_for(
        asyncio.gather(*(engine.unload_adapter("demo@v1") for _ in range(3)), return_exceptions=True),
        TIMEOUT_S,
    )
    assert results.count(None) == 1, results
    assert all(isinstance(r, UnknownAdapterError) for r in results if r is not None)
    assert engine.adapters() == [] and engine.alive
    base = await answer(engine, QUESTION)  # the last adapter is gone: the plain model serves
    await engine.load_adapter(AdapterInfo("demo", "v2", str(demo_adapter_path)))
    assert await answer(engine, QUESTION) == base
    tuned = generate(engine, engine.prepare(QUESTION, GREEDY), GREEDY, "demo@v2")
    assert (await asyncio.wait_for(tuned, TIMEOUT_S)).text


async def test_a_transient_worker_error_is_survived(
    engine: HFEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    take = engine._take_newcomers
    planted = iter([KeyError("planted once")])

    def flaky(running: int) -> Any:
        error = next(planted, None)
        if error is not None:
            raise error
        return take(running)

    monkeypatch.setattr(engine, "_take_newcomers", flaky)
    assert await answer(engine, QUESTION)
    assert engine.alive and engine.ready


async def test_a_dead_worker_fails_the_liveness_probe(
    settings_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert HFEngine("not-loaded-yet").alive, "an engine still loading is alive"
    app = create_app(settings_factory(database_url=f"sqlite:///{tmp_path / 'zantara.db'}"))
    async with running(app) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        greedy = await client.post("/v1/chat/completions", json=chat_body(model="zantara-demo-base"))
        tiny = await client.post(
            "/v1/chat/completions", json=chat_body(model="zantara-demo-base", temperature=1e-40)
        )
        assert tiny.status_code == 200, tiny.text
        assert tiny.json()["choices"][0]["message"] == greedy.json()["choices"][0]["message"]
        engine: HFEngine = app.state.zantara.engine

        def broken(running: int) -> Any:
            raise KeyError("planted: the worker loop fails every time")

        monkeypatch.setattr(engine, "_take_newcomers", broken)
        waiting = await asyncio.wait_for(client.post("/v1/chat/completions", json=chat_body()), TIMEOUT_S)
        assert_error(waiting, 503)
        assert not engine.alive
        health = await client.get("/healthz")
        assert assert_error(health, 503)["code"] == "engine_dead"
        later = await asyncio.wait_for(
            client.post("/v1/chat/completions", json=chat_body(stream=True)), TIMEOUT_S
        )
        assert_error(later, 503)
        assert (await client.get("/readyz")).status_code == 503
