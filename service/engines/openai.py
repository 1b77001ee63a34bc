"""Remote engine: one or more OpenAI-compatible servers (`vllm serve --enable-lora`, or our own service).

The router, feedback and review tier then runs on CPUs apart from the GPU pods. Each request goes to
one upstream (streamed, or as one response for a client that does not stream), picked by the fewest
requests in flight (ties in turn), over pooled `httpx2` connections. A request is tried on the next
upstream only when it never left this process (the connection could not be made, or no pooled
connection came free in time): once it was sent, the upstream may be generating, so a failure is
reported, never retried. Closing the stream closes the upstream connection, which makes vLLM abort
the request.

The base model and the adapters come from the upstreams' `GET /v1/models` (adapters carry `parent`;
their served names are our `NAME@VERSION` keys). Loads and unloads are pushed to every upstream with
vLLM's runtime endpoints, with the upstreams' admin token (`ZANTARA_UPSTREAM_ADMIN_TOKEN`; the chat key
`ZANTARA_UPSTREAM_API_KEY` only when none is set, as `vllm serve --api-key` takes one key for both); an
upstream that lost a runtime-loaded adapter (it restarted) gets it pushed again when it answers 404 for
it. A push that fails for any other reason than a refused adapter is an `EngineUnavailableError` (503).
Prompts are rendered, checked and counted by the upstream.

The client is `httpx2` (pydantic's continuation of httpx, the same API): httpx 0.28's connection pool
does work per request that grows with the number of pooled connections (encode/httpx#3215). Against
the benchmark's upstream, 64 concurrent requests got 86 answers/s through httpx and 691/s through
httpx2, on this 2-core machine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import httpx2

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
)
from service.settings import Settings

log = logging.getLogger(__name__)

NOT_SENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout)
"""Failures that prove the request never reached the upstream: only these are retried elsewhere."""
DOWN_S = 2.0
"""How long an upstream that refused a connection is passed over while others are up."""


@dataclass(eq=False)
class Upstream:
    """One OpenAI-compatible server: its `.../v1` base URL, pooled client and load."""

    url: str
    client: httpx2.AsyncClient
    index: int
    in_flight: int = 0
    down_until: float = 0.0


@dataclass(frozen=True)
class _Models:
    """What one upstream's `/v1/models` says."""

    base: str
    adapters: dict[str, str]  # served name -> path on the upstream


class OpenAIEngine:
    """The engine that fronts OpenAI-compatible upstreams."""

    def __init__(
        self,
        urls: list[str],
        *,
        api_key: str = "",
        admin_token: str = "",
        timeout_s: float = 120.0,
        connect_timeout_s: float = 3.0,
        max_connections: int = 256,
        default_max_tokens: int = 256,
        preferred_base: str | None = None,
        discovery_retry_s: float = 1.0,
    ) -> None:
        if not urls:
            raise ValueError(
                "ZANTARA_ENGINE=openai needs ZANTARA_UPSTREAM_URLS (comma-separated .../v1 URLs)"
            )
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        admin = admin_token or api_key
        self._admin_headers = {"Authorization": f"Bearer {admin}"} if admin else {}
        timeout = httpx2.Timeout(timeout_s, connect=connect_timeout_s)
        limits = httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._upstreams = [
            Upstream(
                url.rstrip("/"),
                httpx2.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=timeout, limits=limits),
                index,
            )
            for index, url in enumerate(urls)
        ]
        self._default_max_tokens = default_max_tokens
        self._preferred_base = preferred_base
        self._discovery_retry_s = discovery_retry_s
        self._base: str | None = None
        self._adapters: dict[str, AdapterInfo] = {}
        self._loading: set[str] = set()
        self._turn = 0
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIEngine:
        """The engine as `ZANTARA_UPSTREAM_*` configure it."""
        return cls(
            settings.upstream_urls,
            api_key=settings.upstream_api_key,
            admin_token=settings.upstream_admin_token,
            timeout_s=settings.upstream_timeout_s,
            connect_timeout_s=settings.upstream_connect_timeout_s,
            max_connections=settings.upstream_max_connections,
            default_max_tokens=settings.default_max_tokens,
            preferred_base=settings.base_model,
        )

    @property
    def model_name(self) -> str:
        """The upstreams' base model as `/v1/models` names it (empty until discovered)."""
        return self._base or ""

    @property
    def ready(self) -> bool:
        """True once an upstream said which models it serves, until `close`."""
        return self._base is not None and not self._closed

    @property
    def alive(self) -> bool:
        """Always True: an upstream that is down is not cured by restarting this process."""
        return True

    @property
    def upstreams(self) -> list[Upstream]:
        """The upstreams, in configured order."""
        return list(self._upstreams)

    async def start(self) -> None:
        """Learn the base model and adapters from the upstreams, waiting until one of them answers."""
        while not await self.refresh():
            log.warning("no upstream answered GET /models yet: %s", [u.url for u in self._upstreams])
            await asyncio.sleep(self._discovery_retry_s)

    async def refresh(self) -> bool:
        """Read every upstream's `/v1/models`: the base model from the first that answers, the adapters
        any of them serves. False when none answered."""
        found = [m for m in await asyncio.gather(*(self._models(u) for u in self._upstreams)) if m]
        if not found:
            return False
        self._base = found[0].base
        adapters: dict[str, AdapterInfo] = {}
        for models in found:
            for served, path in models.adapters.items():
                name, _, version = served.partition("@")
                if not version:
                    log.warning("ignoring upstream adapter %r: serve adapters as NAME@VERSION", served)
                    continue
                known = self._adapters.get(served)  # loaded through here: its path on the upstreams
                adapters.setdefault(served, known or AdapterInfo(name, version, path))
        self._adapters = adapters
        return True

    async def _models(self, upstream: Upstream) -> _Models | None:
        try:
            response = await upstream.client.get("/models")
            response.raise_for_status()
            return _read_models(response.json()["data"], self._preferred_base)
        except (httpx2.HTTPError, ValueError, KeyError, TypeError) as error:
            log.warning("GET %s/models failed: %s", upstream.url, error)
            return None

    @property
    def prepare_blocks(self) -> bool:
        """The upstream renders the messages; `prepare` only keeps them."""
        return False

    def prepare(self, messages: list[dict[str, str]], sampling: SamplingParams) -> PreparedPrompt:
        """Keep the messages for the upstream, which renders, checks and counts them."""
        if not self.ready:
            raise EngineNotReadyError("the upstream models are not known yet")
        max_tokens = sampling.max_tokens if sampling.max_tokens is not None else self._default_max_tokens
        return PreparedPrompt((), max_tokens, messages=tuple(dict(m) for m in messages))

    async def stream(
        self, prompt: PreparedPrompt, sampling: SamplingParams, adapter: str | None, *, whole: bool = False
    ) -> AsyncGenerator[Delta, None]:
        """Stream the answer of the base (`adapter=None`) or of the adapter served as `NAME@VERSION`;
        with `whole`, ask the upstream for one response and yield it as one `Delta` (no events to send
        and parse: 2.5 ms less added latency per answer, measured against the benchmark's upstream)."""
        if not self.ready:
            raise EngineNotReadyError("the upstream models are not known yet")
        if adapter is not None and adapter not in self._adapters:
            raise UnknownAdapterError(f"adapter {adapter!r} is not loaded")
        body = _request_body(prompt, sampling, adapter or self.model_name, stream=not whole)
        upstream, response = await self._send(body, adapter)
        try:
            async for delta in _whole(response, prompt) if whole else _deltas(response, prompt):
                yield delta
        except httpx2.TimeoutException:
            raise GenerationError(f"{upstream.url} sent nothing for too long") from None
        except httpx2.HTTPError as error:
            raise GenerationError(f"the stream from {upstream.url} broke: {type(error).__name__}") from None
        finally:
            await response.aclose()  # before the answer ended: closes the connection, vLLM aborts
            upstream.in_flight -= 1

    async def _send(self, body: dict[str, object], adapter: str | None) -> tuple[Upstream, httpx2.Response]:
        """Send to the least busy upstream; on to the next only while the request was never sent. The
        response is open and OK; the chosen upstream's `in_flight` counts it until the caller is done."""
        tried: set[Upstream] = set()
        while (upstream := self._pick(tried)) is not None:
            tried.add(upstream)
            upstream.in_flight += 1
            try:
                return upstream, await self._open(upstream, body, adapter)
            except NOT_SENT as error:
                upstream.in_flight -= 1
                upstream.down_until = time.monotonic() + DOWN_S
                log.warning(
                    "%s unreachable (%s); trying the next upstream", upstream.url, type(error).__name__
                )
            except httpx2.TimeoutException:
                upstream.in_flight -= 1
                raise GenerationError(f"{upstream.url} did not answer in time") from None
            except httpx2.HTTPError as error:
                upstream.in_flight -= 1
                raise GenerationError(f"{upstream.url} failed: {type(error).__name__}") from None
            except BaseException:
                upstream.in_flight -= 1
                raise
        raise EngineUnavailableError("no upstream inference server could be reached; retry shortly")

    async def _open(
        self, upstream: Upstream, body: dict[str, object], adapter: str | None
    ) -> httpx2.Response:
        """POST the chat and return the open 200 response; an upstream that lost the adapter (404) gets
        it pushed again and the request once more (nothing was generated)."""
        response = await self._post(upstream, body)
        if response.status_code == 404 and adapter is not None and await self._heal(upstream, adapter):
            response = await self._post(upstream, body)
        if response.status_code != 200:
            raise _status_error(upstream, response)
        return response

    async def _post(self, upstream: Upstream, body: dict[str, object]) -> httpx2.Response:
        """POST the chat: the 200 response open for streaming, any other one read and closed."""
        request = upstream.client.build_request("POST", "/chat/completions", json=body)
        response = await upstream.client.send(request, stream=True)
        if response.status_code != 200:
            await response.aread()
            await response.aclose()
        return response

    def _pick(self, tried: set[Upstream]) -> Upstream | None:
        """The upstream with the fewest requests in flight among those not tried (and not recently
        unreachable, while others are up); ties go round robin."""
        left = [u for u in self._upstreams if u not in tried]
        if not left:
            return None
        now = time.monotonic()
        candidates = [u for u in left if u.down_until <= now] or left
        turn, count = self._turn, len(self._upstreams)
        self._turn += 1
        return min(candidates, key=lambda u: (u.in_flight, (u.index - turn) % count))

    async def _heal(self, upstream: Upstream, key: str) -> bool:
        """Push an adapter again to an upstream that lost it; True when it now has it."""
        info = self._adapters.get(key)
        if info is None or info.path in ("", key):  # listed by an upstream that shows no path
            return False
        log.warning("%s lost adapter %s; loading it again", upstream.url, key)
        outcome = await self._push_load(upstream, info)
        return outcome is None

    async def load_adapter(self, info: AdapterInfo) -> None:
        """Load `info.path` (a path on the upstreams) under `NAME@VERSION` on every upstream.

        Upstreams that already serve it count as loaded. When a reachable upstream refuses, the ones
        that took it unload it again and the refusal is raised; unreachable upstreams get it pushed when
        they first answer 404 for it."""
        if info.key in self._adapters or info.key in self._loading:
            raise InvalidRequestError(f"adapter {info.key!r} is already loaded", code="adapter_exists")
        self._loading.add(info.key)
        try:
            outcomes = await asyncio.gather(*(self._push_load(u, info) for u in self._upstreams))
            refusals = [o for o in outcomes if isinstance(o, EngineError)]
            if refusals or all(o == "unreachable" for o in outcomes):
                took = [u for u, o in zip(self._upstreams, outcomes, strict=True) if o is None]
                await asyncio.gather(*(self._push_unload(u, info.key) for u in took))
                if refusals:
                    raise refusals[0]
                raise EngineUnavailableError("no upstream inference server could be reached; retry shortly")
            self._adapters[info.key] = info
        finally:
            self._loading.discard(info.key)

    async def unload_adapter(self, key: str) -> None:
        """Stop routing to the adapter here, then unload it from every upstream."""
        if self._adapters.pop(key, None) is None:
            raise UnknownAdapterError(f"adapter {key!r} is not loaded")
        await asyncio.gather(*(self._push_unload(u, key) for u in self._upstreams))

    async def _push_load(self, upstream: Upstream, info: AdapterInfo) -> EngineError | str | None:
        """None when the upstream serves the adapter now, "unreachable", or its refusal: a 400/404/422 an
        `InvalidRequestError`, anything else (a wrong admin token included) an `EngineUnavailableError`."""
        body = {"lora_name": info.key, "lora_path": info.path}
        try:
            response = await upstream.client.post(
                "/load_lora_adapter", json=body, headers=self._admin_headers
            )
        except httpx2.HTTPError as error:
            log.warning("loading %s on %s failed: %s", info.key, upstream.url, type(error).__name__)
            return "unreachable"
        if response.status_code == 200:
            return None
        message, _, _ = _error_fields(response)
        if response.status_code == 400 and "already" in message:
            return None
        if response.status_code in (400, 404, 422):
            return InvalidRequestError(f"{upstream.url}: {message}", code="invalid_adapter", param="path")
        log.error("loading %s on %s: %s %s", info.key, upstream.url, response.status_code, message)
        if response.status_code in (401, 403):
            return EngineUnavailableError(
                f"the inference server {upstream.url} refused the adapter load ({response.status_code}): "
                "ZANTARA_UPSTREAM_ADMIN_TOKEN must be its admin token"
            )
        return EngineUnavailableError(
            f"the inference server {upstream.url} could not load the adapter ({response.status_code}); "
            "retry shortly"
        )

    async def _push_unload(self, upstream: Upstream, key: str) -> None:
        try:
            response = await upstream.client.post(
                "/unload_lora_adapter", json={"lora_name": key}, headers=self._admin_headers
            )
        except httpx2.HTTPError as error:
            log.warning("unloading %s on %s failed: %s", key, upstream.url, type(error).__name__)
            return
        if response.status_code not in (200, 404):
            log.warning("unloading %s on %s: %s %s", key, upstream.url, response.status_code, response.text)

    def adapters(self) -> list[AdapterInfo]:
        """The adapters the upstreams serve, then those loaded through this engine, in that order."""
        return list(self._adapters.values())

    async def close(self) -> None:
        """Close every pooled connection."""
        self._closed = True
        await asyncio.gather(*(u.client.aclose() for u in self._upstreams))


def _read_models(cards: list[dict[str, object]], preferred_base: str | None) -> _Models:
    """The base model and the adapters of a `/v1/models` list: adapters carry `parent`; the base is
    their parent, else the preferred name, else the model whose id is its own root (a served alias,
    such as our `zantara`, names another root), else the first."""
    adapters = {str(c["id"]): str(c.get("root") or "") for c in cards if c.get("parent")}
    bases = [c for c in cards if not c.get("parent")]
    parents = {str(c["parent"]) for c in cards if c.get("parent")}
    names = [str(c["id"]) for c in bases]
    chosen = next((n for n in names if n in parents), None)
    if chosen is None and preferred_base in names:
        chosen = preferred_base
    if chosen is None:
        chosen = next((str(c["id"]) for c in bases if c.get("root") == c["id"]), names[0] if names else None)
    if chosen is None:
        raise ValueError("the upstream lists no base model")
    return _Models(chosen, adapters)


def _request_body(
    prompt: PreparedPrompt, sampling: SamplingParams, model: str, *, stream: bool
) -> dict[str, object]:
    body: dict[str, object] = {
        "model": model,
        "messages": list(prompt.messages),
        "max_tokens": prompt.max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    return body


async def _deltas(response: httpx2.Response, prompt: PreparedPrompt) -> AsyncGenerator[Delta, None]:
    """The answer's pieces from the upstream's server-sent events; the last carries the finish reason
    and the usage the upstream reports after it (the prompt's count goes into `prompt.counted`)."""
    pieces, finish, usage, done = 0, None, None, False
    async for line in response.aiter_lines():  # read to the end: only a whole response frees its connection
        if done or not line.startswith("data:"):
            continue
        payload = line[len("data:") :].strip()
        if payload == "[DONE]":
            done = True
            continue
        try:
            chunk = json.loads(payload)
        except ValueError:
            raise GenerationError("the upstream sent an unreadable event") from None
        if "error" in chunk:
            raise GenerationError(f"the upstream failed mid-answer: {_message(chunk['error'])}")
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            text = (choice.get("delta") or {}).get("content") or ""
            if text:
                pieces += 1
                yield Delta(text, pieces)
            finish = choice.get("finish_reason") or finish
    if finish is None:
        raise GenerationError("the upstream ended the stream before the answer was complete")
    completion, cached = _counted(usage, prompt, pieces)
    yield Delta("", completion, finish, cached)


async def _whole(response: httpx2.Response, prompt: PreparedPrompt) -> AsyncGenerator[Delta, None]:
    """The answer of a non-streamed chat completion as one `Delta` (usage counted as in `_deltas`)."""
    try:
        body = json.loads(await response.aread())
        choice = body["choices"][0]
        text = (choice.get("message") or {}).get("content") or ""
        finish = choice.get("finish_reason")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise GenerationError("the upstream sent an unreadable answer") from None
    if not finish:
        raise GenerationError("the upstream's answer has no finish reason")
    completion, cached = _counted(body.get("usage"), prompt, 0)
    yield Delta(text, completion, finish, cached, whole=True)


def _counted(usage: dict[str, Any] | None, prompt: PreparedPrompt, pieces: int) -> tuple[int, int]:
    """(completion tokens, cached prompt tokens) from the upstream's usage, the prompt's count put into
    `prompt.counted`; without usage, `pieces` and 0."""
    if not usage:
        return pieces, 0
    prompt.counted.tokens = int(usage.get("prompt_tokens") or 0)
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    return int(usage.get("completion_tokens") or pieces), cached


def _message(error: object) -> str:
    return str(error.get("message", error)) if isinstance(error, dict) else str(error)


def _error_fields(response: httpx2.Response) -> tuple[str, str | None, str | None]:
    """(message, code, param) of an error response: OpenAI's envelope, vLLM's older flat one, or text."""
    try:
        body = response.json()
    except ValueError:
        return response.text or response.reason_phrase, None, None
    error = body.get("error", body) if isinstance(body, dict) else body
    if not isinstance(error, dict):
        return str(error), None, None
    code, param = error.get("code"), error.get("param")
    return (
        _message(error),
        code if isinstance(code, str) else None,
        param if isinstance(param, str) else None,
    )


def _status_error(upstream: Upstream, response: httpx2.Response) -> EngineError:
    """Our error for an upstream's error status: 400/413/422 the request, 404 the model, 429/503 busy
    or starting (503 here too), anything else a failed generation."""
    message, code, param = _error_fields(response)
    status = response.status_code
    if status in (400, 413, 422):
        return InvalidRequestError(message, code=code or "invalid_request", param=param)
    if status == 404:
        return UnknownAdapterError(message)
    log.error("%s answered %s: %s", upstream.url, status, message)
    if status in (429, 503):
        return EngineUnavailableError(f"the inference server is busy or starting ({status}); retry shortly")
    return GenerationError(f"the inference server answered {status}")
