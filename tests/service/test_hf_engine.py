"""The transformers + PEFT engine on the real demo model: mixed batches, knobs, adapters at run time."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from knowledge.prompts import ZANTARA_SYSTEM_PROMPT
from service.engines.base import (
    AdapterInfo,
    InvalidRequestError,
    SamplingParams,
    UnknownAdapterError,
    generate,
)
from service.engines.batch import RunningBatch, Sequence, adapter_slices
from service.engines.hf import HFEngine
from service.engines.prefix_cache import PrefixCache
from tests.service.helpers import GENERAL, QUESTION

GREEDY = SamplingParams(max_tokens=24, temperature=0)
LONG_PROMPTS = ["Ceritakan tentang Indonesia.", "Apa itu KITAS investor?", "Apa tips menabung?"]


def make_other_adapter(source: Path, target: Path) -> Path:
    """A second, different adapter: the demo adapter with its LoRA B matrices negated."""
    shutil.copytree(source, target)
    weights = load_file(str(source / "adapter_model.safetensors"))
    save_file(
        {k: -v if "lora_B" in k else v for k, v in weights.items()}, str(target / "adapter_model.safetensors")
    )
    return target


@pytest.fixture
async def engine(demo_base_path: Path, demo_adapter_path: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = HFEngine(str(demo_base_path), batch_window_s=0.01)
    await engine.start()
    await engine.load_adapter(AdapterInfo("demo", "v1", str(demo_adapter_path)))
    await engine.load_adapter(
        AdapterInfo("other", "v1", str(make_other_adapter(demo_adapter_path, tmp_path / "other")))
    )
    yield engine
    await engine.close()


async def answer(
    engine: HFEngine, messages: list[dict[str, str]], adapter: str | None, sampling: SamplingParams = GREEDY
) -> str:
    return (await generate(engine, engine.prepare(messages, sampling), sampling, adapter)).text


async def test_mixed_batch_gives_the_same_answers_as_one_at_a_time(engine: HFEngine) -> None:
    jobs = [
        (QUESTION, None),
        (QUESTION, "demo@v1"),
        (QUESTION, "other@v1"),
        (GENERAL, None),
        (GENERAL, "demo@v1"),
        (GENERAL, "other@v1"),
    ]
    alone = [await answer(engine, m, a) for m, a in jobs]
    steps_before = engine.steps
    together = await asyncio.gather(*(answer(engine, m, a) for m, a in jobs))
    assert together == alone
    # batched: far fewer forward steps than 6 requests x 24 tokens
    assert engine.steps - steps_before <= 30
    assert len({alone[0], alone[1], alone[2]}) == 3, "base and the two adapters must answer differently"


async def test_lora_on_adapter_slices_matches_peft_adapter_names(engine: HFEngine) -> None:
    # Mixed batches apply LoRA on each adapter's contiguous rows; PEFT's adapter_names path must agree.
    jobs = [
        (GENERAL, "other@v1"),
        (QUESTION, None),
        (QUESTION, "demo@v1"),
        (GENERAL, None),
        (QUESTION, "other@v1"),
    ]
    assert engine._slices_supported
    sliced = await asyncio.gather(*(answer(engine, m, a) for m, a in jobs))
    engine._slices_supported = False
    try:
        peft = await asyncio.gather(*(answer(engine, m, a) for m, a in jobs))
    finally:
        engine._slices_supported = True
    assert sliced == peft


async def test_prompts_sharing_a_system_prompt_reuse_its_cached_prefix(
    engine: HFEngine, demo_base_path: Path
) -> None:
    # Answers must not depend on whether a prompt's prefix came from the cache: compare with an
    # engine whose prefix cache is off, on a batch mixing cached and uncached prompts and adapters.
    system = {"role": "system", "content": ZANTARA_SYSTEM_PROMPT}
    warm = [([system, *QUESTION], None), ([system, *QUESTION], "demo@v1")]
    jobs = [
        ([system, *GENERAL], None),
        ([system, *GENERAL], "demo@v1"),
        ([system, *QUESTION], "other@v1"),
        ([{"role": "system", "content": "Jawab singkat."}, *GENERAL], None),
        (QUESTION, "demo@v1"),
    ]
    for messages, adapter in warm:
        await answer(engine, messages, adapter)
    hits_before = engine.prefix_cache.hit_tokens
    cached = await asyncio.gather(*(answer(engine, m, a) for m, a in jobs))
    system_tokens = len(engine.prepare([system], GREEDY).token_ids)
    assert engine.prefix_cache.hit_tokens - hits_before >= 2 * (system_tokens // 16 * 16) > 0

    uncached_engine = HFEngine(str(demo_base_path), batch_window_s=0.01, prefix_cache_tokens=0)
    await uncached_engine.start()
    try:
        for info in engine.adapters():
            await uncached_engine.load_adapter(info)
        uncached = await asyncio.gather(*(answer(uncached_engine, m, a) for m, a in jobs))
        assert uncached_engine.prefix_cache.hit_tokens == 0
    finally:
        await uncached_engine.close()
    assert cached == uncached


async def test_unloading_an_adapter_drops_its_cached_prefixes(engine: HFEngine) -> None:
    await answer(engine, QUESTION, "other@v1")
    internal = engine._internal_names["other@v1"]
    assert engine.prefix_cache.lookup(internal, engine.prepare(QUESTION, GREEDY).token_ids)
    await engine.unload_adapter("other@v1")
    assert not engine.prefix_cache.lookup(internal, engine.prepare(QUESTION, GREEDY).token_ids)


def test_prefilling_on_cached_prefixes_gives_the_same_logits(demo_base_path: Path) -> None:
    # Greedy answers of the tiny model hardly depend on the system prompt, so compare logits: the
    # first token's and two decode steps', for rows with and without cached prefixes.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_base_path)
    model = AutoModelForCausalLM.from_pretrained(demo_base_path).eval()
    system = {"role": "system", "content": ZANTARA_SYSTEM_PROMPT}
    texts = [
        tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False)
        for m in ([system, *QUESTION], [system, *GENERAL], GENERAL)
    ]
    prompts = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]

    def run(cache: PrefixCache) -> list[torch.Tensor]:
        logits: list[torch.Tensor] = []

        def forward(_: object, **inputs: object) -> torch.Tensor:
            out = model(**inputs, use_cache=True, logits_to_keep=1).logits[:, -1, :]
            logits.append(out)
            return out

        batch = RunningBatch(model, 0, torch.device("cpu"), cache)
        with torch.inference_mode():
            batch.admit([_sequence(prompts[0], tokenizer)], forward)  # fills the cache
            logits.clear()
            batch.admit([_sequence(p, tokenizer) for p in prompts], forward)
            batch.step(forward)
            batch.step(forward)
        return logits

    cache = PrefixCache(4096)
    cached = run(cache)
    shared = next(i for i, (a, b) in enumerate(zip(prompts[0], prompts[1], strict=False)) if a != b)
    assert cache.hit_tokens == (len(prompts[0]) - 1) // 16 * 16 + shared // 16 * 16 > 200
    for with_cache, without in zip(cached, run(PrefixCache(0)), strict=True):
        assert torch.allclose(with_cache, without, atol=1e-4)


def _sequence(prompt_ids: list[int], tokenizer: object, adapter: str = "__base__") -> Sequence:
    """A greedy sequence of up to 8 tokens whose output goes nowhere."""
    return Sequence.create(
        prompt_ids=prompt_ids,
        adapter=adapter,
        max_tokens=8,
        temperature=0,
        top_p=1,
        stop=(),
        seed=None,
        tokenizer=tokenizer,
        eos_ids=frozenset(),
        device=torch.device("cpu"),
        emit=lambda _: None,
    )


def test_adapter_slices_need_contiguous_rows() -> None:
    rows = [_sequence([1], None, name) for name in ("__base__", "__base__", "a1", "a2", "a2")]
    assert adapter_slices(rows) == [("__base__", 0, 2), ("a1", 2, 3), ("a2", 3, 5)]
    assert adapter_slices([rows[2], rows[0], rows[3], rows[1]]) is None


async def test_requests_joining_a_running_batch_are_not_disturbed(engine: HFEngine) -> None:
    long = SamplingParams(max_tokens=40, temperature=0)
    expected_long = await answer(engine, QUESTION, "demo@v1", long)
    expected_short = await answer(engine, GENERAL, None)

    async def late() -> str:
        await asyncio.sleep(0.05)
        return await answer(engine, GENERAL, None)

    got_long, got_short = await asyncio.gather(answer(engine, QUESTION, "demo@v1", long), late())
    assert (got_long, got_short) == (expected_long, expected_short)


async def test_requests_joining_at_different_times_on_different_adapters_are_not_disturbed(
    engine: HFEngine,
) -> None:
    # Each join merges newcomers of other prompt widths into a running batch and regroups the rows by
    # adapter (base first): every answer must still be the one it gets alone.
    long = SamplingParams(max_tokens=32, temperature=0)
    jobs = [
        (QUESTION, "other@v1"),
        (GENERAL, None),
        (QUESTION, "demo@v1"),
        (QUESTION, None),
        (GENERAL, "other@v1"),
        (GENERAL, "demo@v1"),
    ]
    alone = [await answer(engine, m, a, long) for m, a in jobs]

    async def joining(delay: float, messages: list[dict[str, str]], adapter: str | None) -> str:
        await asyncio.sleep(delay)
        return await answer(engine, messages, adapter, long)

    together = await asyncio.gather(*(joining(0.03 * i, m, a) for i, (m, a) in enumerate(jobs)))
    assert together == alone


async def test_max_tokens_stop_and_seed_are_honoured(engine: HFEngine) -> None:
    # Some builds of the tiny model end an answer after a word: test on the first prompt this build
    # answers with more words and tokens, so that the 5-token and stop-word answers are its prefixes.
    longest = SamplingParams(max_tokens=40, temperature=0)
    for messages in [QUESTION, GENERAL, *([{"role": "user", "content": q}] for q in LONG_PROMPTS)]:
        done = await generate(engine, engine.prepare(messages, longest), longest, None)
        if done.completion_tokens > 5 and len(done.text.split()) > 3:
            break
    full, words = done.text, done.text.split()
    assert done.completion_tokens > 5 and len(words) > 3
    limited = await generate(
        engine,
        engine.prepare(messages, SamplingParams(max_tokens=5, temperature=0)),
        SamplingParams(max_tokens=5, temperature=0),
        None,
    )
    assert limited.completion_tokens == 5 and limited.finish_reason == "length"

    stop_word = words[2]
    cut = SamplingParams(max_tokens=40, temperature=0, stop=(stop_word,))
    stopped = await generate(engine, engine.prepare(messages, cut), cut, None)
    assert stopped.finish_reason == "stop"
    assert stopped.text == full[: full.index(stop_word)]

    seeded = SamplingParams(max_tokens=20, temperature=1.0, seed=42)
    first = await answer(engine, GENERAL, None, seeded)
    again = await asyncio.gather(*(answer(engine, GENERAL, None, seeded) for _ in range(3)))
    assert again == [first] * 3
    others = {
        await answer(engine, GENERAL, None, SamplingParams(max_tokens=20, temperature=1.0, seed=s))
        for s in range(4)
    }
    assert len(others) > 1


async def test_prompt_over_the_context_is_refused(engine: HFEngine) -> None:
    huge = [{"role": "user", "content": "kata " * 5000}]
    with pytest.raises(InvalidRequestError) as error:
        engine.prepare(huge, GREEDY)
    assert error.value.code == "context_length_exceeded"
    with pytest.raises(InvalidRequestError):
        engine.prepare(QUESTION, SamplingParams(max_tokens=engine.context_length))


async def test_adapters_load_and_unload_while_serving(engine: HFEngine, demo_adapter_path: Path) -> None:
    before = await answer(engine, QUESTION, "demo@v1")
    running = asyncio.create_task(
        answer(engine, QUESTION, "other@v1", SamplingParams(max_tokens=40, temperature=0))
    )
    await asyncio.sleep(0.02)
    await engine.unload_adapter("other@v1")  # waits for the running request, then unloads
    assert running.done() and len(running.result()) > 0
    assert [a.key for a in engine.adapters()] == ["demo@v1"]
    with pytest.raises(UnknownAdapterError):
        await answer(engine, QUESTION, "other@v1")
    await engine.load_adapter(AdapterInfo("demo", "v2", str(demo_adapter_path)))
    assert await answer(engine, QUESTION, "demo@v2") == before
    with pytest.raises(InvalidRequestError):
        await engine.load_adapter(AdapterInfo("demo", "v2", str(demo_adapter_path)))
    with pytest.raises(InvalidRequestError):
        await engine.load_adapter(AdapterInfo("bad", "v1", "/nonexistent"))


async def test_a_client_that_goes_away_frees_its_slot(engine: HFEngine) -> None:
    sampling = SamplingParams(max_tokens=200, temperature=0)
    stream = engine.stream(engine.prepare(QUESTION, sampling), sampling, None)
    await anext(stream)
    await stream.aclose()
    for _ in range(100):
        if engine.running == 0:
            break
        await asyncio.sleep(0.01)
    assert engine.running == 0
