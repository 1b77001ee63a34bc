"""The remote path for real: vLLM's own OpenAI server (its CPU build, from `.venv-vllm`, fp32, run-time LoRA
updating on) as the upstream of our service on the `openai` engine. Routing through our tier (the base,
the pinned adapter, the alias and its canary share), a new version hot-loaded through our admin API and
pushed to vLLM's `/v1/load_lora_adapter` (vLLM lists it and answers as the hf engine does on it),
per-adapter numbers on our `/metrics`, and `zantara eval --endpoint` against vLLM with perplexity from
its prompt log-probabilities (equal to what transformers computes on the same weights).

One vLLM server and one router service for the module, stopped when it ends; the package's hf service
gives the reference answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, admin_headers
from tests.served import Server, running_server
from tests.service.helpers import metric_samples, metric_total
from tests.training.helpers import run_eval
from tests.vllm.conftest import service_env
from tests.vllm.helpers import QUESTIONS, chat, hf_answer, variant_adapter, vllm_openai_server
from training.dataset.build import BuildOptions, build
from training.dataset.generator import Generator
from training.demo.model import DEMO_ADAPTER
from training.evaluation.data import load_eval_data
from training.evaluation.http_source import HttpSource
from training.evaluation.perplexity import golden_nll
from training.evaluation.sources import BASE as BASE_KEY
from training.evaluation.sources import Variant
from training.retrain.service_client import CanaryClient

pytestmark = pytest.mark.slow

BASE = "zantara-demo-base"
NAME, OLD = DEMO_ADAPTER
ADAPTER = f"{NAME}@{OLD}"
NEW = f"{NAME}@v2"
UPSTREAM_KEY = "vllm-upstream-key-0123456789"


@pytest.fixture(scope="module")
def upstream(demo_base_path: Path, demo_adapter_path: Path) -> Iterator[Server]:
    """vLLM's OpenAI server on the demo model, serving the demo adapter as `NAME@VERSION`."""
    with vllm_openai_server(
        demo_base_path, {ADAPTER: demo_adapter_path}, name=BASE, api_key=UPSTREAM_KEY
    ) as server:
        print(f"\nvLLM's OpenAI server ready in {server.ready_s:.1f}s")
        yield server


@pytest.fixture(scope="module")
def router(
    upstream: Server, demo_dirs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """Our service on the openai engine in front of it: no model, no local adapters."""
    root = tmp_path_factory.mktemp("remote")
    env = service_env(
        root / "var",
        demo_dirs,
        ZANTARA_ENGINE="openai",
        ZANTARA_UPSTREAM_URLS=f"{upstream.url}/v1",
        ZANTARA_UPSTREAM_API_KEY=UPSTREAM_KEY,
        ZANTARA_ADAPTERS_DIR=str(root / "no-local-adapters"),
        ZANTARA_BUILD_DEMO_ADAPTER="false",
    )
    with running_server(env) as server:
        yield server


@pytest.fixture
def client(router: Server) -> Iterator[httpx.Client]:
    """An HTTP client of the router service; the rollout goes back to 0% afterwards."""
    with httpx.Client(base_url=router.url, timeout=120) as client:
        yield client
        response = client.put("/admin/rollout", headers=admin_headers(), json={"percentage": 0})
        assert response.status_code == 200, response.text


@pytest.fixture
def vllm(upstream: Server) -> Iterator[httpx.Client]:
    """An HTTP client of vLLM's server itself."""
    headers = {"Authorization": f"Bearer {UPSTREAM_KEY}"}
    with httpx.Client(base_url=upstream.url, headers=headers, timeout=120) as client:
        yield client


def vllm_models(vllm: httpx.Client) -> dict[str, dict[str, object]]:
    """What vLLM's `/v1/models` lists, by id."""
    return {m["id"]: m for m in vllm.get("/v1/models").json()["data"]}


def test_the_router_serves_vllms_base_and_adapter_with_the_hf_engines_answers(
    client: httpx.Client, hf_client: httpx.Client
) -> None:
    models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert {"zantara", BASE, ADAPTER} <= set(models) and models[ADAPTER]["parent"] == BASE
    for model, variant, adapter in ((BASE, "base", None), (ADAPTER, "tuned", ADAPTER)):
        got = chat(client, model, QUESTIONS[0])
        assert (got.variant, got.adapter) == (variant, adapter)
        assert got.text == chat(hf_client, model, QUESTIONS[0]).text, model  # both inject our system prompt


def test_the_alias_routes_by_the_canary_share_sticky_per_user(client: httpx.Client) -> None:
    body = {"percentage": 50, "adapter": ADAPTER, "reason": "remote vLLM test"}
    assert client.put("/admin/rollout", headers=admin_headers(), json=body).status_code == 200
    users = [f"user-{i}" for i in range(12)]
    first = {user: chat(client, "zantara", QUESTIONS[1], max_tokens=4, user=user) for user in users}
    again = {user: chat(client, "zantara", QUESTIONS[1], max_tokens=4, user=user) for user in users}
    assert {u: a.variant for u, a in first.items()} == {u: a.variant for u, a in again.items()}
    assert {a.variant for a in first.values()} == {"base", "tuned"}
    assert {a.adapter for a in first.values() if a.variant == "tuned"} == {ADAPTER}


def test_a_new_version_hot_loaded_through_the_router_is_pushed_to_vllm_and_answers_as_hf(
    router: Server,
    client: httpx.Client,
    vllm: httpx.Client,
    hf_client: httpx.Client,
    demo_adapter_path: Path,
    tmp_path: Path,
) -> None:
    new_dir = variant_adapter(demo_adapter_path, tmp_path / "v2", scale=-1.0)
    want = hf_answer(hf_client, "reference@v2", new_dir, QUESTIONS[2])
    assert want != chat(hf_client, ADAPTER, QUESTIONS[2]).text, "v2 answers as v1: a vacuous check"
    assert NEW not in vllm_models(vllm)

    body = {"name": NAME, "version": "v2", "path": str(new_dir)}
    response = client.post("/admin/adapters", headers=admin_headers(), json=body)
    assert response.status_code == 201, response.text
    listed = vllm_models(vllm)  # pushed through vLLM's /v1/load_lora_adapter
    assert listed[NEW]["parent"] == BASE and listed[NEW]["root"] == str(new_dir)
    got = chat(client, NEW, QUESTIONS[2])
    assert (got.variant, got.adapter, got.text) == ("tuned", NEW, want)

    # the retrain's own calls: canary at 100% on the registered version, then wait until it is listed
    canary = CanaryClient([router.url], admin_token=ADMIN_TOKEN, attempts=1)
    assert canary.start_canary(NEW, 100, "remote vLLM test")["adapter"] == NEW
    canary.wait_listed(NEW, timeout_s=10, on_poll=lambda _: None)
    routed = chat(client, "zantara", QUESTIONS[2], user="anyone")
    assert (routed.adapter, routed.text) == (NEW, want)

    metrics = metric_samples(client.get("/metrics").text)
    for adapter in (ADAPTER, NEW):
        assert metric_total(metrics, "zantara_requests_total", adapter=adapter, status="ok") >= 1, adapter
        assert metric_total(metrics, "zantara_generated_tokens_total", adapter=adapter) > 0, adapter
    assert metric_total(metrics, "zantara_requests_total", adapter=NEW, target="canary") >= 1

    client.put("/admin/rollout", headers=admin_headers(), json={"percentage": 0})
    assert client.delete(f"/admin/adapters/{NEW}", headers=admin_headers()).status_code == 204
    assert NEW not in vllm_models(vllm)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset built from the project's data with the offline generator."""
    out = tmp_path_factory.mktemp("remote-eval") / "dataset"
    build(BuildOptions(), Generator(), out, progress=False)
    return out


def test_eval_against_vllm_reports_perplexity_from_its_prompt_logprobs(
    upstream: Server, dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code, output = run_eval(
        "--dataset", dataset, "--endpoint", f"{upstream.url}/v1", "--api-key", UPSTREAM_KEY, "--base", BASE,
        "--adapter", ADAPTER, "--out", out, "--database-url", f"sqlite:///{tmp_path / 'ab.db'}",
        "--limit", "4", "--max-tokens", "16", "--bootstrap", "50", "--no-progress",
    )  # fmt: skip
    assert code in (0, 1), output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    base, tuned = report["variants"]["base"]["test"], report["variants"][ADAPTER]["test"]
    assert base["perplexity"].get("status") != "unavailable" and base["perplexity"]["value"] > 1
    # the adapter was trained on the golden answers: they are less surprising to it than to the base
    assert 1 < tuned["perplexity"]["value"] < base["perplexity"]["value"]
    [gate] = [g for g in report["gates"] if g["name"] == "perplexity"]
    assert gate["status"] != "skipped", gate


async def test_vllms_prompt_logprobs_give_the_nll_transformers_gives(
    upstream: Server, dataset: Path, demo_base_path: Path, demo_adapter_path: Path
) -> None:
    """The same answer tokens (the end-of-turn token included) and the same NLL, fp32 on both sides."""
    items = load_eval_data(dataset).items["test"][:3]
    variants = [Variant(BASE_KEY, BASE), Variant(ADAPTER, ADAPTER, ADAPTER)]
    source = HttpSource(f"{upstream.url}/v1", BASE, [ADAPTER], api_key=UPSTREAM_KEY)
    try:
        await source.start()
        remote = await source.golden_nll(variants, items, lambda: None)
    finally:
        await source.close()
    local = golden_nll(str(demo_base_path), {ADAPTER: str(demo_adapter_path)}, variants, items, lambda: None)
    assert remote is not None
    for key in (BASE_KEY, ADAPTER):
        assert [tokens for _, tokens in remote[key]] == [tokens for _, tokens in local[key]], key
        for (got, _), (want, _) in zip(remote[key], local[key], strict=True):
            assert got == pytest.approx(want, rel=1e-3), key
