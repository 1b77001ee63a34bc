"""Admin side of the blind A/B review (admin bearer token): queue pairs, read an adapter's summary."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from feedback.ab import ABSummary, NewPair, ab_summary, queue_pairs
from service.deps import StateDep, require_admin
from service.protocol import NO_NUL, ErrorResponse

router = APIRouter(
    prefix="/admin/ab",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses={code: {"model": ErrorResponse} for code in (401, 422)},
)


class PairIn(BaseModel):
    """A question with the base model's and the adapter's answers (what `zantara eval --ab-sample` sends)."""

    question: str = Field(pattern=NO_NUL, min_length=1, max_length=20_000)
    category: str | None = Field(None, pattern=NO_NUL, max_length=64)
    register_: str | None = Field(
        None, pattern=NO_NUL, alias="register", max_length=32, description="casual, business, formal."
    )
    complexity: str | None = Field(None, pattern=NO_NUL, max_length=32)
    base_model: str = Field(pattern=NO_NUL, min_length=1, max_length=200)
    adapter: str = Field(pattern=NO_NUL, min_length=1, max_length=200, description="`NAME@VERSION`.")
    base_answer: str = Field(pattern=NO_NUL, max_length=50_000)
    adapter_answer: str = Field(pattern=NO_NUL, max_length=50_000)
    dataset_version: str | None = Field(None, pattern=NO_NUL, max_length=128)
    source_id: str | None = Field(None, pattern=NO_NUL, max_length=200)


class QueuedPairs(BaseModel):
    """The ids of the pairs queued, in the order sent."""

    ids: list[int]


@router.post("/pairs", response_model=QueuedPairs, status_code=201)
async def add_pairs(body: list[PairIn], state: StateDep) -> QueuedPairs:
    """Queue base-vs-adapter pairs for blind review."""
    pairs = [NewPair(**pair.model_dump(exclude={"register_"}), register=pair.register_) for pair in body]
    return QueuedPairs(ids=await run_in_threadpool(queue_pairs, state.sessions, pairs))


@router.get("/summary", response_model=ABSummary)
async def summary(
    state: StateDep, adapter: str = Query(min_length=1, max_length=200, pattern=NO_NUL)
) -> ABSummary:
    """The reviewers' verdicts on one adapter's pairs (for `zantara eval --endpoint`): win rate (ties
    count half) with its 95% interval, mean 1-10 ratings per variant, Krippendorff's alpha."""
    return await run_in_threadpool(ab_summary, state.sessions, adapter)
