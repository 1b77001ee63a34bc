"""The chat, feedback and metrics API of a service on the real vLLM engine (its CPU build): the base and
a pinned adapter, the routed alias (the canary share, sticky per user), streams with usage, prompt
tokens served from vLLM's prefix cache, a rating of a vLLM answer, a client that goes away aborting
its request in vLLM, errors, and vLLM's own metrics beside ours on `/metrics`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import admin_headers
from tests.service.helpers import assert_error, metric_samples, metric_total, parse_sse, stream_text
from tests.vllm.helpers import QUESTIONS, chat
from training.demo.model import DEMO_ADAPTER

pytestmark = pytest.mark.slow

BASE = "zantara-demo-base"
ADAPTER = "{}@{}".format(*DEMO_ADAPTER)
LONG = " ".join([QUESTIONS[0], "Saya investor asing dan ingin membuka kantor di Jakarta."] * 30)
"""A prompt spanning several KV blocks (vLLM caches full blocks only)."""


@pytest.fixture
def canary(vllm_client: httpx.Client) -> Iterator[httpx.Client]:
    """The vllm service's client; the rollout goes back to 0% afterwards."""
    yield vllm_client
    response = vllm_client.put("/admin/rollout", headers=admin_headers(), json={"percentage": 0})
    assert response.status_code == 200, response.text


def rollout(client: httpx.Client, percentage: float) -> None:
    """Send `percentage` of the users to the demo adapter."""
    body = {"percentage": percentage, "adapter": ADAPTER, "reason": "vLLM test"}
    response = client.put("/admin/rollout", headers=admin_headers(), json=body)
    assert response.status_code == 200, response.text


def test_models_lists_the_alias_the_base_and_the_adapter(vllm_client: httpx.Client) -> None:
    models = {m["id"]: m for m in vllm_client.get("/v1/models").json()["data"]}
    assert {"zantara", BASE, ADAPTER} <= set(models)
    assert models[ADAPTER]["parent"] == BASE


def test_pinned_base_and_adapter_answer_with_their_headers(vllm_client: httpx.Client) -> None:
    base = chat(vllm_client, BASE, QUESTIONS[0])
    tuned = chat(vllm_client, ADAPTER, QUESTIONS[0])
    assert (base.variant, base.adapter) == ("base", None)
    assert (tuned.variant, tuned.adapter) == ("tuned", ADAPTER)
    assert base.text.strip() and tuned.text.strip() and base.text != tuned.text


def test_the_alias_routes_by_the_canary_share_and_stays_sticky_per_user(canary: httpx.Client) -> None:
    rollout(canary, 0)
    assert chat(canary, "zantara", QUESTIONS[0], user="user-0").variant == "base"
    rollout(canary, 100)
    everyone = chat(canary, "zantara", QUESTIONS[0], user="user-0")
    assert (everyone.variant, everyone.adapter) == ("tuned", ADAPTER)
    assert everyone.text == chat(canary, ADAPTER, QUESTIONS[0]).text
    rollout(canary, 50)
    users = [f"user-{i}" for i in range(12)]
    first = {user: chat(canary, "zantara", QUESTIONS[1], max_tokens=4, user=user).variant for user in users}
    again = {user: chat(canary, "zantara", QUESTIONS[1], max_tokens=4, user=user).variant for user in users}
    assert first == again and set(first.values()) == {"base", "tuned"}


def test_a_stream_ends_in_done_with_usage_and_the_same_answer(vllm_client: httpx.Client) -> None:
    whole = chat(vllm_client, ADAPTER, QUESTIONS[2])
    body = {
        "model": ADAPTER,
        "messages": [{"role": "user", "content": QUESTIONS[2]}],
        "temperature": 0,
        "max_tokens": 32,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = vllm_client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["X-Zantara-Adapter"] == ADAPTER
    payloads = parse_sse(response)
    assert payloads[-1] == "[DONE]" and len(payloads) > 3
    assert stream_text(payloads) == whole.text
    usage = json.loads(payloads[-2])["usage"]
    assert usage["completion_tokens"] == whole.completion_tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_usage_counts_prompt_tokens_served_from_vllms_prefix_cache(vllm_client: httpx.Client) -> None:
    chat(vllm_client, BASE, LONG, max_tokens=4)
    again = vllm_client.post(
        "/v1/chat/completions",
        json={"model": BASE, "messages": [{"role": "user", "content": LONG}], "max_tokens": 4},
    ).json()["usage"]
    assert 0 < again["prompt_tokens_details"]["cached_tokens"] < again["prompt_tokens"]


def test_a_vllm_answer_takes_a_rating(vllm_client: httpx.Client) -> None:
    body = {"model": "zantara", "messages": [{"role": "user", "content": QUESTIONS[3]}], "max_tokens": 8}
    answer = vllm_client.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    rated = vllm_client.post("/v1/feedback", json={"response_id": answer.json()["id"], "rating": 2})
    assert rated.status_code == 200, rated.text
    again = vllm_client.post("/v1/feedback", json={"response_id": answer.json()["id"], "rating": 5})
    assert again.status_code == 200, again.text
    assert_error(vllm_client.post("/v1/feedback", json={"response_id": "chatcmpl-unknown", "rating": 3}), 404)


def test_errors_keep_openais_shape(vllm_client: httpx.Client) -> None:
    missing = {"model": "zantara-demo@v404", "messages": [{"role": "user", "content": "Halo"}]}
    assert_error(vllm_client.post("/v1/chat/completions", json=missing), 404)
    too_long = {"model": BASE, "messages": [{"role": "user", "content": "Halo"}], "max_tokens": 4000}
    assert_error(vllm_client.post("/v1/chat/completions", json=too_long), 400)


def engine_counts(client: httpx.Client) -> tuple[float, float, float]:
    """(requests in vLLM's batch, tokens vLLM generated so far, our requests counted as cancelled)."""
    samples = metric_samples(client.get("/metrics").text)
    return (
        metric_total(samples, "vllm:num_requests_running"),
        metric_total(samples, "vllm:generation_tokens_total"),
        metric_total(samples, "zantara_requests_total", status="cancelled"),
    )


def test_a_client_that_goes_away_aborts_its_request_in_vllm(vllm_client: httpx.Client) -> None:
    _, generated, cancelled = engine_counts(vllm_client)
    # the demo adapter's greedy answer to this question runs to max_tokens (1,500 tokens, many seconds)
    body = {
        "model": ADAPTER,
        "messages": [{"role": "user", "content": QUESTIONS[0]}],
        "max_tokens": 1500,
        "temperature": 0,
        "stream": True,
    }
    with vllm_client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
        assert engine_counts(vllm_client)[0] == 1  # generating when the client hangs up
    deadline = time.monotonic() + 10
    while engine_counts(vllm_client)[0] > 0:
        assert time.monotonic() < deadline, "vLLM still generates for the client that left"
        time.sleep(0.1)
    _, after, cancelled_after = engine_counts(vllm_client)
    time.sleep(1)
    assert engine_counts(vllm_client)[1] == after < generated + 1500  # stopped, not finished
    assert cancelled_after == cancelled + 1


def test_vllms_metrics_appear_beside_ours(vllm_client: httpx.Client) -> None:
    chat(vllm_client, ADAPTER, QUESTIONS[0], max_tokens=4)
    samples = metric_samples(vllm_client.get("/metrics").text)
    names = {name for name, _ in samples}
    assert {
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:generation_tokens_total",
        "vllm:prompt_tokens_total",
        "vllm:lora_requests_info",
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:prefix_cache_hits_total",
    } <= names
    assert metric_total(samples, "vllm:generation_tokens_total") > 0
    assert metric_total(samples, "zantara_requests_total", variant="tuned", adapter=ADAPTER) > 0
    assert metric_total(samples, "zantara_generated_tokens_total", adapter=ADAPTER) > 0
