"""Chat completions: pick the variant (router or pin), generate, record the interaction, report metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, replace

import anyio
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from feedback.records import InteractionRecord
from knowledge.prompts import ZANTARA_SYSTEM_PROMPT
from router.bucketing import Variant, hash_user
from router.policy import choose_target
from router.rollout import Rollout
from service.adapters import find_adapter
from service.engines.base import (
    AdapterInfo,
    Delta,
    InvalidRequestError,
    PreparedPrompt,
    SamplingParams,
    UnknownAdapterError,
)
from service.errors import APIError
from service.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    DeltaMessage,
    PromptTokensDetails,
    Usage,
)
from service.state import ServiceState

log = logging.getLogger(__name__)

CANCELLED = "cancelled"
"""`finish_reason` stored for a stream whose client went away before the answer was complete."""

ERROR = "error"
"""`finish_reason` stored for a generation that failed."""

STORED_WAIT_S = 2.0
"""How long a finished stream holds back its `[DONE]` until its interaction left this replica's memory."""


@dataclass(frozen=True)
class Route:
    """Where a request goes: the variant, its adapter (None for base), whether the router chose, and
    the router's target (`base`, `live`, `canary`; `pinned` when the request named its model)."""

    variant: Variant
    adapter: AdapterInfo | None
    routed: bool
    target: str

    @property
    def adapter_key(self) -> str:
        """`NAME@VERSION`, or "" for the base model (as in metric labels)."""
        return self.adapter.key if self.adapter else ""

    @property
    def labels(self) -> tuple[str, str, str]:
        """The metric labels of everything this request is counted in: variant, adapter, target."""
        return (self.variant, self.adapter_key, self.target)

    def headers(self) -> dict[str, str]:
        """`X-Zantara-Variant` and, for an adapter, `X-Zantara-Adapter: NAME@VERSION`. The target (canary
        or live) stays in the metrics and the stored interaction: told to clients, it would let them
        rate one arm and steer the canary guardrail."""
        headers: dict[str, str] = {"X-Zantara-Variant": self.variant}
        if self.adapter is not None:
            headers["X-Zantara-Adapter"] = self.adapter.key
        return headers


def current_rollout(state: ServiceState) -> Rollout:
    """The rollout from the database (through its short cache); while the database is down, the one
    read last, or everyone on the base model if none was ever read: answering comes first."""
    try:
        state.last_rollout = state.rollout.current()
    except SQLAlchemyError as error:
        if state.last_rollout is None:
            log.warning("rollout unknown (%s): routing to the base model", type(error).__name__)
            return Rollout(0.0, None, None, "database unavailable")
        return state.last_rollout
    return state.last_rollout


def route_request(
    state: ServiceState,
    model: str,
    user_key: str | None,
    rng: random.Random | None = None,
    rollout: Rollout | None = None,
) -> Route:
    """Resolve the requested model: the routed alias goes through the canary router, a name pins.
    Reads the database unless `rollout` is given: then call it off the event loop."""
    engine = state.engine
    if model == state.settings.served_model_alias:
        rollout = rollout or current_rollout(state)

        def loaded(name: str) -> str | None:
            found = find_adapter(engine, name)
            return found.key if found else None

        decision = choose_target(user_key, rollout, state.settings.rollout_salt, rng, loaded=loaded)
        adapter = find_adapter(engine, decision.adapter) if decision.adapter else None
        if adapter is None:
            return Route("base", None, True, "base")
        return Route("tuned", adapter, True, decision.target)
    if model in (state.base_model_id, engine.model_name):
        return Route("base", None, False, "pinned")
    adapter = find_adapter(engine, model)
    if adapter is None:
        raise APIError(
            404,
            f"The model {model!r} does not exist. GET /v1/models lists what is served.",
            code="model_not_found",
            param="model",
        )
    return Route("tuned", adapter, False, "pinned")


class ChatCompletions:
    """Serves one chat completion request end to end; `key_hash` is the caller's API key as stored
    with its answers (`caller_key_hash`), None when `/v1` is open."""

    def __init__(self, state: ServiceState, key_hash: str | None = None) -> None:
        self._state = state
        self._key_hash = key_hash

    def _messages(self, request: ChatCompletionRequest) -> list[dict[str, str]]:
        messages = [m.for_template() for m in request.messages]
        if self._state.settings.inject_system_prompt and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": ZANTARA_SYSTEM_PROMPT})
        return messages

    def _sampling(self, request: ChatCompletionRequest) -> SamplingParams:
        max_tokens = request.requested_max_tokens()
        limit = self._state.settings.max_tokens_limit
        if max_tokens is not None and max_tokens > limit:
            raise APIError(
                400,
                f"max_tokens must be at most {limit}, got {max_tokens}.",
                code="invalid_value",
                param="max_tokens",
            )
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=request.stop_strings(),
            seed=request.seed,
        )

    async def prepare(
        self, request: ChatCompletionRequest, user_key: str | None
    ) -> tuple[Route, PreparedPrompt, SamplingParams]:
        """Validate and route before anything is generated (errors here are clean 4xx). Routing may
        query the database and the chat template tokenises: then both run in a worker thread, never
        on the event loop. When neither blocks (the rollout is cached and a remote engine renders the
        prompt) they run here: the thread hop alone cost 2 ms of a router tier's added latency."""
        sampling = self._sampling(request)
        state = self._state
        routed = request.model == state.settings.served_model_alias
        rollout = state.rollout.cached() if routed else None
        if (routed and rollout is None) or state.engine.prepare_blocks:
            return await run_in_threadpool(self._prepare_blocking, request, user_key, sampling, rollout)
        return self._prepare_blocking(request, user_key, sampling, rollout)

    def _prepare_blocking(
        self,
        request: ChatCompletionRequest,
        user_key: str | None,
        sampling: SamplingParams,
        rollout: Rollout | None,
    ) -> tuple[Route, PreparedPrompt, SamplingParams]:
        route = route_request(self._state, request.model, user_key, rollout=rollout)
        prompt = self._state.engine.prepare(self._messages(request), sampling)
        return route, prompt, sampling

    async def complete(
        self,
        request: ChatCompletionRequest,
        user_key: str | None,
        route: Route,
        prompt: PreparedPrompt,
        sampling: SamplingParams,
    ) -> ChatCompletion:
        """Generate the whole answer, store the interaction, return the OpenAI response."""
        started = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        last = Delta("", 0, "stop")
        try:
            async for delta in self._state.engine.stream(prompt, sampling, _key(route), whole=True):
                if first is None and not delta.whole:
                    first = time.perf_counter()
                parts.append(delta.text)
                last = delta
        except (InvalidRequestError, UnknownAdapterError):
            raise  # refused, not failed: a remote engine's server checks the prompt once it is sent
        except Exception:
            self._failed(
                request, user_key, route, prompt, "".join(parts), last, started, first, streamed=False
            )
            raise
        answer = "".join(parts)
        interaction_id = _new_id()
        self._finish(
            interaction_id, request, user_key, route, prompt, answer, last, started, first, streamed=False
        )
        return ChatCompletion(
            id=interaction_id,
            model=request.model,
            choices=[
                Choice(message=AssistantMessage(content=answer), finish_reason=last.finish_reason or "stop")
            ],
            usage=_usage(prompt, last),
        )

    async def stream(
        self,
        request: ChatCompletionRequest,
        user_key: str | None,
        route: Route,
        prompt: PreparedPrompt,
        sampling: SamplingParams,
    ) -> AsyncIterator[str]:
        """Start generating; the first token is awaited here so failures surface before the 200."""
        started = time.perf_counter()
        deltas = self._state.engine.stream(prompt, sampling, _key(route))
        try:
            first_delta = await anext(deltas)
        except (InvalidRequestError, UnknownAdapterError):
            raise  # refused, not failed (see `complete`)
        except Exception:
            self._failed(
                request, user_key, route, prompt, "", Delta("", 0, None), started, None, streamed=True
            )
            raise
        first = time.perf_counter()
        return self._events(request, user_key, route, prompt, deltas, first_delta, started, first)

    async def _events(
        self,
        request: ChatCompletionRequest,
        user_key: str | None,
        route: Route,
        prompt: PreparedPrompt,
        deltas: AsyncGenerator[Delta, None],
        first_delta: Delta,
        started: float,
        first: float,
    ) -> AsyncIterator[str]:
        interaction_id, created, model = _new_id(), int(time.time()), request.model

        def chunk(
            delta: DeltaMessage, finish: str | None = None, usage: Usage | None = None, choices: bool = True
        ) -> str:
            body = ChatCompletionChunk(
                id=interaction_id,
                created=created,
                model=model,
                usage=usage,
                choices=[ChunkChoice(delta=delta, finish_reason=finish)] if choices else [],
            )
            return body.model_dump_json(exclude_none=False)

        parts: list[str] = []
        last = first_delta
        try:
            yield chunk(DeltaMessage(role="assistant", content=""))
            delta: Delta | None = first_delta
            while delta is not None:
                last = delta
                if delta.text:
                    parts.append(delta.text)
                    yield chunk(DeltaMessage(content=delta.text))
                if delta.finish_reason:
                    break
                delta = await anext(deltas, None)
        except (asyncio.CancelledError, GeneratorExit):
            # the client went away: keep what it was shown, say so, and let the cancellation go on
            self._finish(
                interaction_id,
                request,
                user_key,
                route,
                prompt,
                "".join(parts),
                replace(last, finish_reason=CANCELLED),
                started,
                first,
                streamed=True,
                status=CANCELLED,
            )
            raise
        except Exception as error:  # noqa: BLE001 - reported in-band: the 200 is already sent
            log.error("stream failed: %s", type(error).__name__)
            self._failed(
                request, user_key, route, prompt, "".join(parts), last, started, first, streamed=True
            )
            yield json.dumps(
                {
                    "error": {
                        "message": "Generating this answer failed; the incident is logged.",
                        "type": "api_error",
                        "param": None,
                        "code": "generation_failed",
                    }
                }
            )
            return
        finally:
            # a client that went away frees its batch slot at once; shielded, since the cancellation
            # that brought us here would otherwise cancel the clean-up too
            with anyio.CancelScope(shield=True):
                await deltas.aclose()
        # known to this replica (and on its way to the database) before the client sees the end, so a
        # rating sent as soon as the stream ends finds it
        self._finish(
            interaction_id,
            request,
            user_key,
            route,
            prompt,
            "".join(parts),
            last,
            started,
            first,
            streamed=True,
        )
        yield chunk(DeltaMessage(), finish=last.finish_reason or "stop")
        if request.stream_options and request.stream_options.include_usage:
            yield chunk(DeltaMessage(), usage=_usage(prompt, last), choices=False)
        await self._stored(interaction_id)
        yield "[DONE]"

    async def _stored(self, interaction_id: str) -> None:
        """Wait (up to `STORED_WAIT_S`) until the feedback writer stored the interaction in the database
        or spooled it: a rating sent as soon as the stream ends may reach another replica (the router
        tier runs several), which finds the answer only in the database. The writer takes it at once
        (an outage spools it), so this waits one insert."""
        if not await self._state.feedback.left_memory(interaction_id, STORED_WAIT_S):
            log.warning(
                "interaction %s not stored within %.0fs; ending its stream", interaction_id, STORED_WAIT_S
            )

    def _failed(
        self,
        request: ChatCompletionRequest,
        user_key: str | None,
        route: Route,
        prompt: PreparedPrompt,
        answer: str,
        last: Delta,
        started: float,
        first: float | None,
        *,
        streamed: bool,
    ) -> None:
        """Record a failed generation as an interaction with finish_reason `error` (what was shown so
        far as its answer): every replica's errors then count in the canary guardrail's error rate."""
        self._finish(
            _new_id(),
            request,
            user_key,
            route,
            prompt,
            answer,
            replace(last, finish_reason=ERROR),
            started,
            first,
            streamed=streamed,
            status=ERROR,
        )

    def _finish(
        self,
        interaction_id: str,
        request: ChatCompletionRequest,
        user_key: str | None,
        route: Route,
        prompt: PreparedPrompt,
        answer: str,
        last: Delta,
        started: float,
        first: float | None,
        *,
        streamed: bool,
        status: str = "ok",
    ) -> None:
        """Count the request and hand its interaction to the feedback writer (returns at once)."""
        latency = time.perf_counter() - started
        metrics = self._state.metrics
        labels = route.labels
        metrics.requests.labels(*labels, status).inc()
        metrics.request_latency.labels(*labels).observe(latency)
        if first is not None:
            metrics.time_to_first_token.labels(*labels).observe(first - started)
        metrics.prompt_tokens.labels(*labels).inc(prompt.prompt_tokens)
        metrics.cached_prompt_tokens.labels(*labels).inc(last.cached_tokens)
        metrics.generated_tokens.labels(*labels).inc(last.completion_tokens)
        settings = self._state.settings
        record = InteractionRecord(
            id=interaction_id,
            user_hash=hash_user(user_key, settings.ensure_user_hash_key()) if user_key else None,
            model_requested=request.model,
            routed=route.routed,
            variant=route.variant,
            target=route.target,
            adapter_name=route.adapter.name if route.adapter else None,
            adapter_version=route.adapter.version if route.adapter else None,
            messages=[m.for_template() for m in request.messages],
            answer=answer,
            finish_reason=last.finish_reason or "stop",
            prompt_tokens=prompt.prompt_tokens,
            completion_tokens=last.completion_tokens,
            latency_s=latency,
            ttft_s=None if first is None else first - started,
            params={
                "temperature": request.temperature,
                "top_p": request.top_p,
                "max_tokens": prompt.max_tokens,
                "stop": list(request.stop_strings()),
                "seed": request.seed,
            },
            streamed=streamed,
            key_hash=self._key_hash,
        )
        self._state.feedback.record(record)


def _key(route: Route) -> str | None:
    return route.adapter.key if route.adapter else None


def _new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def _usage(prompt: PreparedPrompt, last: Delta) -> Usage:
    return Usage(
        prompt_tokens=prompt.prompt_tokens,
        completion_tokens=last.completion_tokens,
        total_tokens=prompt.prompt_tokens + last.completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=last.cached_tokens),
    )
