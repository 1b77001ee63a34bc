"""A recorded fake of the narrow vLLM interface `service/engines/vllm.py` calls, installed as the `vllm`
package through `sys.modules` by `install`: for what the real vLLM (tests/vllm/, on its CPU build) cannot
be made to do on cue (a dying engine, a failing generation, a GPU platform), and to check the mapping.

Shapes follow vLLM 0.19-0.33: `AsyncEngineArgs` is a dataclass (an unknown argument is a TypeError),
`AsyncLLM.generate` is an async generator of `RequestOutput`s whose `CompletionOutput` carries only the
new text and token ids (`RequestOutputKind.DELTA`), it aborts its request itself when closed early,
`LoRARequest` refuses ids below 1. Every call is recorded on the `AsyncLLM` instance.
"""

from __future__ import annotations

import asyncio
import enum
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, Gauge
from transformers import AutoTokenizer


class RequestOutputKind(enum.Enum):
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16
    stop: list[str] | None = None
    seed: int | None = None
    output_kind: RequestOutputKind = RequestOutputKind.CUMULATIVE

    def __post_init__(self) -> None:
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")


@dataclass
class LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str

    def __post_init__(self) -> None:
        if self.lora_int_id < 1:
            raise ValueError(f"lora_int_id must be > 0, got {self.lora_int_id}")


@dataclass
class AsyncEngineArgs:
    model: str
    enable_lora: bool = False
    max_loras: int = 1
    max_lora_rank: int = 16
    max_cpu_loras: int | None = None
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    dtype: str = "auto"
    quantization: str | None = None
    tensor_parallel_size: int = 1
    disable_log_stats: bool = False


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None = None
    logprobs: Any = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: Any
    outputs: list[CompletionOutput]
    finished: bool
    num_cached_tokens: int | None = None


class EngineDeadError(Exception):
    """vLLM's error when its core process is gone."""


@dataclass
class Generation:
    """One recorded `generate` call."""

    prompt: dict[str, Any]
    params: SamplingParams
    request_id: str
    lora_request: LoRARequest | None
    closed_early: bool = False


def answer_words(lora: LoRARequest | None) -> list[str]:
    """What the fake answers, one token per word: says which model answered."""
    who = f"adapter {lora.lora_name}" if lora else "model dasar"
    return f"Halo, ini jawaban dari {who} tentang PT PMA dan izin usaha . Selesai".split()


class Platform:
    """vLLM's `current_platform`: a GPU unless a test sets `cpu` (vLLM's CPU build)."""

    cpu = False

    @classmethod
    def is_cpu(cls) -> bool:
        return cls.cpu


class AsyncLLM:
    """The fake engine: answers `answer_words`, one delta per token; knobs below change its behaviour."""

    instances: list[AsyncLLM] = []
    running_gauge: Gauge | None = None

    def __init__(self, args: AsyncEngineArgs) -> None:
        self.args = args
        self.tokenizer = AutoTokenizer.from_pretrained(args.model)
        self.model_config = types.SimpleNamespace(max_model_len=args.max_model_len or 2048)
        self.generations: list[Generation] = []
        self.aborted: list[str] = []  # abort(request_id) called by the engine
        self.aborted_internally: list[str] = []  # vLLM's own abort of a generator closed early
        self.loras: dict[int, LoRARequest] = {}
        self.added: list[LoRARequest] = []
        self.removed: list[int] = []
        self.errored = False
        self.shut_down = False
        self.fail_with: Exception | None = None  # raised by generate after the first delta
        self.finish_with: str | None = None  # finish_reason forced on the last delta
        self.cached_tokens = 0
        self.token_delay_s = 0.0
        self.gate: asyncio.Event | None = None  # when set: generation waits on it after the first delta
        if AsyncLLM.running_gauge is None:  # vLLM's stat logger registers in the default registry
            AsyncLLM.running_gauge = Gauge(
                "vllm:num_requests_running", "Requests in the model's batch.", ["model_name"]
            )
        AsyncLLM.instances.append(self)

    @classmethod
    def from_engine_args(cls, engine_args: AsyncEngineArgs) -> AsyncLLM:
        return cls(engine_args)

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    async def generate(
        self,
        prompt: dict[str, Any],
        sampling_params: SamplingParams,
        request_id: str,
        *,
        lora_request: LoRARequest | None = None,
    ) -> Any:
        record = Generation(prompt, sampling_params, request_id, lora_request)
        self.generations.append(record)
        if sampling_params.output_kind is not RequestOutputKind.DELTA:
            raise ValueError("this fake streams deltas only")
        if lora_request is not None and lora_request.lora_int_id not in self.loras:
            raise ValueError(f"LoRA {lora_request.lora_int_id} was never added")
        assert self.running_gauge is not None
        gauge = self.running_gauge.labels(self.args.model)
        gauge.inc()
        text = ""
        try:
            words = answer_words(lora_request)
            for index, word in enumerate(words):
                piece = word if index == 0 else " " + word
                text += piece
                reason = None
                if sampling_params.stop and any(s in text for s in sampling_params.stop):
                    stop = next(s for s in sampling_params.stop if s in text)
                    piece = piece[: len(piece) - (len(text) - text.index(stop))]
                    reason = "stop"
                elif index + 1 == sampling_params.max_tokens:
                    reason = "length"
                elif index + 1 == len(words):
                    reason = "stop"
                if reason and self.finish_with:
                    reason = self.finish_with
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                yield RequestOutput(
                    request_id,
                    None,
                    list(prompt["prompt_token_ids"]),
                    None,
                    [CompletionOutput(0, piece, [1000 + index], finish_reason=reason)],
                    finished=reason is not None,
                    num_cached_tokens=self.cached_tokens,
                )
                if reason:
                    return
                if self.fail_with is not None:
                    raise self.fail_with
                if self.gate is not None:
                    await self.gate.wait()
        except (asyncio.CancelledError, GeneratorExit):
            record.closed_early = True
            await self.abort(request_id, internal=True)
            raise
        finally:
            gauge.dec()

    async def abort(self, request_id: str, internal: bool = False) -> None:
        (self.aborted_internally if internal else self.aborted).append(request_id)

    async def add_lora(self, lora_request: LoRARequest) -> bool:
        if not Path(lora_request.lora_path, "adapter_model.safetensors").is_file():
            raise ValueError(f"no adapter weights under {lora_request.lora_path}")
        self.added.append(lora_request)
        self.loras[lora_request.lora_int_id] = lora_request
        return True

    async def remove_lora(self, lora_id: int) -> bool:
        self.removed.append(lora_id)
        return self.loras.pop(lora_id, None) is not None

    def shutdown(self) -> None:
        self.shut_down = True


def install(monkeypatch: pytest.MonkeyPatch) -> type[AsyncLLM]:
    """Make `import vllm...` find this fake for the rest of the test; returns the fake `AsyncLLM`
    (its `instances` list the engines created)."""
    AsyncLLM.instances = []
    Platform.cpu = False
    modules: dict[str, dict[str, Any]] = {
        "vllm": {"SamplingParams": SamplingParams},
        "vllm.engine": {},
        "vllm.engine.arg_utils": {"AsyncEngineArgs": AsyncEngineArgs},
        "vllm.lora": {},
        "vllm.lora.request": {"LoRARequest": LoRARequest},
        "vllm.platforms": {"current_platform": Platform},
        "vllm.sampling_params": {"SamplingParams": SamplingParams, "RequestOutputKind": RequestOutputKind},
        "vllm.v1": {},
        "vllm.v1.engine": {},
        "vllm.v1.engine.async_llm": {"AsyncLLM": AsyncLLM},
        "vllm.v1.engine.exceptions": {"EngineDeadError": EngineDeadError},
        "vllm.v1.metrics": {},
        "vllm.v1.metrics.prometheus": {"get_prometheus_registry": lambda: REGISTRY},
    }
    for name, attributes in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, module)
    return AsyncLLM
