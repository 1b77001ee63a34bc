"""The vllm engine (vLLM's CPU build, fp32) and the hf engine (transformers + PEFT) answer the same
greedy requests with the same tokens, on the base model and on the demo adapter, one at a time and
with base and adapter requests batched together."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.vllm.helpers import QUESTIONS, Answer, chat
from training.demo.model import DEMO_ADAPTER

pytestmark = pytest.mark.slow

BASE = "zantara-demo-base"
ADAPTER = "{}@{}".format(*DEMO_ADAPTER)
REQUESTS = [(model, question) for model in (BASE, ADAPTER) for question in QUESTIONS]


def answers(client: httpx.Client, concurrently: bool = False) -> list[Answer]:
    """Every request of REQUESTS answered greedily (32 tokens), in order."""
    if not concurrently:
        return [chat(client, model, question) for model, question in REQUESTS]
    with ThreadPoolExecutor(len(REQUESTS)) as pool:
        return list(pool.map(lambda request: chat(client, *request), REQUESTS))


def test_vllm_answers_token_for_token_as_the_hf_engine(
    vllm_client: httpx.Client, hf_client: httpx.Client
) -> None:
    expected = answers(hf_client)
    got = answers(vllm_client)
    assert [a.variant for a in got] == ["base"] * len(QUESTIONS) + ["tuned"] * len(QUESTIONS)
    assert {a.adapter for a in got[len(QUESTIONS) :]} == {ADAPTER}
    for (model, question), want, have in zip(REQUESTS, expected, got, strict=True):
        where = f"{model} on {question!r}"
        assert (have.text, have.finish_reason) == (want.text, want.finish_reason), where
        assert have.completion_tokens == want.completion_tokens, where
    base, tuned = got[: len(QUESTIONS)], got[len(QUESTIONS) :]
    assert [a.text for a in base] != [a.text for a in tuned], "the adapter changes nothing: a vacuous check"


def test_base_and_adapter_rows_batched_together_answer_as_alone(vllm_client: httpx.Client) -> None:
    alone = answers(vllm_client)
    batched = answers(vllm_client, concurrently=True)
    assert [(a.text, a.completion_tokens) for a in batched] == [(a.text, a.completion_tokens) for a in alone]
