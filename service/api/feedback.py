"""`POST /v1/feedback`: a 1-5 star rating of an answer, acknowledged once durably stored.

The route is a plain Starlette route in the FastAPI app, documented in the OpenAPI schema by `document`
from the same pydantic models it validates with. Ratings arrive in bursts from every chat user, and
FastAPI's per-request machinery (dependency solving, body parsing, two exit stacks) cost more CPU than
storing the rating: measured on this 2-core machine, a FastAPI route with this body and the API-key
dependency answered 1,450-1,530 requests/s doing nothing, a Starlette route validating the same body
3,060-3,670/s. The checks are the same: the API key (`check_api_key`), the body (`FeedbackRequest`,
errors raised as FastAPI's `RequestValidationError`, so they get the one error envelope), the body size
(the limit middleware)."""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response

from feedback.records import RESPONSE_ID_PATTERN, RatingWrite, UnknownInteractionError
from feedback.spool import SpoolFullError
from service.deps import caller_key_hash, check_api_key, state_of
from service.errors import APIError
from service.protocol import NO_NUL

log = logging.getLogger(__name__)

PATH = "/v1/feedback"
SPOOL_FULL_RETRY_AFTER_S = 60
"""`Retry-After` of a rating refused while the spool is full: the database has been away a while."""
_RESPONSE_ID = re.compile(RESPONSE_ID_PATTERN)


class FeedbackRequest(BaseModel):
    """A rating of one answer, identified by the chat completion's `id`."""

    response_id: str = Field(
        min_length=1, max_length=64, pattern=NO_NUL, description="The chat completion `id`."
    )
    rating: int = Field(ge=1, le=5, description="1-5 stars; under 3 puts the answer in the review queue.")
    comment: str | None = Field(
        None, max_length=4000, description="Stored with each NUL character replaced by U+FFFD."
    )


class FeedbackResponse(BaseModel):
    """What was stored (200), or queued durably while the database is away (202)."""

    response_id: str
    rating: int
    comment: str | None
    variant: str | None = Field(description="The variant rated; null when queued for an answer unknown here.")
    replaced_rating: int | None = Field(
        description="The earlier rating this one replaced, if any (null while queued)."
    )
    needs_review: bool
    status: Literal["stored", "queued"] = Field(
        "stored",
        description="`stored`: committed to the database. `queued`: fsynced to the service's local "
        "spool while the database is unavailable; written there, in order, when it returns.",
    )


async def submit_feedback(request: Request) -> Response:
    """Store (or replace) the rating, acknowledged only once committed or durably spooled; 404 for an
    id unknown to the database and to this replica, for an id the service cannot have made, and, when
    API keys are set, for an answer another key received (the same 404: ids cannot be probed); 503
    while the database is away and the spool is full."""
    state = state_of(request)
    authorization = request.headers.get("authorization")
    check_api_key(state, authorization)
    body = await request.body()
    try:
        feedback = FeedbackRequest.model_validate_json(body)
    except ValidationError as error:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
        raise RequestValidationError(errors, body=body) from None
    if not _RESPONSE_ID.fullmatch(feedback.response_id):
        raise _not_found(feedback.response_id)
    write = RatingWrite(
        feedback.response_id,
        feedback.rating,
        feedback.comment,
        key_hash=caller_key_hash(state, authorization),
    )
    try:
        outcome = await state.feedback.rate(write)
    except UnknownInteractionError:
        raise _not_found(write.interaction_id) from None
    except SpoolFullError:
        state.metrics.feedback_refused.labels("spool_full").inc()
        raise APIError(
            503,
            "The database is unavailable and the ratings waiting for it fill the spool; send it again later.",
            code="spool_full",
            headers={"Retry-After": str(SPOOL_FULL_RETRY_AFTER_S)},
        ) from None
    except (OSError, SQLAlchemyError) as error:
        log.error("could not store or spool a rating: %s", type(error).__name__)
        raise APIError(
            503, "The rating could not be stored; send it again.", code="rating_not_stored"
        ) from None
    answer = FeedbackResponse(
        response_id=write.interaction_id,
        rating=write.stars,
        comment=write.comment,
        variant=outcome.variant,
        replaced_rating=outcome.stored.replaced if outcome.stored else None,
        needs_review=outcome.needs_review,
        status="queued" if outcome.queued else "stored",
    )
    return Response(answer.model_dump_json(), 202 if outcome.queued else 200, media_type="application/json")


def _not_found(response_id: str) -> APIError:
    return APIError(
        404, f"No answer with id {response_id!r}.", code="response_not_found", param="response_id"
    )


def install(app: FastAPI) -> None:
    """Add the route to `app` (its OpenAPI entry comes from `document`)."""
    app.router.add_route(
        PATH, submit_feedback, methods=["POST"], name="submit_feedback", include_in_schema=False
    )


def document(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the operation and its models to FastAPI's OpenAPI document, as FastAPI would state them."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (FeedbackRequest, FeedbackResponse):
        components[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
    answer = _json_body(FeedbackResponse.__name__)
    error = _json_body("ErrorResponse")
    schema.setdefault("paths", {})[PATH] = {
        "post": {
            "tags": ["feedback"],
            "summary": "Submit Feedback",
            "description": submit_feedback.__doc__,
            "operationId": "submit_feedback_v1_feedback_post",
            "parameters": [
                {
                    "name": "authorization",
                    "in": "header",
                    "required": False,
                    "description": "`Bearer <key>`, one of `ZANTARA_API_KEYS` when they are set.",
                    "schema": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Authorization"},
                }
            ],
            "requestBody": {"required": True, **_json_body(FeedbackRequest.__name__)},
            "responses": {
                "200": {"description": "Stored", **answer},
                "202": {"description": "Queued in the spool while the database is away", **answer},
                "401": {"description": "Invalid or missing API key", **error},
                "404": {"description": "No answer with this id", **error},
                "422": {"description": "Invalid body", **error},
                "503": {
                    "description": "Neither stored nor spooled (the spool is full while the database is "
                    "away: `Retry-After`); send it again",
                    **error,
                },
            },
        }
    }
    return schema


def _json_body(model: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}}}
