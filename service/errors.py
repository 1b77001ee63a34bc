"""One error envelope for every failure: OpenAI's `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.engines.base import (
    EngineNotReadyError,
    EngineUnavailableError,
    GenerationError,
    InvalidRequestError,
    UnknownAdapterError,
)
from service.protocol import ErrorBody, ErrorResponse

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


class APIError(Exception):
    """An error with its HTTP status, raised anywhere in the request path."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Build the error envelope response."""
    body = ErrorResponse(
        error=ErrorBody(message=message, type=_TYPES.get(status, "api_error"), param=param, code=code)
    )
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str | None]:
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return 400, f"Malformed JSON body: {first.get('ctx', {}).get('error', 'cannot parse')}", None
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(location) or None
    parts = [
        f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
        for e in errors[:5]
    ]
    return 422, "Invalid request: " + "; ".join(parts), param


def http_status(exc: Exception) -> int:
    """The HTTP status the handlers below answer `exc` with (500 for anything unexpected)."""
    if isinstance(exc, APIError):
        return exc.status
    if isinstance(exc, RequestValidationError):
        return _validation_message(exc)[0]
    if isinstance(exc, StarletteHTTPException):
        return exc.status_code
    if isinstance(exc, InvalidRequestError):
        return 400
    if isinstance(exc, UnknownAdapterError):
        return 404
    if isinstance(exc, EngineNotReadyError):
        return 503
    return 500


def install_error_handlers(app: FastAPI) -> None:
    """Map every failure to the one envelope; nothing reaches the client as a bare 500 page."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, code=exc.code, param=exc.param, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, param = _validation_message(exc)
        return error_response(
            status, message, code="invalid_value" if status == 422 else "invalid_json", param=param
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(
            exc.status_code,
            str(exc.detail),
            code=getattr(exc, "code", None),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(InvalidRequestError)
    async def _invalid(_: Request, exc: InvalidRequestError) -> JSONResponse:
        return error_response(http_status(exc), str(exc), code=exc.code, param=exc.param)

    @app.exception_handler(UnknownAdapterError)
    async def _unknown_adapter(_: Request, exc: UnknownAdapterError) -> JSONResponse:
        return error_response(http_status(exc), str(exc), code="model_not_found", param="model")

    @app.exception_handler(EngineNotReadyError)
    async def _not_ready(_: Request, exc: EngineNotReadyError) -> JSONResponse:
        code = "engine_unavailable" if isinstance(exc, EngineUnavailableError) else "model_loading"
        return error_response(http_status(exc), str(exc), code=code, headers={"Retry-After": "5"})

    @app.exception_handler(GenerationError)
    async def _generation_failed(_: Request, exc: GenerationError) -> JSONResponse:
        log.error("generation failed for one request: %s", type(exc.__cause__ or exc).__name__)
        return error_response(
            500,
            "Generating this answer failed; the other requests were not affected.",
            code="generation_failed",
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "Internal server error; the incident is logged.", code="internal_error")
