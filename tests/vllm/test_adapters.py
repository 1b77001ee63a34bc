"""Adapter versions loaded and unloaded at run time on the real vLLM: each `NAME@VERSION` is its own vLLM
LoRA under an id never handed out again, so a new version loaded while the old one serves answers as
the new one, and a version unloaded and loaded again with other weights answers with those, never
from blocks vLLM cached for the earlier weights (the stale prefix-cache bug vLLM had on reloads under
the same name, vllm-project/vllm#42125). The reference answers come from the hf engine."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import admin_headers
from tests.service.helpers import assert_error
from tests.vllm.helpers import QUESTIONS, chat, hf_answer, load_lora, unload_lora, variant_adapter
from training.demo.model import DEMO_ADAPTER

pytestmark = pytest.mark.slow

NAME, OLD = DEMO_ADAPTER
QUESTION = QUESTIONS[1]
LONG = QUESTION + " " + " ".join(["Mohon jelaskan dengan rinci untuk investor asing."] * 40)
"""A prompt longer than a few KV blocks, so vLLM's prefix cache holds full blocks of it."""


def test_a_new_version_loaded_while_the_old_serves_answers_as_the_new_one(
    vllm_client: httpx.Client, hf_client: httpx.Client, demo_adapter_path: Path, tmp_path: Path
) -> None:
    new = f"{NAME}@v2"
    new_dir = variant_adapter(demo_adapter_path, tmp_path / "v2", scale=-1.0)
    want_new = hf_answer(hf_client, "reference@new", new_dir, LONG)
    old_answer = chat(vllm_client, f"{NAME}@{OLD}", LONG)  # the old version's blocks now in the cache
    assert old_answer.text != want_new, "the new version answers as the old: a vacuous check"

    load_lora(vllm_client, new, new_dir)
    try:
        got = chat(vllm_client, new, LONG)
        assert (got.variant, got.adapter, got.text) == ("tuned", new, want_new)
        assert chat(vllm_client, f"{NAME}@{OLD}", LONG).text == old_answer.text  # the old one still serves
        models = {m["id"]: m for m in vllm_client.get("/v1/models").json()["data"]}
        assert models[new]["parent"] == models[f"{NAME}@{OLD}"]["parent"]
    finally:
        unload_lora(vllm_client, new)
    assert_error(vllm_client.post("/v1/chat/completions", json=_body(new)), 404)
    assert new not in {m["id"] for m in vllm_client.get("/v1/models").json()["data"]}


def test_a_version_loaded_again_with_other_weights_never_meets_the_cached_blocks_of_the_first(
    vllm_client: httpx.Client, hf_client: httpx.Client, demo_adapter_path: Path, tmp_path: Path
) -> None:
    key = f"{NAME}@v3"
    first = variant_adapter(demo_adapter_path, tmp_path / "first", scale=-1.0)
    second = variant_adapter(demo_adapter_path, tmp_path / "second", scale=2.0)
    want_first = hf_answer(hf_client, "reference@first", first, LONG)
    want_second = hf_answer(hf_client, "reference@second", second, LONG)
    assert want_first != want_second, "both weights answer alike: a vacuous check"

    load_lora(vllm_client, key, first)
    try:
        assert chat(vllm_client, key, LONG).text == want_first
        cached = chat(vllm_client, key, LONG)  # served again, now from the blocks vLLM cached
        assert cached.text == want_first and cached.cached_tokens > 0
    finally:
        unload_lora(vllm_client, key)
    load_lora(vllm_client, key, second)  # the same name, other weights: a new LoRA id
    try:
        again = chat(vllm_client, key, LONG)
        assert (again.text, again.cached_tokens) == (want_second, 0)
    finally:
        unload_lora(vllm_client, key)


def test_loading_a_name_twice_or_a_missing_directory_is_refused(
    vllm_client: httpx.Client, tmp_path: Path, demo_adapter_path: Path
) -> None:
    body = {"lora_name": f"{NAME}@{OLD}", "lora_path": str(demo_adapter_path)}
    assert_error(vllm_client.post("/v1/load_lora_adapter", headers=admin_headers(), json=body), 400)
    body = {"lora_name": f"{NAME}@v9", "lora_path": str(tmp_path / "nothing")}
    assert_error(vllm_client.post("/v1/load_lora_adapter", headers=admin_headers(), json=body), 404)
    missing = {"lora_name": f"{NAME}@v9"}
    assert_error(vllm_client.post("/v1/unload_lora_adapter", headers=admin_headers(), json=missing), 404)
    assert vllm_client.post("/v1/load_lora_adapter", json=body).status_code == 401


def _body(model: str, question: str = QUESTION, max_tokens: int = 8) -> dict[str, object]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": max_tokens,
    }
