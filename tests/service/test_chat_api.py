"""`/v1/chat/completions` and `/v1/models` over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.service.helpers import assert_error, chat_body, parse_sse, row_counts, settled, stream_text

DEMO = "zantara-demo@v1"
BASE = "zantara-demo-base"


async def test_routed_answer_is_openai_shaped_and_says_its_variant(app_client: httpx.AsyncClient) -> None:
    response = await app_client.post("/v1/chat/completions", json=chat_body(user="budi"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "zantara"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] in {"stop", "length"}
    usage = body["usage"]
    assert 0 < usage["completion_tokens"] <= 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}  # the first request: nothing cached
    variant = response.headers["x-zantara-variant"]
    assert variant in {"base", "tuned"}
    assert (response.headers.get("x-zantara-adapter") == DEMO) == (variant == "tuned")


async def test_pinning_base_or_adapter_bypasses_the_router(app_client: httpx.AsyncClient) -> None:
    base = await app_client.post(
        "/v1/chat/completions", json=chat_body(model="zantara-demo-base", max_tokens=24)
    )
    tuned = await app_client.post("/v1/chat/completions", json=chat_body(model=DEMO, max_tokens=24))
    by_name = await app_client.post(
        "/v1/chat/completions", json=chat_body(model="zantara-demo", max_tokens=24)
    )
    assert base.headers["x-zantara-variant"] == "base" and "x-zantara-adapter" not in base.headers
    assert tuned.headers["x-zantara-variant"] == "tuned" and tuned.headers["x-zantara-adapter"] == DEMO
    assert by_name.headers["x-zantara-adapter"] == DEMO
    base_text = base.json()["choices"][0]["message"]["content"]
    tuned_text = tuned.json()["choices"][0]["message"]["content"]
    assert base_text != tuned_text
    assert by_name.json()["choices"][0]["message"]["content"] == tuned_text


async def test_the_same_user_always_gets_the_same_variant(app_client: httpx.AsyncClient) -> None:
    variants: dict[str, set[str]] = {}
    for _round in range(2):
        for user in (f"user-{i}" for i in range(12)):
            response = await app_client.post(
                "/v1/chat/completions", json=chat_body(max_tokens=2), headers={"X-Zantara-User": user}
            )
            variants.setdefault(user, set()).add(response.headers["x-zantara-variant"])
    assert all(len(v) == 1 for v in variants.values())


async def test_streaming_sends_chunks_usage_and_done(app_client: httpx.AsyncClient) -> None:
    plain = await app_client.post("/v1/chat/completions", json=chat_body(model=DEMO))
    streamed = await app_client.post(
        "/v1/chat/completions",
        json=chat_body(model=DEMO, stream=True, stream_options={"include_usage": True}),
    )
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.headers["x-zantara-adapter"] == DEMO
    payloads = parse_sse(streamed)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] in {"stop", "length"}
    assert chunks[-1]["choices"] == []
    usage, plain_usage = chunks[-1]["usage"], plain.json()["usage"]
    # the same prompt again: all its full blocks but the last token's come from the prefix cache
    assert usage["prompt_tokens_details"]["cached_tokens"] == (plain_usage["prompt_tokens"] - 1) // 16 * 16
    usage.pop("prompt_tokens_details"), plain_usage.pop("prompt_tokens_details")
    assert usage == plain_usage
    assert stream_text(payloads) == plain.json()["choices"][0]["message"]["content"]


async def test_models_lists_alias_base_and_adapters(app_client: httpx.AsyncClient) -> None:
    data = (await app_client.get("/v1/models")).json()["data"]
    ids = [m["id"] for m in data]
    assert ids[:2] == ["zantara", "zantara-demo-base"] and DEMO in ids
    assert next(m for m in data if m["id"] == DEMO)["parent"] == "zantara-demo-base"


async def test_sampling_knobs_reach_the_engine(app_client: httpx.AsyncClient) -> None:
    body = chat_body(model=BASE, max_tokens=3)
    short = (await app_client.post("/v1/chat/completions", json=body)).json()
    assert short["usage"]["completion_tokens"] == 3 and short["choices"][0]["finish_reason"] == "length"
    seeded = chat_body(model=BASE, temperature=1.2, top_p=0.9, seed=11, max_tokens=12)
    first = (await app_client.post("/v1/chat/completions", json=seeded)).json()["choices"][0]["message"]
    second = (await app_client.post("/v1/chat/completions", json=seeded)).json()["choices"][0]["message"]
    assert first == second
    full = (await app_client.post("/v1/chat/completions", json=chat_body(model=BASE, max_tokens=24))).json()
    text = full["choices"][0]["message"]["content"]
    stop = text.split()[1]
    cut = (
        await app_client.post("/v1/chat/completions", json=chat_body(model=BASE, max_tokens=24, stop=[stop]))
    ).json()
    assert cut["choices"][0]["message"]["content"] == text[: text.index(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"


BAD_REQUESTS: list[tuple[str, object, int]] = [
    ("empty messages", {"model": "zantara", "messages": []}, 422),
    ("unknown role", {"model": "zantara", "messages": [{"role": "wizard", "content": "hi"}]}, 422),
    ("non-string content", {"model": "zantara", "messages": [{"role": "user", "content": 42}]}, 422),
    ("object content", {"model": "zantara", "messages": [{"role": "user", "content": {"a": 1}}]}, 422),
    (
        "image part",
        {
            "model": "zantara",
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
        },
        422,
    ),
    ("missing messages", {"model": "zantara"}, 422),
    ("negative max_tokens", chat_body(max_tokens=-5), 422),
    ("zero max_tokens", chat_body(max_tokens=0), 422),
    ("huge max_tokens", chat_body(max_tokens=10**9), 422),
    ("max_tokens beyond the context", chat_body(max_tokens=4000), 400),
    ("prompt over the context", chat_body(content="kata " * 6000), 400),
    ("temperature out of range", chat_body(temperature=7), 422),
    ("n > 1", chat_body(n=3), 422),
    ("five stops", chat_body(stop=["a", "b", "c", "d", "e"]), 422),
    ("unknown model", chat_body(model="gpt-9"), 404),
    ("unknown adapter version", chat_body(model="zantara-demo@v99"), 404),
    ("body is a list", [1, 2], 422),
]


@pytest.mark.parametrize(("case", "body", "status"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
async def test_bad_input_gets_a_clear_4xx_and_stores_nothing(
    app_client: httpx.AsyncClient, database_url: str, case: str, body: object, status: int
) -> None:
    await app_client.post("/v1/chat/completions", json=chat_body(max_tokens=2))
    await settled(app_client)
    before = row_counts(database_url)
    response = await app_client.post("/v1/chat/completions", json=body)
    assert_error(response, status)
    streamed = await app_client.post(
        "/v1/chat/completions", json={**body, "stream": True} if isinstance(body, dict) else body
    )
    assert_error(streamed, status)
    await settled(app_client)
    assert row_counts(database_url) == before


async def test_malformed_json_and_wrong_content_type(app_client: httpx.AsyncClient) -> None:
    broken = await app_client.post(
        "/v1/chat/completions",
        content=b'{"model": "zantara", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert assert_error(broken, 400)["code"] == "invalid_json"
    assert_error(await app_client.post("/v1/chat/completions", content=b"hello"), 422)
    assert_error(await app_client.get("/v1/chat/completions"), 405)
    assert_error(await app_client.get("/v1/nothing-here"), 404)
