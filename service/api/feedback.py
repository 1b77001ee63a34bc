"""`POST /v1/feedback`: a 1-5 star rating of an answer, acknowledged once durably stored."""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from feedback.store import RatingWrite, UnknownInteractionError
from service.deps import StateDep, require_api_key
from service.errors import APIError
from service.protocol import ErrorResponse

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["feedback"], dependencies=[Depends(require_api_key)])


class FeedbackRequest(BaseModel):
    """A rating of one answer, identified by the chat completion's `id`."""

    response_id: str = Field(min_length=1, max_length=64, description="The chat completion `id`.")
    rating: int = Field(ge=1, le=5, description="1-5 stars; under 3 puts the answer in the review queue.")
    comment: str | None = Field(None, max_length=4000)


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


RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": FeedbackResponse},
    **{code: {"model": ErrorResponse} for code in (404, 422, 503)},
}


@router.post(
    "/feedback",
    response_model=FeedbackResponse,
    responses=RESPONSES,
)
async def submit_feedback(body: FeedbackRequest, state: StateDep) -> Response:
    """Store (or replace) the rating, acknowledged only once committed or durably spooled; 404 for an
    id unknown to the database and to this replica. The answer is serialised here: FastAPI would validate
    the `FeedbackResponse` built just below all over again before serialising it."""
    write = RatingWrite(body.response_id, body.rating, body.comment)
    try:
        outcome = await state.feedback.rate(write)
    except UnknownInteractionError:
        raise APIError(
            404, f"No answer with id {body.response_id!r}.", code="response_not_found", param="response_id"
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
