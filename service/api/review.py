"""Reviewer sign-in and sign-out pages, and the review pages' static files."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from feedback.reviewers import end_session, reviewer_for_token
from service.deps import StateDep
from service.errors import APIError
from service.review_auth import (
    LOGIN_CSRF_COOKIE,
    STATIC_DIR,
    login_form_token,
    page_session,
    render,
    safe_next,
    same_secret,
    set_login_form_cookie,
    sign_in,
    sign_out,
)

router = APIRouter(prefix="/review", tags=["review"], include_in_schema=False)

STATIC_FILES = {"review.css": "text/css", "ab.js": "text/javascript"}


def _login_page(
    request: Request, state: StateDep, next_path: str, error: str = "", status: int = 200
) -> HTMLResponse:
    token = login_form_token(request)
    response = render(
        request,
        "review/login.html",
        {"csrf_token": token, "next": safe_next(next_path), "error": error},
        status_code=status,
    )
    set_login_form_cookie(response, request, state.settings, token)
    return response


@router.get("", response_class=RedirectResponse)
async def review_home() -> RedirectResponse:
    """The review area starts at the blind A/B page."""
    return RedirectResponse("/review/ab", status_code=303)


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, state: StateDep, next: str = "/review/ab") -> Response:
    """The sign-in form (or straight on when already signed in)."""
    if await page_session(request, state) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_page(request, state, next)


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    state: StateDep,
    token: Annotated[str, Form(max_length=200)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=500)] = "/review/ab",
) -> Response:
    """Check the reviewer token and open a session."""
    if not same_secret(request.cookies.get(LOGIN_CSRF_COOKIE, ""), csrf_token):
        return _login_page(request, state, next, "The form expired; please sign in again.", 403)
    reviewer = await run_in_threadpool(reviewer_for_token, state.sessions, token.strip()) if token else None
    if reviewer is None:
        return _login_page(request, state, next, "Unknown or revoked reviewer token.", 401)
    response = RedirectResponse(safe_next(next), status_code=303)
    await sign_in(response, request, state, reviewer)
    return response


@router.post("/logout", response_class=RedirectResponse)
async def logout(
    request: Request, state: StateDep, csrf_token: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    """End the session everywhere and drop its cookie."""
    signed_in = await page_session(request, state)
    if signed_in is not None:
        if not same_secret(signed_in.csrf_token, csrf_token):
            return render(request, "review/message.html", {"message": "The form expired; reload."}, 403)
        await run_in_threadpool(end_session, state.sessions, signed_in.session_id)
    response = RedirectResponse("/review/login", status_code=303)
    sign_out(response)
    return response


@router.get("/static/{name}")
async def static_file(name: str) -> FileResponse:
    """The review pages' own CSS and JavaScript (the only scripts their CSP allows)."""
    if name not in STATIC_FILES:
        raise APIError(404, f"No static file {name!r}.", code="not_found")
    return FileResponse(
        STATIC_DIR / name, media_type=STATIC_FILES[name], headers={"X-Content-Type-Options": "nosniff"}
    )
