"""Request limits: body size (413), chat requests in flight per caller (429) and over all callers (503),
and the configurable bounds of a chat request, enforced when the body is validated and stated in the
OpenAPI schema.

Both middlewares are pure ASGI (Starlette's `BaseHTTPMiddleware` would buffer streamed answers), and every
refusal is in OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import anyio
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.deps import valid_api_key
from service.errors import error_response
from service.protocol import ErrorResponse, RequestLimits, request_limits
from service.settings import Settings

CHAT_PATH = "/v1/chat/completions"
STREAM_EVENT = {
    "type": "object",
    "description": "One server-sent event of a streamed answer (`stream: true`).",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "string",
            "description": "A `ChatCompletionChunk` as JSON; `[DONE]` ends the stream; an `ErrorResponse` "
            "as JSON if generation fails after the 200.",
        },
        "event": {"type": "string"},
    },
}
"""How each event of `text/event-stream` is documented (before OpenAPI 3.2 `schema` describes one event)."""
RETRY_AFTER_S = "1"
"""`Retry-After` of a refused chat request: a slot frees as soon as one answer ends."""


class BodyTooLarge(HTTPException):
    """The request body is larger than `ZANTARA_MAX_BODY_BYTES` (raised while it is read)."""

    code = "request_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than the limit of {limit} bytes.")


class BodySizeLimit:
    """Refuse bodies over `max_bytes` with a 413 before they are parsed: at once when `Content-Length`
    says so, else as soon as the bytes received (chunked uploads included) pass the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared length, then count the body as the app reads it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _refuse(BodyTooLarge(self.max_bytes), scope, receive, send)
            return
        received, started = 0, False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as too_large:  # read outside a route (by a middleware): answer here
            if started:
                raise
            await _refuse(too_large, scope, receive, send)


async def _refuse(error: BodyTooLarge, scope: Scope, receive: Receive, send: Send) -> None:
    response = error_response(error.status_code, str(error.detail), code=error.code)
    await response(scope, receive, send)


class ChatRequestLimits:
    """Makes the app's `RequestLimits` the ones chat bodies are validated against, and bounds the chat
    completions in flight, streamed or not: `per_caller` at a time per caller (its API key when it is
    one of `api_keys`, else its client address), beyond which a request gets a 429, and `in_flight`
    over all callers (generating or waiting for the engine), beyond which it gets a 503. Both answer at
    once, before the body is parsed, with `Retry-After`; 0 turns a bound off.

    A slot is taken once the body has arrived and given back when the response ends, whether the answer
    finished, failed or the client went away: as the last bytes are sent, or when the route returns
    without sending them. A non-streamed request whose client goes away is cancelled, so its generation
    stops (a streamed answer's response notices that itself)."""

    def __init__(
        self, app: ASGIApp, limits: RequestLimits, *, per_caller: int, in_flight: int, api_keys: list[str]
    ) -> None:
        self.app, self.limits = app, limits
        self.per_caller, self.in_flight, self.api_keys = per_caller, in_flight, api_keys
        self.callers: Counter[str] = Counter()
        self.running = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Set the request limits; for a chat completion, take a slot or refuse."""
        token = request_limits.set(self.limits)
        try:
            if scope["type"] == "http" and _is_chat(scope):
                await self._bounded(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        finally:
            request_limits.reset(token)

    async def _bounded(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:  # the client left before sending the whole body: nobody to answer
            return
        replay = _replaying(body, receive)
        caller = self._caller(scope)
        refusal = self._refusal(caller)
        if refusal is not None:
            status, response = refusal
            _count_refused(scope, status)
            await response(scope, replay, send)
            return
        self.callers[caller] += 1
        self.running += 1
        held = True

        def give_back() -> None:
            nonlocal held
            if held:
                held = False
                self.running -= 1
                self.callers[caller] -= 1
                if not self.callers[caller]:
                    del self.callers[caller]

        async def send_then_give_back(message: Message) -> None:
            # given back before the answer's last bytes leave: a client that has read the whole answer
            # may send the next request at once, while the response's own tasks still wind down
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                give_back()
            await send(message)

        try:
            if _asks_for_stream(body):
                await self.app(scope, replay, send_then_give_back)
            else:
                await _cancelled_if_client_leaves(self.app, scope, replay, receive, send_then_give_back)
        finally:
            give_back()

    def _caller(self, scope: Scope) -> str:
        """The API key sent when it is a configured one, else the client's address (from a trusted
        proxy's `X-Forwarded-For`, as uvicorn sets it): a bearer string that is no key counts as its
        sender's address, so made-up keys buy no extra slots."""
        key = valid_api_key(Headers(scope=scope).get("authorization"), self.api_keys)
        if key is not None:
            return "key:" + key
        client = scope.get("client")
        return f"addr:{client[0] if client else ''}"

    def _refusal(self, caller: str) -> tuple[str, JSONResponse] | None:
        """The refusal's metric status and answer when `caller` or the service is at its bound."""
        if self.per_caller and self.callers[caller] >= self.per_caller:
            return "rejected", error_response(
                429,
                f"Too many requests in flight for this API key or client (limit {self.per_caller}); "
                "retry when one of them has finished.",
                code="too_many_requests",
                headers={"Retry-After": RETRY_AFTER_S},
            )
        if self.in_flight and self.running >= self.in_flight:
            return "overloaded", error_response(
                503,
                "The service is at its capacity; retry shortly.",
                code="overloaded",
                headers={"Retry-After": RETRY_AFTER_S},
            )
        return None


async def _cancelled_if_client_leaves(
    app: ASGIApp, scope: Scope, replay: Receive, receive: Receive, send: Send
) -> None:
    """Run `app` until it has answered, or until the client goes away: then it is cancelled (the
    engine drops a request whose consumer is gone), since nobody is left to read the answer."""
    answered = False

    async def watched_send(message: Message) -> None:
        nonlocal answered
        answered = answered or (message["type"] == "http.response.body" and not message.get("more_body"))
        await send(message)

    async def watch(cancel_scope: anyio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not answered:  # uvicorn also says "disconnect" once the answer is complete
            cancel_scope.cancel()

    with anyio.CancelScope() as cancel_scope:
        watcher = asyncio.create_task(watch(cancel_scope))
        try:
            await app(scope, replay, watched_send)
        finally:
            watcher.cancel()


def _is_chat(scope: Scope) -> bool:
    return bool(scope["method"] == "POST" and scope["path"].rstrip("/") == CHAT_PATH)


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body, or None when the client left before sending it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the already read body to the app, then passes on (disconnects)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _asks_for_stream(body: bytes) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False  # the route answers the malformed body
    return isinstance(data, dict) and data.get("stream") is True


def _count_refused(scope: Scope, status: str) -> None:
    """Count the refusal with the other requests refused before generation (`variant="none"`)."""
    state = getattr(scope["app"].state, "zantara", None)
    if state is not None:
        state.metrics.count_refused(status)


def request_limits_of(settings: Settings) -> RequestLimits:
    """The chat request bounds configured in `settings`."""
    return RequestLimits(
        max_tokens=settings.max_tokens_limit,
        max_messages=settings.max_messages,
        max_message_chars=settings.max_message_chars,
    )


def install_limits(app: FastAPI, settings: Settings) -> None:
    """Add the limit middlewares (body size outermost); `state_limits` states them in the OpenAPI schema."""
    limits = request_limits_of(settings)
    app.add_middleware(
        ChatRequestLimits,
        limits=limits,
        per_caller=settings.max_concurrent_requests_per_key,
        in_flight=settings.max_concurrent_requests,
        api_keys=settings.api_keys,
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)


def state_limits(schema: dict[str, Any], limits: RequestLimits) -> dict[str, Any]:
    """Write the configured bounds into a FastAPI OpenAPI document, declare OpenAI's error envelope as the
    body of every 4xx answer (FastAPI documents its own `{"detail"}` shape for 422) and the streamed answer
    of chat completions."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    request = components.get("ChatCompletionRequest")
    if request is not None:
        fields = request["properties"]
        fields["messages"]["maxItems"] = limits.max_messages
        for name in ("max_tokens", "max_completion_tokens"):
            _branch(fields[name], "integer")["maximum"] = limits.max_tokens
        _branch(components["ChatMessage"]["properties"]["content"], "string")["maxLength"] = (
            limits.max_message_chars
        )
        components["TextPart"]["properties"]["text"]["maxLength"] = limits.max_message_chars
    envelope = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(envelope.pop("$defs", {}))
    components.setdefault("ErrorResponse", envelope)
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    error = {
        "description": "Error in OpenAI's shape",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for status in [s for s in responses if s.startswith("4")]:
                responses[status] = {**error, "description": responses[status].get("description", "")}
            if "requestBody" in operation:
                responses.setdefault("413", {**error, "description": "Request body too large"})
            if path == CHAT_PATH and method == "post":
                responses.setdefault(
                    "429", {**error, "description": "Too many requests in flight for the caller"}
                )
                responses.setdefault("503", {**error, "description": "Overloaded, or the model still loads"})
                responses["200"]["content"]["text/event-stream"] = {"schema": STREAM_EVENT}
            responses.setdefault("4XX", error)
    return schema


def _branch(field: dict[str, Any], kind: str) -> dict[str, Any]:
    """The `kind` branch of a union field's `anyOf` or `oneOf` (or the field itself)."""
    branches = [*field.get("anyOf", ()), *field.get("oneOf", ())]
    return next((b for b in branches if b.get("type") == kind), field)
