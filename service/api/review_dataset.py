"""The dataset validation page and its JSON API.

`GET /review/api/dataset/next` answers `{"record": {...}}`, or `{"record": null, "message": ...}` when
nothing is left for this reviewer. `POST /review/api/dataset/{record_id}` takes
`{"action": "approve"|"edit"|"reject", "question"?, "answer"?, "reason"?}` (an edit carries the new
question and/or answer). `GET /review/api/dataset/summary` counts records by status and reports the
reviewers' agreement. How a record is decided: `feedback.dataset_review`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.concurrency import run_in_threadpool

from feedback.dataset_review import (
    AlreadyReviewedError,
    RecordView,
    Summary,
    UnknownRecordError,
    Verdict,
    next_record,
    review,
    summary,
)
from service.deps import StateDep
from service.errors import APIError
from service.protocol import ErrorResponse
from service.review_auth import (
    STATIC_DIR,
    ReviewerAPIDep,
    SignedIn,
    checked_form,
    login_redirect,
    page_session,
    render,
)
from service.state import ServiceState

router = APIRouter(prefix="/review", tags=["review"])

EMPTY_MESSAGE = "No dataset records are waiting for you: every record has the reviews it needs."
MAX_QUESTION = 4_000
MAX_ANSWER = 20_000
MAX_REASON = 2_000
ASSETS = {"review_dataset.js": "text/javascript", "review_dataset.css": "text/css"}
DONE = {"approve": "approved", "edit": "edited", "reject": "rejected"}


_TEXT_GIVEN: dict[str, Any] = {
    "anyOf": [
        {"required": [field], "properties": {field: {"type": "string"}}} for field in ("question", "answer")
    ]
}
EDIT_CARRIES_TEXT: dict[str, Any] = {
    "if": {"properties": {"action": {"const": "edit"}}},
    "then": _TEXT_GIVEN,
    "else": {"not": _TEXT_GIVEN},
}
"""The rule `_text_only_with_edit` enforces, stated in the schema: an edit carries `question` or
`answer`, the other actions carry neither."""


class DatasetReviewRequest(BaseModel):
    """A reviewer's verdict on a dataset record."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"allOf": [EDIT_CARRIES_TEXT]})

    action: Literal["approve", "edit", "reject"] = Field(description="Keep as is, keep edited, or drop.")
    question: str | None = Field(
        None, min_length=1, max_length=MAX_QUESTION, description="Edit only: the corrected question."
    )
    answer: str | None = Field(
        None, min_length=1, max_length=MAX_ANSWER, description="Edit only: the corrected answer."
    )
    reason: str = Field("", max_length=MAX_REASON, description="Why (most useful on a rejection).")

    @model_validator(mode="after")
    def _text_only_with_edit(self) -> DatasetReviewRequest:
        if self.action == "edit" and self.question is None and self.answer is None:
            raise ValueError("an edit needs `question` or `answer` (or both)")
        if self.action != "edit" and (self.question is not None or self.answer is not None):
            raise ValueError("only an edit carries `question` or `answer`")
        return self


class RecordOut(BaseModel):
    """A dataset record as a reviewer sees it."""

    model_config = ConfigDict(populate_by_name=True)

    id: str
    dataset_version: str
    question: str
    answer: str
    category: str | None
    register_: str | None = Field(alias="register")
    source: str
    reviews: int = Field(description="Verdicts it has so far.")
    required_reviews: int


class NextRecordResponse(BaseModel):
    """The next record, or `record: null` with a message when nothing is left for this reviewer."""

    record: RecordOut | None
    message: str | None = None


class ReviewStored(BaseModel):
    """Acknowledgement of a verdict, with where the record stands now."""

    record_id: str
    status: str = "stored"
    record_status: Literal["validated", "rejected", "pending"]
    reviews: int


class AgreementOut(BaseModel):
    """Reviewer agreement over records with two or more reviews."""

    records: int = Field(description="Records with two or more reviews.")
    mean_share: float | None = Field(description="Mean share of a record's reviewers on its top action.")
    krippendorff_alpha: float | None = Field(description="Nominal alpha over approve/edit/reject.")


class SummaryResponse(BaseModel):
    """Records by status, and agreement."""

    required_reviews: int
    records: int
    validated: int
    edited: int
    rejected: int
    pending: int
    reviews: int
    agreement: AgreementOut


def _required(state: ServiceState) -> int:
    return state.settings.dataset_reviews_required


async def _next(state: ServiceState, reviewer_id: int) -> RecordView | None:
    return await run_in_threadpool(next_record, state.sessions, reviewer_id, _required(state))


async def _summary(state: ServiceState) -> Summary:
    return await run_in_threadpool(summary, state.sessions, _required(state))


async def _store(
    state: ServiceState, reviewer_id: int, record_id: str, body: DatasetReviewRequest
) -> Verdict:
    try:
        return await run_in_threadpool(
            lambda: review(
                state.sessions,
                record_id,
                reviewer_id,
                body.action,
                question=body.question,
                answer=body.answer,
                reason=body.reason,
                required_reviews=_required(state),
            )
        )
    except UnknownRecordError:
        raise APIError(
            404,
            f"No dataset record {record_id!r}; take records from GET /review/api/dataset/next.",
            code="record_not_found",
        ) from None
    except AlreadyReviewedError:
        raise APIError(409, f"You already reviewed record {record_id}.", code="already_reviewed") from None
    except ValueError as refused:
        raise APIError(422, f"Invalid review: {refused}.", code="invalid_review") from None


def _record_out(record: RecordView, required: int) -> RecordOut:
    """The record's public fields (not when it was submitted), with the reviews it needs."""
    return RecordOut.model_validate({**asdict(record), "required_reviews": required})


@router.get("/api/dataset/next", response_model=NextRecordResponse, responses={401: {"model": ErrorResponse}})
async def api_next(state: StateDep, reviewer: ReviewerAPIDep) -> NextRecordResponse:
    """The oldest record this reviewer has not reviewed that still needs reviews."""
    record = await _next(state, reviewer.id)
    if record is None:
        return NextRecordResponse(record=None, message=EMPTY_MESSAGE)
    return NextRecordResponse(record=_record_out(record, _required(state)))


@router.post(
    "/api/dataset/{record_id}",
    response_model=ReviewStored,
    status_code=201,
    responses={code: {"model": ErrorResponse} for code in (401, 403, 404, 409, 422)},
)
async def api_review(
    record_id: Annotated[str, Path(min_length=1, max_length=200)],
    body: DatasetReviewRequest,
    state: StateDep,
    reviewer: ReviewerAPIDep,
) -> ReviewStored:
    """Store this reviewer's verdict on a record; once per reviewer and record."""
    verdict = await _store(state, reviewer.id, record_id, body)
    return ReviewStored(record_id=record_id, record_status=verdict.status, reviews=verdict.reviews)


def _summary_out(done: Summary) -> SummaryResponse:
    """The summary as the API shows it (agreement as a count of records, not each record's share)."""
    return SummaryResponse.model_validate(done, from_attributes=True)


@router.get("/api/dataset/summary", response_model=SummaryResponse, responses={401: {"model": ErrorResponse}})
async def api_summary(state: StateDep, reviewer: ReviewerAPIDep) -> SummaryResponse:
    """How many records are validated (edited among them), rejected and pending, and the agreement."""
    return _summary_out(await _summary(state))


async def _page(
    request: Request, state: ServiceState, signed_in: SignedIn, error: str = "", status: int = 200
) -> HTMLResponse:
    record = await _next(state, signed_in.reviewer.id)
    done = request.query_params.get("saved", "")
    context = {
        "reviewer": signed_in.reviewer.name,
        "csrf_token": signed_in.csrf_token,
        "record": record,
        "summary": _summary_out(await _summary(state)),
        "empty_message": EMPTY_MESSAGE,
        "saved": done if done in DONE.values() and not error else "",
        "error": error,
        "limits": {"question": MAX_QUESTION, "answer": MAX_ANSWER, "reason": MAX_REASON},
    }
    return render(request, "review/review_dataset.html", context, status_code=status)


@router.get("/dataset", response_class=HTMLResponse, include_in_schema=False)
async def dataset_page(request: Request, state: StateDep) -> Response:
    """One record with approve / edit / reject, and the progress and agreement so far."""
    signed_in = await page_session(request, state)
    if signed_in is None:
        return login_redirect(request)
    return await _page(request, state, signed_in)


def _form_review(form: dict[str, str]) -> DatasetReviewRequest:
    """The form's verdict; browsers send a textarea's line breaks as CRLF, the records hold LF."""
    action = form.get("action")
    text = (
        {name: form.get(name, "").replace("\r\n", "\n") for name in ("question", "answer")}
        if action == "edit"
        else {}
    )
    return DatasetReviewRequest.model_validate({"action": action, "reason": form.get("reason", ""), **text})


@router.post("/dataset", response_class=HTMLResponse, include_in_schema=False)
async def dataset_submit(request: Request, state: StateDep) -> Response:
    """The page's form: store the verdict, then show the next record (post/redirect/get)."""
    signed_in = await page_session(request, state)
    if signed_in is None:
        return login_redirect(request)
    form = await checked_form(request, signed_in)
    error, status, done = "", 200, ""
    if form is None:
        error, status = "The form expired; please review again.", 403
    else:
        try:
            body = _form_review(form)
            await _store(state, signed_in.reviewer.id, form.get("record_id", ""), body)
            done = DONE[body.action]
        except ValidationError:
            error, status = (
                "Choose approve, edit or reject; an edit needs a question and an answer "
                f"(at most {MAX_QUESTION} and {MAX_ANSWER} characters).",
                422,
            )
        except APIError as refused:
            error, status = refused.message, refused.status
    if error:
        return await _page(request, state, signed_in, error, status)
    return RedirectResponse(f"/review/dataset?saved={done}", status_code=303)


@router.get("/dataset/assets/{name}", include_in_schema=False)
async def dataset_asset(name: str) -> FileResponse:
    """The page's own script and style sheet (its CSP allows no other)."""
    if name not in ASSETS:
        raise APIError(404, f"No static file {name!r}.", code="not_found")
    return FileResponse(
        STATIC_DIR / name, media_type=ASSETS[name], headers={"X-Content-Type-Options": "nosniff"}
    )
