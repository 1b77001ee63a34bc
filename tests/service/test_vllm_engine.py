"""The vLLM engine's own logic, against a recorded fake of the vLLM calls it makes (`fake_vllm`): the
request and sampling mapping, LoRA id bookkeeping, stream assembly, abort on disconnect, error
mapping, and the engine served through the real app. The real vLLM (its CPU build, `make vllm`) is
tested in tests/vllm/."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from service.app import create_app
from service.engines.base import (
    AdapterInfo,
    EngineError,
    EngineUnavailableError,
    GenerationError,
    InvalidRequestError,
    SamplingParams,
    UnknownAdapterError,
    generate,
)
from service.engines.vllm import KVCACHE_ENV, LoraIds, VLLMEngine
from service.settings import CPU_MEMORY_UTILIZATION, Settings
from tests.conftest import running, served
from tests.service import fake_vllm
from tests.service.helpers import QUESTION, chat_body, parse_sse, stream_text

GREEDY = SamplingParams(max_tokens=32, temperature=0)
BASE_WORDS = fake_vllm.answer_words(None)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[fake_vllm.AsyncLLM]:
    """vLLM's narrow interface, faked and recorded, importable as `vllm` for this test."""
    return fake_vllm.install(monkeypatch)


@pytest.fixture
async def engine(fake: type[fake_vllm.AsyncLLM], demo_base_path: Path) -> AsyncIterator[VLLMEngine]:
    """A started engine on the fake (the demo model's real tokenizer renders the prompts)."""
    engine = VLLMEngine(str(demo_base_path), max_model_len=512, max_lora_rank=16)
    await engine.start()
    yield engine
    await engine.close()


def llm(fake: type[fake_vllm.AsyncLLM]) -> fake_vllm.AsyncLLM:
    """The fake vLLM engine created last."""
    return fake.instances[-1]


def copy_adapter(source: Path, target: Path, rank: int | None = None) -> Path:
    """A copy of an adapter directory (another version on disk), optionally claiming another rank."""
    shutil.copytree(source, target)
    if rank is not None:
        config = json.loads((target / "adapter_config.json").read_text())
        config["r"] = rank
        (target / "adapter_config.json").write_text(json.dumps(config))
    return target


def test_settings_become_vllm_engine_args(
    fake: type[fake_vllm.AsyncLLM], demo_base_path: Path, tmp_path: Path
) -> None:
    settings = Settings(
        var_dir=tmp_path,
        engine="vllm",
        vllm_max_loras=2,
        vllm_max_lora_rank=32,
        vllm_max_cpu_loras=6,
        vllm_gpu_memory_utilization=0.8,
        vllm_max_model_len=1024,
        vllm_dtype="float32",
        vllm_quantization="fp8",
        vllm_tensor_parallel_size=2,
        default_max_tokens=7,
    )
    engine = VLLMEngine.from_settings(settings, str(demo_base_path))
    asyncio.run(engine.start())
    args = llm(fake).args
    assert args == fake_vllm.AsyncEngineArgs(
        model=str(demo_base_path),
        enable_lora=True,
        max_loras=2,
        max_lora_rank=32,
        max_cpu_loras=6,
        gpu_memory_utilization=0.8,
        max_model_len=1024,
        dtype="float32",
        quantization="fp8",
        tensor_parallel_size=2,
    )
    assert engine.ready and engine.alive and engine.context_length == 1024
    assert engine.prepare(QUESTION, SamplingParams()).max_tokens == 7  # ZANTARA_DEFAULT_MAX_TOKENS
    asyncio.run(engine.close())
    assert llm(fake).shut_down and not engine.ready


def test_defaults_fit_the_model_and_a_gpu(
    fake: type[fake_vllm.AsyncLLM], demo_base_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KVCACHE_ENV, "")  # unset (as vLLM reads it), and restored after the test
    engine = VLLMEngine.from_settings(Settings(var_dir=tmp_path, engine="vllm"), str(demo_base_path))
    asyncio.run(engine.start())
    args = llm(fake).args
    assert (args.max_model_len, args.dtype, args.gpu_memory_utilization) == (None, "auto", 0.9)
    assert engine.context_length == 2048  # vLLM derives it from max_position_embeddings
    assert os.environ[KVCACHE_ENV] == ""  # a GPU's KV cache is sized by the memory share
    asyncio.run(engine.close())


def test_on_vllms_cpu_build_the_kv_cache_space_is_exported_and_less_memory_taken(
    fake: type[fake_vllm.AsyncLLM], demo_base_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_vllm.Platform.cpu = True
    monkeypatch.setenv(KVCACHE_ENV, "")  # unset (as vLLM reads it), and restored after the test
    settings = Settings(var_dir=tmp_path, engine="vllm", vllm_cpu_kvcache_space_gib=2)
    engine = VLLMEngine.from_settings(settings, str(demo_base_path))
    asyncio.run(engine.start())
    assert os.environ[KVCACHE_ENV] == "2"
    assert llm(fake).args.gpu_memory_utilization == CPU_MEMORY_UTILIZATION < 0.5
    asyncio.run(engine.close())
    monkeypatch.setenv(KVCACHE_ENV, "7")  # set by the operator: kept
    asyncio.run(VLLMEngine.from_settings(settings, str(demo_base_path)).start())
    assert os.environ[KVCACHE_ENV] == "7"


def test_a_max_model_len_beyond_the_models_stops_the_start(
    fake: type[fake_vllm.AsyncLLM], demo_base_path: Path
) -> None:
    engine = VLLMEngine(str(demo_base_path), max_model_len=8192)
    with pytest.raises(EngineError, match=r"MAX_MODEL_LEN=8192 exceeds .*max_position_embeddings=2048"):
        asyncio.run(engine.start())
    assert not fake.instances and not engine.ready


def test_without_vllm_start_fails_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, demo_base_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    engine = VLLMEngine(str(demo_base_path))
    with pytest.raises(EngineError, match=r"pip install 'zantara\[gpu\]'"):
        asyncio.run(engine.start())
    assert not engine.ready


async def test_requests_map_to_prompt_token_ids_and_sampling_params(
    engine: VLLMEngine, fake: type[fake_vllm.AsyncLLM]
) -> None:
    prompt = engine.prepare(QUESTION, GREEDY)
    await generate(engine, prompt, GREEDY, None)
    sampled = SamplingParams(max_tokens=5, temperature=0.7, top_p=0.9, stop=("END", "##"), seed=11)
    await generate(engine, engine.prepare(QUESTION, sampled), sampled, None)
    greedy, other = llm(fake).generations
    assert greedy.prompt == {"prompt_token_ids": list(prompt.token_ids)}
    assert greedy.lora_request is None and greedy.request_id != other.request_id
    assert greedy.params == fake_vllm.SamplingParams(
        n=1, temperature=0.0, top_p=1.0, max_tokens=32, stop=None, seed=None,
        output_kind=fake_vllm.RequestOutputKind.DELTA,
    )  # fmt: skip
    assert other.params == fake_vllm.SamplingParams(
        n=1, temperature=0.7, top_p=0.9, max_tokens=5, stop=["END", "##"], seed=11,
        output_kind=fake_vllm.RequestOutputKind.DELTA,
    )  # fmt: skip


async def test_deltas_assemble_into_text_usage_and_finish_reason(
    engine: VLLMEngine, fake: type[fake_vllm.AsyncLLM]
) -> None:
    llm(fake).cached_tokens = 16
    prompt = engine.prepare(QUESTION, GREEDY)
    deltas = [d async for d in engine.stream(prompt, GREEDY, None)]
    assert "".join(d.text for d in deltas) == " ".join(BASE_WORDS)
    assert [d.completion_tokens for d in deltas] == list(range(1, len(BASE_WORDS) + 1))
    assert [d.finish_reason for d in deltas] == [None] * (len(BASE_WORDS) - 1) + ["stop"]
    assert deltas[-1].cached_tokens == 16
    short = SamplingParams(max_tokens=3, temperature=0)
    completion = await generate(engine, engine.prepare(QUESTION, short), short, None)
    assert (completion.text, completion.finish_reason) == (" ".join(BASE_WORDS[:3]), "length")
    assert completion.completion_tokens == 3 and completion.prompt_tokens == prompt.prompt_tokens
    stop = SamplingParams(max_tokens=32, temperature=0, stop=("PT",))
    completion = await generate(engine, engine.prepare(QUESTION, stop), stop, None)
    assert completion.finish_reason == "stop" and completion.text.rstrip().endswith("tentang")
    assert llm(fake).aborted == llm(fake).aborted_internally == []  # finished: nothing aborted


async def test_a_prompt_over_the_context_is_refused(engine: VLLMEngine) -> None:
    with pytest.raises(InvalidRequestError) as error:
        engine.prepare(QUESTION, SamplingParams(max_tokens=600))
    assert error.value.code == "context_length_exceeded" and error.value.param == "max_tokens"
    with pytest.raises(InvalidRequestError, match="maximum context length is 512 tokens"):
        engine.prepare([{"role": "user", "content": "kata " * 600}], SamplingParams())


async def test_every_adapter_version_gets_its_own_name_and_an_id_never_reused(
    engine: VLLMEngine, fake: type[fake_vllm.AsyncLLM], demo_adapter_path: Path, tmp_path: Path
) -> None:
    v2 = copy_adapter(demo_adapter_path, tmp_path / "v2")
    await engine.load_adapter(AdapterInfo("demo", "v1", str(demo_adapter_path)))
    await engine.load_adapter(AdapterInfo("demo", "v2", str(v2)))
    assert [(r.lora_name, r.lora_int_id, r.lora_path) for r in llm(fake).added] == [
        ("demo@v1", 1, str(demo_adapter_path)),
        ("demo@v2", 2, str(v2)),
    ]
    assert engine.ids.held() == {"demo@v1": 1, "demo@v2": 2}
    with pytest.raises(InvalidRequestError) as exists:
        await engine.load_adapter(AdapterInfo("demo", "v1", str(demo_adapter_path)))
    assert exists.value.code == "adapter_exists"

    await generate(engine, engine.prepare(QUESTION, GREEDY), GREEDY, "demo@v2")
    assert llm(fake).generations[-1].lora_request == llm(fake).added[1]

    await engine.unload_adapter("demo@v1")
    assert llm(fake).removed == [1] and [a.key for a in engine.adapters()] == ["demo@v2"]
    with pytest.raises(UnknownAdapterError):
        await generate(engine, engine.prepare(QUESTION, GREEDY), GREEDY, "demo@v1")
    with pytest.raises(UnknownAdapterError):
        await engine.unload_adapter("demo@v1")
    # loaded again: a fresh id, so vLLM never meets state it kept for the version unloaded
    await engine.load_adapter(AdapterInfo("demo", "v1", str(demo_adapter_path)))
    assert engine.ids.held() == {"demo@v2": 2, "demo@v1": 3}


def test_lora_ids_start_at_one_and_are_never_handed_out_twice() -> None:
    ids = LoraIds()
    assert [ids.assign(k) for k in ("a@v1", "a@v2", "b@v1")] == [1, 2, 3]
    with pytest.raises(ValueError, match="already holds"):
        ids.assign("a@v1")
    assert ids.retire("a@v1") == 1 and ids.get("a@v1") is None
    assert ids.assign("a@v1") == 4 and ids.get("a@v2") == 2


async def test_bad_adapters_are_refused_and_their_ids_retired(
    engine: VLLMEngine, fake: type[fake_vllm.AsyncLLM], demo_adapter_path: Path, tmp_path: Path
) -> None:
    with pytest.raises(InvalidRequestError, match="no adapter_config.json") as error:
        await engine.load_adapter(AdapterInfo("demo", "v0", str(tmp_path)))
    assert error.value.code == "invalid_adapter"
    wide = copy_adapter(demo_adapter_path, tmp_path / "wide", rank=64)
    with pytest.raises(InvalidRequestError, match="ZANTARA_VLLM_MAX_LORA_RANK=16"):
        await engine.load_adapter(AdapterInfo("demo", "wide", str(wide)))
    broken = copy_adapter(demo_adapter_path, tmp_path / "broken")
    (broken / "adapter_model.safetensors").unlink()
    with pytest.raises(InvalidRequestError, match="vLLM could not load adapter 'demo@broken'"):
        await engine.load_adapter(AdapterInfo("demo", "broken", str(broken)))
    assert engine.adapters() == [] and engine.ids.held() == {}
    await engine.load_adapter(AdapterInfo("demo", "v1", str(demo_adapter_path)))
    assert engine.ids.held() == {"demo@v1": 2}  # id 1 went to the broken one and stays retired


async def test_unload_waits_for_running_requests_and_refuses_new_ones(
    engine: VLLMEngine, fake: type[fake_vllm.AsyncLLM], demo_adapter_path: Path
) -> None:
    await engine.load_adapter(AdapterInfo("demo", "v1", str(demo_adapter_path)))
    gate = llm(fake).gate = asyncio.Event()
    stream = engine.stream(engine.prepare(QUESTION, GREEDY), GREEDY, "demo@v1")
    first = await anext(stream)
    assert first.text == "Halo,"
    unload = asyncio.create_task(engine.unload_adapter("demo@v1"))
    await asyncio.sleep(0.05)
    assert not unload.done() and llm(fake).removed == []
    assert engine.adapters() == []  # no longer offered while it drains
    with pytest.raises(UnknownAdapterError):
        await anext(engine.stream(engine.prepare(QUESTION, GREEDY), GREEDY, "demo@v1"))
    gate.set()
    rest = [d async for d in stream]
    assert rest[-1].finish_reason == "stop"
    await asyncio.wait_for(unload, 5)
    assert llm(fake).removed == [1] and engine.ids.held() == {}


async def test_closing_the_stream_early_aborts_the_request(
    engine: VLLMEngine, fake: type[fake_vllm.AsyncLLM]
) -> None:
    llm(fake).gate = asyncio.Event()
    stream = engine.stream(engine.prepare(QUESTION, GREEDY), GREEDY, None)
    await anext(stream)
    await stream.aclose()  # what the chat layer does when the client goes away
    generation = llm(fake).generations[-1]
    assert generation.closed_early
    assert generation.request_id in llm(fake).aborted


@pytest.mark.parametrize(
    ("failure", "expected", "code"),
    [
        (ValueError("prompt too long for the KV cache"), InvalidRequestError, "invalid_request"),
        (RuntimeError("CUDA error: illegal memory access"), GenerationError, None),
    ],
)
async def test_vllm_errors_map_to_the_api_errors(
    engine: VLLMEngine,
    fake: type[fake_vllm.AsyncLLM],
    failure: Exception,
    expected: type[Exception],
    code: str | None,
) -> None:
    llm(fake).fail_with = failure
    with pytest.raises(expected) as error:
        await generate(engine, engine.prepare(QUESTION, GREEDY), GREEDY, None)
    assert getattr(error.value, "code", None) == code
    assert engine.alive and engine.ready  # one request failed, the engine goes on


async def test_sampling_parameters_vllm_refuses_are_a_400_and_hold_no_adapter(
    engine: VLLMEngine, demo_adapter_path: Path
) -> None:
    await engine.load_adapter(AdapterInfo("demo", "v1", str(demo_adapter_path)))
    odd = SamplingParams(max_tokens=8, temperature=0.5, top_p=0.0)
    with pytest.raises(InvalidRequestError, match="top_p"):
        await generate(engine, engine.prepare(QUESTION, odd), odd, "demo@v1")
    await asyncio.wait_for(engine.unload_adapter("demo@v1"), 5)  # nothing left running on it


async def test_a_dead_vllm_engine_fails_requests_with_503_and_liveness(
    engine: VLLMEngine, fake: type[fake_vllm.AsyncLLM]
) -> None:
    llm(fake).fail_with = fake_vllm.EngineDeadError()
    with pytest.raises(EngineUnavailableError):
        await generate(engine, engine.prepare(QUESTION, GREEDY), GREEDY, None)
    assert not engine.alive and not engine.ready
    with pytest.raises(EngineUnavailableError):
        await anext(engine.stream(engine.prepare(QUESTION, GREEDY), GREEDY, None))


async def test_a_request_vllm_aborted_itself_is_a_failed_generation(
    engine: VLLMEngine, fake: type[fake_vllm.AsyncLLM]
) -> None:
    llm(fake).finish_with = "abort"
    with pytest.raises(GenerationError, match="aborted"):
        await generate(engine, engine.prepare(QUESTION, GREEDY), GREEDY, None)


async def test_served_through_the_app_with_adapters_streaming_and_vllm_metrics(
    fake: type[fake_vllm.AsyncLLM],
    settings_factory,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    settings = settings_factory(database_url=f"sqlite:///{tmp_path / 'z.db'}", engine="vllm")
    async with running(create_app(settings)) as client:
        models = (await client.get("/v1/models")).json()
        assert "zantara-demo@v1" in {m["id"] for m in models["data"]}
        [added] = llm(fake).added
        assert added.lora_name == "zantara-demo@v1" and added.lora_int_id == 1

        tuned = await client.post(
            "/v1/chat/completions", json=chat_body(model="zantara-demo@v1", max_tokens=8)
        )
        assert tuned.status_code == 200, tuned.text
        assert tuned.headers["x-zantara-adapter"] == "zantara-demo@v1"
        body = tuned.json()
        words = fake_vllm.answer_words(added)
        assert body["choices"][0]["message"]["content"] == " ".join(words[:8])
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["usage"]["completion_tokens"] == 8
        assert llm(fake).generations[-1].lora_request == added

        streamed = await client.post(
            "/v1/chat/completions",
            json=chat_body(
                model="zantara-demo-base", max_tokens=64, stream=True, stream_options={"include_usage": True}
            ),
        )
        assert streamed.status_code == 200 and streamed.headers["x-zantara-variant"] == "base"
        payloads = parse_sse(streamed)
        assert payloads[-1] == "[DONE]" and stream_text(payloads) == " ".join(BASE_WORDS)
        usage = json.loads(payloads[-2])["usage"]
        assert usage["completion_tokens"] == len(BASE_WORDS)
        assert llm(fake).generations[-1].lora_request is None

        llm(fake).fail_with = ValueError("refused")
        refused = await client.post("/v1/chat/completions", json=chat_body(model="zantara-demo-base"))
        assert refused.status_code == 400 and "vLLM refused" in refused.json()["error"]["message"]

        exposition = (await client.get("/metrics")).text
        assert "vllm:num_requests_running" in exposition and "zantara_requests_total" in exposition
    assert llm(fake).shut_down


async def test_a_client_leaving_a_stream_aborts_its_vllm_request(
    fake: type[fake_vllm.AsyncLLM],
    settings_factory,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    settings = settings_factory(database_url=f"sqlite:///{tmp_path / 'z.db'}", engine="vllm")
    async with served(create_app(settings)) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        llm(fake).token_delay_s = 0.1
        body = chat_body(model="zantara-demo-base", max_tokens=64, stream=True)
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if '"content":"Halo,"' in line:
                    break
        generation = llm(fake).generations[-1]
        for _ in range(250):
            if generation.request_id in llm(fake).aborted:
                break
            await asyncio.sleep(0.02)
        assert generation.request_id in llm(fake).aborted and generation.closed_early


async def test_the_app_reports_unready_while_vllm_is_missing(
    monkeypatch: pytest.MonkeyPatch,
    settings_factory,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    app = create_app(settings_factory(database_url=f"sqlite:///{tmp_path / 'z.db'}", engine="vllm"))
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://t") as client,
    ):
        for _ in range(250):
            ready = await client.get("/readyz")
            if "error" in ready.json():
                break
            await asyncio.sleep(0.02)
        assert ready.status_code == 503 and "error" in ready.json()
        assert (await client.get("/healthz")).status_code == 200
