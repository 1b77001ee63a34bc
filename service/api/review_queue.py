"""The review queue page and its JSON API: low-rated answers, and answers whose figures contradict a
verified fact (found by the background fact check, rated or not), to correct or dismiss.

`GET /review/api/queue?limit=&offset=` lists the queue (lowest stars first, unrated answers with a
critical fact error first of all, then newest first); each item's `reason` says why it is there
(`low_rating` or `fact_error`) and `fact_findings` what the check found.
`POST /review/api/queue/{interaction_id}` takes `{"action": "correct", "correct_answer", "why_wrong",
"lesson", "override_reason"?}` or `{"action": "dismiss", "reason"}`. A correction whose figures
contradict a verified fact of the registry (`ZANTARA_FACTS_PATH`) is refused with 422
`fact_contradiction`; one that fails the dataset checks a retrain's build runs on it (tone, completeness,
...) with 422 `dataset_check_failed` naming each rule and what it found, unless the reviewer gives an
`override_reason` (stored with the correction, which training then uses as it is; personal data and
unreadable records cannot be overridden). `POST /review/api/queue/{interaction_id}/check`
`{"correct_answer"}` runs both checks without saving. An item corrected or dismissed already answers
409, an unknown id 404. An item whose correction a retrain left out is listed again with `rejected`
(the reason and the rejected text).
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool

from feedback.review_queue import (
    MAX_PAGE,
    NotInQueueError,
    QueueItem,
    QueuePage,
    UnknownItemError,
    correct,
    dismiss,
    get_item,
    list_queue,
)
from knowledge.corrections import CorrectionRecord, check_correction, overridable
from knowledge.errors import DatasetInputError
from knowledge.fact_check import FactChecker
from knowledge.facts import load_facts
from knowledge.topics import classify
from service.deps import StateDep
from service.errors import APIError
from service.protocol import NOT_BLANK, ErrorResponse
from service.review_auth import STATIC_DIR, ReviewerAPIDep, login_redirect, page_session, render
from service.state import ServiceState

router = APIRouter(prefix="/review", tags=["review"])

EMPTY_MESSAGE = "Nothing to review: no low-rated answers are waiting."
PAGE_SIZE = 50
STATIC_FILES = {"review_queue.js": "text/javascript", "review_queue.css": "text/css"}
INTERACTION_ID = r"^[A-Za-z0-9._:-]+$"
"""What interaction ids are made of (`chatcmpl-<hex>`); anything else names no interaction."""
InteractionId = Annotated[str, Path(min_length=1, max_length=64, pattern=INTERACTION_ID)]
Answer = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20_000, pattern=NOT_BLANK)
]
Note = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5_000, pattern=NOT_BLANK)
]
_NOT_IN_QUEUE = {
    "corrected": ("already_corrected", "was corrected already"),
    "dismissed": ("already_dismissed", "was dismissed already"),
    "not_low_rated": ("not_in_queue", "is not rated under 3 stars and contradicts no verified fact"),
}


class CorrectAction(BaseModel):
    """The reviewer's correction: the right answer, why the model's was wrong, the lesson."""

    model_config = ConfigDict(extra="forbid", strict=True)

    action: Literal["correct"]
    correct_answer: Answer = Field(description="The answer the model should have given.")
    why_wrong: Note = Field(description="What was wrong with the model's answer.")
    lesson: Note = Field(description="The rule to learn from it.")
    override_reason: Note | None = Field(
        default=None,
        description="Why to keep the answer although it fails a dataset check (the reviewer decides).",
    )


class DismissAction(BaseModel):
    """Take the item out of the queue without a correction."""

    model_config = ConfigDict(extra="forbid", strict=True)

    action: Literal["dismiss"]
    reason: Note = Field(description="Why the answer needs no correction.")


ReviewAction = Annotated[CorrectAction | DismissAction, Field(discriminator="action")]


class CheckRequest(BaseModel):
    """A corrected answer to check against the fact registry before saving it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    correct_answer: Answer


class ReviewDone(BaseModel):
    """What was stored: a correction (with its id and category) or a dismissal."""

    interaction_id: str
    status: Literal["corrected", "dismissed"]
    correction_id: int | None = None
    category: str | None = None


class FactIssue(BaseModel):
    """A registry fact that a figure of the corrected answer disagrees with."""

    fact_id: str
    statement: str = Field(description="What the fact says.")
    value: str = Field(description="The registry's value as answers write it.")
    source: str
    stated: str = Field(description="The figure the corrected answer gives.")
    detail: str


class FactCheckOut(BaseModel):
    """`ok` unless a verified fact is contradicted; facts still waiting for confirmation only warn."""

    ok: bool
    contradictions: list[FactIssue]
    warnings: list[FactIssue]


class DatasetProblem(BaseModel):
    """A dataset check the corrected answer fails, as the retrain's dataset build would report it."""

    check: str = Field(description="The rule: `tone`, `completeness`, `pii`, ...")
    message: str = Field(description="What it found.")
    overridable: bool = Field(description="Whether an `override_reason` may keep the answer as it is.")


class CheckOut(FactCheckOut):
    """`ok` unless a verified fact is contradicted or a dataset check fails (`problems`)."""

    problems: list[DatasetProblem]


def _refused(error: UnknownItemError | NotInQueueError) -> APIError:
    if isinstance(error, UnknownItemError):
        return APIError(404, f"No interaction {error.args[0]!r}.", code="not_found")
    code, why = _NOT_IN_QUEUE[error.reason]
    return APIError(409, f"Interaction {error.interaction_id!r} {why}; it left the review queue.", code=code)


def check_facts(facts_path: FilePath, question: str, answer: str) -> FactCheckOut:
    """Check an answer's figures against the registry (read afresh, so edits count at once)."""
    try:
        facts = load_facts(facts_path)
    except DatasetInputError as exc:
        raise APIError(503, f"The fact registry cannot be read: {exc}", code="facts_unavailable") from None
    contradictions: list[FactIssue] = []
    warnings: list[FactIssue] = []
    for finding in FactChecker(facts).check(question, answer):
        for fact in finding.facts:
            issue = FactIssue(
                fact_id=fact.id,
                statement=fact.description,
                value=fact.display,
                source=fact.source,
                stated=finding.quantity.text,
                detail=f"says {finding.quantity.text!r}; the registry has {fact.display} for "
                f"{', '.join(fact.applies_to)} ({fact.source})",
            )
            (contradictions if fact.verified else warnings).append(issue)
    return FactCheckOut(ok=not contradictions, contradictions=contradictions, warnings=warnings)


def dataset_problems(
    item: QueueItem, correct_answer: str, why_wrong: str = "", lesson: str = ""
) -> list[DatasetProblem]:
    """The dataset checks a retrain's build runs on the pair this correction becomes (figures are
    checked against the registry by `check_facts`)."""
    record = CorrectionRecord(
        query=item.query,
        model_answer_wrong=item.answer,
        correct_answer=correct_answer,
        why_wrong=why_wrong,
        lesson=lesson,
        category=classify(item.query),
        origin="review",
    )
    return [
        DatasetProblem(check=issue.check, message=issue.message, overridable=overridable(issue))
        for issue in check_correction(record, None)
    ]


def run_checks(facts_path: FilePath, item: QueueItem, correct_answer: str) -> CheckOut:
    """The fact registry's check and the dataset checks on a corrected answer."""
    facts = check_facts(facts_path, item.query, correct_answer)
    problems = dataset_problems(item, correct_answer)
    return CheckOut(
        ok=facts.ok and not problems,
        contradictions=facts.contradictions,
        warnings=facts.warnings,
        problems=problems,
    )


def _refuse_problems(problems: list[DatasetProblem], override: str | None) -> None:
    """422 unless every problem is overridable and the reviewer gave a reason."""
    blocked = [problem.check for problem in problems if not problem.overridable]
    if not problems or (override is not None and not blocked):
        return
    found = "; ".join(f"{problem.check}: {problem.message}" for problem in problems)
    then = (
        f"an override cannot keep it ({', '.join(blocked)}): fix the answer"
        if blocked
        else "fix the answer, or save it with an `override_reason` saying why it stays as it is"
    )
    raise APIError(
        422,
        f"The corrected answer fails the dataset checks a retrain runs: {found}. To save it, {then}.",
        code="dataset_check_failed",
        param="correct_answer",
    )


async def _item(state: ServiceState, interaction_id: str) -> QueueItem:
    try:
        return await run_in_threadpool(get_item, state.sessions, interaction_id)
    except (UnknownItemError, NotInQueueError) as error:
        raise _refused(error) from None


async def _correct(
    state: ServiceState, interaction_id: str, body: CorrectAction, reviewer: str
) -> CorrectionRecord:
    item = await _item(state, interaction_id)
    checked = await run_in_threadpool(check_facts, state.settings.facts_path, item.query, body.correct_answer)
    if not checked.ok:
        facts = "; ".join(
            f"{issue.fact_id} ({issue.statement}): {issue.detail}" for issue in checked.contradictions
        )
        raise APIError(
            422,
            f"The corrected answer contradicts a verified fact: {facts}.",
            code="fact_contradiction",
            param="correct_answer",
        )
    problems = await run_in_threadpool(
        dataset_problems, item, body.correct_answer, body.why_wrong, body.lesson
    )
    _refuse_problems(problems, body.override_reason)
    try:
        return await run_in_threadpool(
            lambda: correct(
                state.sessions,
                interaction_id=interaction_id,
                correct_answer=body.correct_answer,
                why_wrong=body.why_wrong,
                lesson=body.lesson,
                reviewer=reviewer,
                classify=classify,
                check_override=body.override_reason if problems else None,
            )
        )
    except (UnknownItemError, NotInQueueError) as error:
        raise _refused(error) from None


async def _dismiss(state: ServiceState, interaction_id: str, body: DismissAction, reviewer: str) -> None:
    try:
        await run_in_threadpool(
            lambda: dismiss(
                state.sessions, interaction_id=interaction_id, reason=body.reason, reviewer=reviewer
            )
        )
    except (UnknownItemError, NotInQueueError) as error:
        raise _refused(error) from None


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 403, 404, 409, 422)
}


@router.get("/api/queue", response_model=QueuePage, responses={401: {"model": ErrorResponse}})
async def api_queue(
    state: StateDep,
    _: ReviewerAPIDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = PAGE_SIZE,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> QueuePage:
    """A page of the review queue: answers rated under 3 stars or contradicting a verified fact,
    lowest stars first (unrated ones with a fact error first), then newest."""
    return await run_in_threadpool(lambda: list_queue(state.sessions, limit=limit, offset=offset))


@router.post("/api/queue/{interaction_id}/check", response_model=CheckOut, responses=_ERRORS)
async def api_check(
    interaction_id: InteractionId, body: CheckRequest, state: StateDep, _: ReviewerAPIDep
) -> CheckOut:
    """Check a corrected answer against the fact registry and the dataset checks (the question is the
    item's), saving nothing."""
    item = await _item(state, interaction_id)
    return await run_in_threadpool(run_checks, state.settings.facts_path, item, body.correct_answer)


@router.post("/api/queue/{interaction_id}", response_model=ReviewDone, status_code=201, responses=_ERRORS)
async def api_review(
    interaction_id: InteractionId,
    body: Annotated[ReviewAction, Body()],
    state: StateDep,
    reviewer: ReviewerAPIDep,
) -> ReviewDone:
    """Correct a queued answer (checked against the fact registry and the dataset checks first) or
    dismiss it."""
    if isinstance(body, DismissAction):
        await _dismiss(state, interaction_id, body, reviewer.name)
        return ReviewDone(interaction_id=interaction_id, status="dismissed")
    stored = await _correct(state, interaction_id, body, reviewer.name)
    return ReviewDone(
        interaction_id=interaction_id,
        status="corrected",
        correction_id=stored.database_id,
        category=stored.category,
    )


@router.get("/queue", response_class=HTMLResponse, include_in_schema=False)
async def queue_page(request: Request, state: StateDep) -> Response:
    """The queue page: each low-rated or fact-contradicting answer with its conversation, rating,
    the figures the fact check flagged, and the correction form."""
    signed_in = await page_session(request, state)
    if signed_in is None:
        return login_redirect(request)
    page = await run_in_threadpool(lambda: list_queue(state.sessions, limit=PAGE_SIZE))
    context = {
        "reviewer": signed_in.reviewer.name,
        "csrf_token": signed_in.csrf_token,
        "items": page.items,
        "total": page.total,
        "empty_message": EMPTY_MESSAGE,
    }
    return render(request, "review/review_queue.html", context)


@router.get("/queue/static/{name}", include_in_schema=False)
async def queue_static(name: str) -> FileResponse:
    """The queue page's own CSS and JavaScript."""
    if name not in STATIC_FILES:
        raise APIError(404, f"No static file {name!r}.", code="not_found")
    return FileResponse(
        STATIC_DIR / name, media_type=STATIC_FILES[name], headers={"X-Content-Type-Options": "nosniff"}
    )
