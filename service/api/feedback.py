"""`POST /v1/feedback`: a 1-5 star rating of an answer, acknowledged once durably stored."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from feedback.store import UnknownInteractionError, rate_interaction
from service.deps import StateDep, require_api_key
from service.errors import APIError
from service.protocol import ErrorResponse

router = APIRouter(prefix="/v1", tags=["feedback"], dependencies=[Depends(require_api_key)])


class FeedbackRequest(BaseModel):
    """A rating of one answer, identified by the chat completion's `id`."""

    response_id: str = Field(min_length=1, max_length=64, description="The chat completion `id`.")
    rating: int = Field(ge=1, le=5, description="1-5 stars; under 3 puts the answer in the review queue.")
    comment: str | None = Field(None, max_length=4000)


class FeedbackResponse(BaseModel):
    """What was stored."""

    response_id: str
    rating: int
    comment: str | None
    variant: str
    replaced_rating: int | None = Field(description="The earlier rating this one replaced, if any.")
    needs_review: bool
    status: str = "stored"


@router.post(
    "/feedback",
    response_model=FeedbackResponse,
    responses={code: {"model": ErrorResponse} for code in (404, 422)},
)
async def submit_feedback(body: FeedbackRequest, state: StateDep) -> FeedbackResponse:
    """Store (or replace) the rating; 404 for an unknown id."""
    try:
        stored = await run_in_threadpool(
            rate_interaction,
            state.sessions,
            interaction_id=body.response_id,
            stars=body.rating,
            comment=body.comment,
        )
    except UnknownInteractionError:
        raise APIError(
            404, f"No answer with id {body.response_id!r}.", code="response_not_found", param="response_id"
        ) from None
    state.metrics.ratings.labels(stored.variant, str(stored.stars)).inc()
    state.metrics.rating_stars.labels(stored.variant).observe(stored.stars)
    return FeedbackResponse(
        response_id=stored.interaction_id,
        rating=stored.stars,
        comment=stored.comment,
        variant=stored.variant,
        replaced_rating=stored.replaced,
        needs_review=stored.needs_review,
    )
