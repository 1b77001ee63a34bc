"""transformers + PEFT engine: one base model, many LoRA adapters, continuous mixed batches.

A single worker thread owns the model. It admits new requests between decode steps, runs one
forward pass per step for every running sequence (base and adapter rows share it: `LoraRows` adds
each adapter's delta to its own rows, PEFT's `adapter_names` is the fallback), and applies adapter
loads and unloads between steps, so adapters change without a restart.

The adapter bookkeeping that request handlers read and the worker changes sits behind a small lock,
held only to read or update it. One request's failure fails that request alone; an unexpected error
in the worker's loop is survived, unless it keeps recurring: then the worker stops, every waiting
request gets a 503, and `alive` turns False so the liveness probe restarts the pod.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import os
import threading
import time
from collections.abc import AsyncGenerator
from contextlib import suppress
from pathlib import Path
from typing import Any

import torch

from service.engines import row_delta
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
from service.engines.batch import BASE_ADAPTER, RunningBatch, Sequence, adapter_slices
from service.engines.lora_rows import LoraRows
from service.engines.prefix_cache import PrefixCache

log = logging.getLogger(__name__)

_MIXED = "__mixed__"  # PEFT mode of a batch whose rows use different adapters
_ROWS = "__rows__"  # `LoraRows` runs the LoRA layers: base rows plain, each adapter's delta on its rows
_MAX_LOOP_FAILURES = 5  # unexpected worker-loop errors in a row after which the worker gives up


def pick_device(setting: str) -> torch.device:
    """`auto` means CUDA when present, else CPU."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


class HFEngine:
    """The CPU (or single-GPU) engine built on transformers and PEFT."""

    def __init__(
        self,
        model_path: str,
        *,
        device: str = "auto",
        max_batch_size: int = 32,
        batch_window_s: float = 0.004,
        default_max_tokens: int = 256,
        prefill_token_budget: int = 8192,
        torch_threads: int = 0,
        prefix_cache_tokens: int = 4096,
    ) -> None:
        self._model_path = model_path
        self._device = pick_device(device)
        self._max_batch_size = max_batch_size
        self._batch_window_s = batch_window_s
        self._default_max_tokens = default_max_tokens
        self._prefill_token_budget = prefill_token_budget
        self._torch_threads = torch_threads
        self.prefix_cache = PrefixCache(prefix_cache_tokens)
        self._model: Any = None
        self._peft_mode: str | None = None  # what `_switch_peft_mode` last set up; None: unknown
        self._peft_layers_on: bool | None = None  # PEFT's LoRA layers enabled; None: unknown
        self._lora_rows = LoraRows([])
        self._slices_supported = False
        self._tokenizer: Any = None
        self._eos_ids: frozenset[int] = frozenset()
        self._context = 0
        self._adapters_lock = threading.Lock()  # guards the four below; taken after `_wakeup`, never before
        self._adapters: dict[str, AdapterInfo] = {}
        self._internal_names: dict[str, str] = {}
        self._unloading: set[str] = set()
        self._loading: set[str] = set()  # keys reserved by a load in progress
        self._pending: collections.deque[Sequence] = collections.deque()
        self._commands: collections.deque[tuple[str, Any, asyncio.Future[None]]] = collections.deque()
        self._wakeup = threading.Condition()
        self._stopping = False
        self._worker_gone = False  # set (under `_wakeup`) when the worker takes no more work
        self._died: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._adapter_counter = 0
        self._pad_id = 0
        self._running = 0
        self._cache_kwarg = "past_key_values"
        self.steps = 0

    @property
    def model_name(self) -> str:
        """The base model as configured (hub id or path)."""
        return self._model_path

    @property
    def ready(self) -> bool:
        """True once the model is loaded and the worker runs."""
        return self._thread is not None and self._thread.is_alive() and not self._worker_gone

    @property
    def alive(self) -> bool:
        """False once the worker thread died (not when `close` stopped it); True while the model loads."""
        if self._died is not None:
            return False
        return self._thread is None or self._thread.is_alive() or self._stopping

    @property
    def running(self) -> int:
        """Sequences being decoded or waiting to be admitted."""
        return self._running + len(self._pending)

    @property
    def context_length(self) -> int:
        """Maximum prompt + completion tokens."""
        return self._context

    async def start(self) -> None:
        """Load tokenizer and model (in a thread: it takes a while) and start the worker."""
        await asyncio.to_thread(self._load)
        self._thread = threading.Thread(target=self._run, name="zantara-hf-engine", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self._torch_threads or self._device.type == "cpu":
            # on CPU, leave half the cores to the HTTP server and its clients: oversubscribed
            # intra-op threads slow every forward pass by an order of magnitude
            torch.set_num_threads(self._torch_threads or max(1, (os.cpu_count() or 2) // 2))
        tokenizer = AutoTokenizer.from_pretrained(self._model_path)
        if not tokenizer.chat_template:
            raise EngineError(f"{self._model_path} has no chat template; an instruct model is required")
        dtype = torch.bfloat16 if self._device.type == "cuda" else torch.float32
        model: Any = AutoModelForCausalLM.from_pretrained(self._model_path, dtype=dtype)
        model = model.to(self._device).eval()
        if dtype == torch.float32 and self._device.type == "cpu":
            row_delta.compiled()  # built now (about 0.4 s, logged), not in the first adapter's step
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        self._tokenizer, self._model, self._eos_ids = tokenizer, model, frozenset(eos_ids)
        self._context = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
        forward_params = inspect.signature(type(model).forward).parameters
        self._cache_kwarg = "cache" if "cache" in forward_params else "past_key_values"
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self._eos_ids)

    @property
    def prepare_blocks(self) -> bool:
        """The chat template is rendered and tokenized here."""
        return True

    def prepare(self, messages: list[dict[str, str]], sampling: SamplingParams) -> PreparedPrompt:
        """Apply the tokenizer's chat template, tokenize, and check prompt + max_tokens fit the context."""
        if self._tokenizer is None:
            raise EngineNotReadyError("the model is still loading")
        return prepare_chat(self._tokenizer, self._context, messages, sampling, self._default_max_tokens)

    async def stream(
        self, prompt: PreparedPrompt, sampling: SamplingParams, adapter: str | None, *, whole: bool = False
    ) -> AsyncGenerator[Delta, None]:
        """Queue the request for the worker and yield its output as it is produced."""
        self._check_serving()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Delta | BaseException] = asyncio.Queue()

        def emit(item: Delta | BaseException) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        seq = Sequence.create(
            prompt_ids=list(prompt.token_ids),
            adapter=BASE_ADAPTER,
            max_tokens=prompt.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            stop=sampling.stop,
            seed=sampling.seed,
            tokenizer=self._tokenizer,
            eos_ids=self._eos_ids,
            device=self._device,
            emit=emit,
        )
        with self._wakeup:
            # resolved and queued in one step, so an unload decided meanwhile sees this request
            self._check_serving()
            seq.adapter = self._internal_adapter(adapter)
            self._pending.append(seq)
            self._wakeup.notify()
        try:
            while True:
                item = await queue.get()
                if isinstance(item, EngineError):
                    raise item
                if isinstance(item, BaseException):
                    raise GenerationError(f"generation failed: {item}") from item
                yield item
                if item.finish_reason:
                    return
        finally:
            seq.cancelled.set()

    def _check_serving(self) -> None:
        """Raise the 503 a request gets when the engine cannot take it (loading, stopped or dead)."""
        if self._died is not None:
            raise EngineUnavailableError("the inference engine stopped after an internal error; retry soon")
        if self._worker_gone or self._stopping:
            raise EngineUnavailableError("the inference engine is shutting down; retry shortly")
        if not self.ready:
            raise EngineNotReadyError("the model is still loading")

    def _internal_adapter(self, key: str | None) -> str:
        if key is None:
            return BASE_ADAPTER
        with self._adapters_lock:
            if key not in self._adapters or key in self._unloading:
                raise UnknownAdapterError(f"adapter {key!r} is not loaded")
            return self._internal_names[key]

    async def load_adapter(self, info: AdapterInfo) -> None:
        """Load a PEFT adapter directory under `NAME@VERSION` (between decode steps).

        The key is reserved before the load is queued: a second load of the same key while the first
        runs is refused (`adapter_exists`) instead of loading a second copy into the model."""
        if not (Path(info.path) / "adapter_config.json").is_file():
            raise InvalidRequestError(
                f"{info.path} is not a PEFT adapter directory (no adapter_config.json)",
                code="invalid_adapter",
            )
        with self._adapters_lock:
            if info.key in self._adapters or info.key in self._loading:
                raise InvalidRequestError(f"adapter {info.key!r} is already loaded", code="adapter_exists")
            self._loading.add(info.key)
        try:
            await self._command("load", info)
        finally:
            with self._adapters_lock:
                self._loading.discard(info.key)

    async def unload_adapter(self, key: str) -> None:
        """Unload an adapter; sequences already running on it finish first, new ones are refused."""
        with self._adapters_lock:
            if key not in self._adapters or key in self._unloading:
                raise UnknownAdapterError(f"adapter {key!r} is not loaded")
            self._unloading.add(key)
        try:
            await self._command("unload", key)
        finally:
            with self._adapters_lock:
                self._unloading.discard(key)

    def adapters(self) -> list[AdapterInfo]:
        """Adapters loaded now, in load order (a snapshot: the worker may change them meanwhile)."""
        with self._adapters_lock:
            return [info for key, info in self._adapters.items() if key not in self._unloading]

    async def close(self) -> None:
        """Stop the worker; running requests get an error."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)

    async def _command(self, kind: str, payload: Any) -> None:
        self._check_serving()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._wakeup:
            self._check_serving()
            self._commands.append((kind, payload, future))
            self._wakeup.notify()
        await future

    def _run(self) -> None:
        """The worker thread: serve until `close`, or until the loop keeps failing."""
        batch = RunningBatch(self._model, self._pad_id, self._device, self.prefix_cache)
        try:
            with torch.inference_mode():
                self._serve(batch)
        except BaseException as error:  # noqa: BLE001 - recorded: `alive` turns False, /healthz fails
            self._died = error
            log.critical("the engine's worker died; the liveness probe now fails", exc_info=True)
        finally:
            self._drain(batch)

    def _serve(self, batch: RunningBatch) -> None:
        failures = 0
        while True:
            try:
                newcomers = self._wait_for_work(batch)
                if newcomers is None:
                    return
                self._advance(batch, newcomers)
                failures = 0
            except Exception:
                failures += 1
                log.exception("engine loop failed (%d in a row)", failures)
                if failures >= _MAX_LOOP_FAILURES:
                    raise
                time.sleep(0.01 * failures)

    def _advance(self, batch: RunningBatch, newcomers: list[Sequence]) -> None:
        """Admit the newcomers and run one decode step; a failed forward pass fails the batch only."""
        try:
            if newcomers:
                batch.admit(newcomers, self._forward)
            if len(batch):
                batch.step(self._forward)
                self.steps += 1
            self._running = len(batch)
        except Exception as error:  # noqa: BLE001 - delivered to every waiting request
            log.exception("engine step failed")
            failure = EngineError(f"generation failed: {type(error).__name__}: {error}")
            for seq in newcomers:
                if not seq.finished:
                    seq.fail(failure)
            batch.fail_all(failure)
            self._running = 0

    def _drain(self, batch: RunningBatch) -> None:
        """The worker ends: fail what is running or waiting, and every queued adapter command."""
        with self._wakeup:
            self._worker_gone = True
            pending, self._pending = list(self._pending), collections.deque()
            commands, self._commands = list(self._commands), collections.deque()
        reason = "stopped after an internal error" if self._died is not None else "is shutting down"
        error = EngineUnavailableError(f"the inference engine {reason}; retry shortly")
        batch.fail_all(error)
        for seq in pending:
            seq.fail(error)
        for _, _, future in commands:
            _resolve(future, error)
        self._running = 0

    def _wait_for_work(self, batch: RunningBatch) -> list[Sequence] | None:
        """Apply adapter commands, then take newcomers that fit (waiting when idle). None: stop.

        Commands run outside `_wakeup` (loading an adapter takes a while, and request handlers
        queue their requests under it); which ones may run is decided under it."""
        with self._wakeup:
            while not self._stopping and not len(batch) and not self._pending and not self._commands:
                self._wakeup.wait()
            if self._stopping:
                return None
            runnable = self._runnable_commands(batch)
        self._apply_commands(runnable)
        with self._wakeup:
            if self._stopping:
                return None
            if not len(batch) and self._pending and self._batch_window_s:
                self._wakeup.wait_for(
                    lambda: len(self._pending) >= self._max_batch_size or self._stopping,
                    timeout=self._batch_window_s,
                )
            return self._take_newcomers(len(batch))

    def _take_newcomers(self, running: int) -> list[Sequence]:
        newcomers: list[Sequence] = []
        budget = self._prefill_token_budget
        while self._pending and running + len(newcomers) < self._max_batch_size:
            seq = self._pending[0]
            if seq.cancelled.is_set():
                self._pending.popleft()
                continue
            width = max([len(seq.prompt_ids)] + [len(s.prompt_ids) for s in newcomers])
            if newcomers and width * (len(newcomers) + 1) > budget:
                break
            newcomers.append(self._pending.popleft())
        return newcomers

    def _runnable_commands(self, batch: RunningBatch) -> list[tuple[str, Any, asyncio.Future[None]]]:
        """Take the queued commands that may run now (under `_wakeup`); an unload whose adapter is
        still in use waits, and its adapter is marked so no new request can take it meanwhile."""
        runnable: list[tuple[str, Any, asyncio.Future[None]]] = []
        deferred: collections.deque[tuple[str, Any, asyncio.Future[None]]] = collections.deque()
        while self._commands:
            command = self._commands.popleft()
            kind, payload, future = command
            if kind == "unload":
                with self._adapters_lock:
                    internal = self._internal_names.get(payload)
                    if internal is not None:
                        self._unloading.add(payload)
                if internal is None:
                    _resolve(future, UnknownAdapterError(f"adapter {payload!r} is not loaded"))
                    continue
                if self._in_use(internal, batch):
                    deferred.append(command)
                    continue
            runnable.append(command)
        self._commands.extend(deferred)
        return runnable

    def _apply_commands(self, commands: list[tuple[str, Any, asyncio.Future[None]]]) -> None:
        for kind, payload, future in commands:
            try:
                self._load_now(payload) if kind == "load" else self._unload_now(payload)
            except Exception as error:  # noqa: BLE001 - reported to the caller
                _resolve(future, error)
            else:
                _resolve(future, None)

    def _in_use(self, internal: str, batch: RunningBatch) -> bool:
        return any(s.adapter == internal for s in list(batch.sequences) + list(self._pending))

    def _load_now(self, info: AdapterInfo) -> None:
        from peft import PeftModel

        with self._adapters_lock:
            if info.key in self._adapters:
                raise InvalidRequestError(f"adapter {info.key!r} is already loaded", code="adapter_exists")
        self._adapter_counter += 1
        internal = f"adapter{self._adapter_counter}"
        if isinstance(self._model, PeftModel):
            try:
                self._model.load_adapter(info.path, adapter_name=internal, is_trainable=False)
            except Exception:
                if internal in self._model.peft_config:  # half loaded: take it out again
                    with suppress(Exception):
                        self._model.delete_adapter(internal)
                self._reset_peft_mode()
                raise
        else:
            self._model = PeftModel.from_pretrained(
                self._model, info.path, adapter_name=internal, is_trainable=False
            ).eval()
        with self._adapters_lock:
            self._adapters[info.key] = info
            self._internal_names[info.key] = internal
        self._reset_peft_mode()
        log.info("loaded adapter %s from %s", info.key, info.path)

    def _unload_now(self, key: str) -> None:
        with self._adapters_lock:
            internal = self._internal_names.get(key)
        if internal is None:
            raise UnknownAdapterError(f"adapter {key!r} is not loaded")
        if list(self._model.peft_config) == [internal]:
            # the last one: PEFT cannot run without an active adapter, so take the LoRA layers out
            self._model = self._model.unload()
        else:
            self._model.delete_adapter(internal)
        self.prefix_cache.drop_adapter(internal)
        with self._adapters_lock:
            del self._internal_names[key]
            del self._adapters[key]
            self._unloading.discard(key)
        self._reset_peft_mode()
        log.info("unloaded adapter %s", key)

    def _forward(self, sequences: list[Sequence], **inputs: Any) -> torch.Tensor:
        """One forward pass choosing the cheapest path: all base, one adapter, or mixed.

        Batches whose rows are grouped by adapter with base rows first (`RunningBatch` keeps them
        so), all-base and all on one adapter included, run on `LoraRows`: the LoRA layers' forward
        replaced by their base layers plus each adapter's delta on its rows (switching to PEFT's own
        layers and back costs as much as a step). Adapters `LoraRows` cannot apply run PEFT's layers:
        one adapter as PEFT's active adapter, several through PEFT's `adapter_names`."""
        inputs[self._cache_kwarg] = inputs.pop("past_key_values")
        if hasattr(self._model, "disable_adapter"):
            names = {s.adapter for s in sequences}
            runs = _adapter_runs(sequences) if self._slices_supported else None
            if runs is not None:
                self._switch_peft_mode(_ROWS)
                self._lora_rows.set_rows(runs)
            elif len(names) == 1:
                self._switch_peft_mode(names.pop())
            else:
                self._switch_peft_mode(_MIXED)
                inputs["adapter_names"] = [s.adapter for s in sequences]
        return self._model(**inputs, use_cache=True, logits_to_keep=1).logits[:, -1, :]

    def _reset_peft_mode(self) -> None:
        """After a load or unload the layers and the active adapter changed: give the layers their own
        forward back and let the next batch set its mode afresh (on the current set of layers)."""
        self._lora_rows.detach()
        self._lora_rows = LoraRows.of(self._model)
        self._slices_supported = self._lora_rows.supported
        self._peft_mode = None
        self._peft_layers_on = None

    def _switch_peft_mode(self, mode: str) -> None:
        """Set the LoRA layers up for a batch: `LoraRows` in charge (`_ROWS`), PEFT's layers off (all
        rows base, where `LoraRows` cannot apply), one adapter, or PEFT's mixed path.

        Only on a change: turning PEFT's layers on or off walks every LoRA layer, which costs as much
        as a decode step of this small model when done per step (as `disable_adapter()` as a context
        would)."""
        if mode == self._peft_mode:
            return
        if mode == _ROWS:
            self._lora_rows.attach()
        else:
            self._lora_rows.detach()
            self._set_peft_layers(on=mode != BASE_ADAPTER)
            if mode not in (BASE_ADAPTER, _MIXED):
                self._model.set_adapter(mode)
        self._peft_mode = mode

    def _set_peft_layers(self, *, on: bool) -> None:
        """Turn PEFT's LoRA layers on or off, unless they already are."""
        if self._peft_layers_on is on:
            return
        tuner = self._model.base_model
        if on:
            tuner.enable_adapter_layers()
        else:
            tuner.disable_adapter_layers()
        self._peft_layers_on = on


def _adapter_runs(sequences: list[Sequence]) -> list[tuple[str, int, int]] | None:
    """The adapter rows of a batch grouped by adapter with base rows first, as `(adapter, start,
    stop)`; None when the rows are not grouped so."""
    runs = adapter_slices(sequences)
    if runs is None or any(name == BASE_ADAPTER for name, _, _ in runs[1:]):
        return None
    return [run for run in runs if run[0] != BASE_ADAPTER]


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    def settle() -> None:
        if future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    with suppress(RuntimeError):  # the caller's event loop is closed: nobody waits any more
        future.get_loop().call_soon_threadsafe(settle)
