"""Request limits: body size (413), concurrent streams per API key (429), and the configurable bounds of a
chat request, enforced when the body is validated and stated in the OpenAPI schema.

Both middlewares are pure ASGI (Starlette's `BaseHTTPMiddleware` would buffer streamed answers), and every
refusal is in OpenAI's error shape.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
    """Makes the app's `RequestLimits` the ones chat bodies are validated against, and holds every
    streamed answer to `max_streams` at a time per API key (per client address when none is sent).

    A slot is taken before the request reaches the route and given back when the response ends, whether
    the stream finished, failed or the client went away: as the last bytes are sent, or when the route
    returns without sending them."""

    def __init__(self, app: ASGIApp, limits: RequestLimits, max_streams: int) -> None:
        self.app, self.limits, self.max_streams = app, limits, max_streams
        self.streams: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Set the request limits; for a streamed chat completion, take a slot or answer 429."""
        token = request_limits.set(self.limits)
        try:
            if self.max_streams and scope["type"] == "http" and _is_chat(scope):
                await self._counted(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        finally:
            request_limits.reset(token)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:  # the client left before sending the whole body: nobody to answer
            return
        replay = _replaying(body, receive)
        if not _asks_for_stream(body):
            await self.app(scope, replay, send)
            return
        key = _caller(scope)
        if self.streams[key] >= self.max_streams:
            _count_rejected(scope)
            response = error_response(
                429,
                f"Too many concurrent streams for this API key (limit {self.max_streams}); "
                "retry when one of them has finished.",
                code="too_many_streams",
                headers={"Retry-After": "1"},
            )
            await response(scope, replay, send)
            return
        self.streams[key] += 1
        held = True

        def give_back() -> None:
            nonlocal held
            if held:
                held = False
                self.streams[key] -= 1
                if not self.streams[key]:
                    del self.streams[key]

        async def send_then_give_back(message: Message) -> None:
            # given back before the answer's last bytes leave: a client that has read the whole stream
            # may start the next one at once, while the response's own tasks still wind down
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                give_back()
            await send(message)

        try:
            await self.app(scope, replay, send_then_give_back)
        finally:
            give_back()


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


def _caller(scope: Scope) -> str:
    """The API key sent (whether valid or not: an invalid one is refused by the route), else the client."""
    scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "key:" + token.strip()
    client = scope.get("client")
    return f"addr:{client[0] if client else ''}"


def _count_rejected(scope: Scope) -> None:
    """Count the refusal with the other requests refused before generation (`variant="none"`)."""
    state = getattr(scope["app"].state, "zantara", None)
    if state is not None:
        state.metrics.count_refused("rejected")


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
    app.add_middleware(ChatRequestLimits, limits=limits, max_streams=settings.max_streams_per_key)
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
                responses.setdefault("429", {**error, "description": "Too many concurrent streams"})
                responses["200"]["content"]["text/event-stream"] = {"schema": STREAM_EVENT}
            responses.setdefault("4XX", error)
    return schema


def _branch(field: dict[str, Any], kind: str) -> dict[str, Any]:
    """The `kind` branch of a union field's `anyOf` or `oneOf` (or the field itself)."""
    branches = [*field.get("anyOf", ()), *field.get("oneOf", ())]
    return next((b for b in branches if b.get("type") == kind), field)
