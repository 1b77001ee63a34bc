"""The blind A/B review page and its JSON API.

`GET /review/api/ab/next` answers `{"pair": {...}}`, or `{"pair": null, "message": ...}` when nothing
is left for this reviewer. `POST /review/api/ab/{pair_id}` takes
`{"choice": "A"|"B"|"tie", "naturalness": {"A": 1-10, "B": 1-10}, "accuracy": {...}, "completeness": {...}}`
(each criterion rates both answers as shown). Neither ever says which answer came from which variant.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from feedback.ab import (
    CRITERIA,
    MAX_PAIR_ID,
    AlreadyJudgedError,
    PairNotShownError,
    ShownPair,
    next_pair,
    submit_judgment,
)
from service.deps import StateDep
from service.errors import APIError
from service.protocol import ErrorResponse
from service.review_auth import (
    ReviewerAPIDep,
    SignedIn,
    checked_form,
    login_redirect,
    page_session,
    render,
)
from service.state import ServiceState

router = APIRouter(prefix="/review", tags=["review"])

EMPTY_MESSAGE = "No pairs are waiting for you: the A/B queue is empty."


class SideRatings(BaseModel):
    """One criterion's 1-10 ratings of answer A and answer B."""

    model_config = ConfigDict(extra="forbid")

    A: int = Field(ge=1, le=10)
    B: int = Field(ge=1, le=10)


class JudgmentRequest(BaseModel):
    """A reviewer's verdict on a pair."""

    model_config = ConfigDict(extra="forbid")

    choice: Literal["A", "B", "tie"] = Field(description="The better answer, or `tie`.")
    naturalness: SideRatings
    accuracy: SideRatings
    completeness: SideRatings


class PairOut(BaseModel):
    """A pair as a reviewer sees it."""

    model_config = ConfigDict(populate_by_name=True)

    id: int
    question: str
    category: str | None
    register_: str | None = Field(alias="register")
    complexity: str | None
    answers: dict[str, str] = Field(description='`{"A": ..., "B": ...}` in this reviewer\'s order.')


class NextPairResponse(BaseModel):
    """The next pair, or `pair: null` with a message when the queue is empty for this reviewer."""

    pair: PairOut | None
    message: str | None = None


class JudgmentStored(BaseModel):
    """Acknowledgement of a verdict (which variant won is not said: the review stays blind)."""

    pair_id: int
    status: str = "stored"


async def _next(state: ServiceState, reviewer_id: int) -> ShownPair | None:
    return await run_in_threadpool(
        lambda: next_pair(
            state.sessions,
            reviewer_id,
            overlap=state.settings.ab_overlap,
            lease=timedelta(seconds=state.settings.ab_lease_s),
        )
    )


async def _store(state: ServiceState, reviewer_id: int, pair_id: int, body: JudgmentRequest) -> None:
    ratings = {c: getattr(body, c).model_dump() for c in CRITERIA}
    try:
        await run_in_threadpool(
            lambda: submit_judgment(
                state.sessions, reviewer_id=reviewer_id, pair_id=pair_id, choice=body.choice, ratings=ratings
            )
        )
    except PairNotShownError:
        raise APIError(
            404,
            f"Pair {pair_id} was not handed to you; take pairs from GET /review/api/ab/next.",
            code="pair_not_found",
        ) from None
    except AlreadyJudgedError:
        raise APIError(409, f"You already judged pair {pair_id}.", code="already_judged") from None


@router.get("/api/ab/next", response_model=NextPairResponse, responses={401: {"model": ErrorResponse}})
async def api_next(state: StateDep, reviewer: ReviewerAPIDep) -> NextPairResponse:
    """The pair this reviewer should judge next (the same one until judged)."""
    shown = await _next(state, reviewer.id)
    if shown is None:
        return NextPairResponse(pair=None, message=EMPTY_MESSAGE)
    return NextPairResponse(
        pair=PairOut(
            id=shown.pair_id,
            question=shown.question,
            category=shown.category,
            register_=shown.register,
            complexity=shown.complexity,
            answers={"A": shown.answer_a, "B": shown.answer_b},
        )
    )


@router.post(
    "/api/ab/{pair_id}",
    response_model=JudgmentStored,
    status_code=201,
    responses={code: {"model": ErrorResponse} for code in (401, 403, 404, 409, 422)},
)
async def api_judge(
    pair_id: Annotated[int, Path(ge=1, le=MAX_PAIR_ID)],
    body: JudgmentRequest,
    state: StateDep,
    reviewer: ReviewerAPIDep,
) -> JudgmentStored:
    """Store this reviewer's verdict on a pair handed to them; once per pair."""
    await _store(state, reviewer.id, pair_id, body)
    return JudgmentStored(pair_id=pair_id)


def _page(
    request: Request, signed_in: SignedIn, shown: ShownPair | None, error: str = "", status: int = 200
) -> HTMLResponse:
    context = {
        "reviewer": signed_in.reviewer.name,
        "csrf_token": signed_in.csrf_token,
        "pair": shown,
        "criteria": CRITERIA,
        "empty_message": EMPTY_MESSAGE,
        "saved": request.query_params.get("saved") == "1" and not error,
        "error": error,
    }
    return render(request, "review/ab.html", context, status_code=status)


@router.get("/ab", response_class=HTMLResponse, include_in_schema=False)
async def ab_page(request: Request, state: StateDep) -> Response:
    """One question and two answers in this reviewer's random order, with the verdict form."""
    signed_in = await page_session(request, state)
    if signed_in is None:
        return login_redirect(request)
    return _page(request, signed_in, await _next(state, signed_in.reviewer.id))


def _form_judgment(form: dict[str, str]) -> JudgmentRequest:
    return JudgmentRequest.model_validate(
        {
            "choice": form.get("choice"),
            **{c: {"A": form.get(f"{c}_a"), "B": form.get(f"{c}_b")} for c in CRITERIA},
        }
    )


@router.post("/ab", response_class=HTMLResponse, include_in_schema=False)
async def ab_submit(request: Request, state: StateDep) -> Response:
    """The page's form: store the verdict, then show the next pair (post/redirect/get)."""
    signed_in = await page_session(request, state)
    if signed_in is None:
        return login_redirect(request)
    form = await checked_form(request, signed_in)
    error, status = "", 200
    if form is None:
        error, status = "The form expired; please judge again.", 403
    else:
        try:
            pair_id, body = int(form.get("pair_id", "")), _form_judgment(form)
            await _store(state, signed_in.reviewer.id, pair_id, body)
        except ValueError:
            error, status = "Choose A, B or tie and rate every criterion 1-10.", 422
        except APIError as refused:
            error, status = refused.message, refused.status
    if error:
        return _page(request, signed_in, await _next(state, signed_in.reviewer.id), error, status)
    return RedirectResponse("/review/ab?saved=1", status_code=303)
