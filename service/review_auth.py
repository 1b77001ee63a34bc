"""Reviewer sign-in shared by every review page and review JSON API: sessions, CSRF, page rendering.

Pages: a reviewer signs in with their token and gets a random session id in an HttpOnly, SameSite=Strict
cookie (Secure in production or over https); the database keeps only its hash, so signing out or
revoking the reviewer ends it at once. Every form POST carries a synchronizer CSRF token derived from
the session id (`csrf_token`), which a page on another site cannot read. The sign-in form itself is
protected by a double-submit cookie. JSON API: `Authorization: Bearer <reviewer token>`, or the
session cookie plus an `X-CSRF-Token` header on writes.

A new review page needs three lines: `signed_in = await page_session(request, state)`, a redirect
with `login_redirect(request)` when it is None, and `render(request, "review/PAGE.html", {...})`; its
form POST reads the fields with `checked_form(request, signed_in)` (None: the CSRF token is wrong).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from starlette.concurrency import run_in_threadpool

from feedback.reviewers import ReviewerView, reviewer_for_session, reviewer_for_token, start_session
from service.deps import StateDep
from service.errors import APIError
from service.settings import Settings

SESSION_COOKIE = "zantara_review_session"
LOGIN_CSRF_COOKIE = "zantara_review_login"
CSRF_HEADER = "X-CSRF-Token"
PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static" / "review"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
"""Sent with every review page: model output is untrusted, so scripts come only from our own files."""

templates = Jinja2Templates(
    env=Environment(loader=FileSystemLoader(PACKAGE_DIR / "templates"), autoescape=True)
)


@dataclass(frozen=True)
class SignedIn:
    """A reviewer signed in through the session cookie."""

    reviewer: ReviewerView
    session_id: str

    @property
    def csrf_token(self) -> str:
        """The token every form of this session must send back."""
        return csrf_token(self.session_id)


def csrf_token(session_id: str) -> str:
    """The CSRF token bound to a session: a hash of its id, so it needs no storage of its own."""
    digest = hashlib.sha256(b"zantara-review-csrf\0" + session_id.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def same_secret(expected: str, submitted: str | None) -> bool:
    """Constant-time equality of two secrets (False when one is missing)."""
    return bool(submitted) and hmac.compare_digest(expected.encode(), (submitted or "").encode())


async def page_session(request: Request, state: StateDep) -> SignedIn | None:
    """The signed-in reviewer of a page request, or None (no, expired or revoked session)."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        return None
    reviewer = await run_in_threadpool(reviewer_for_session, state.sessions, session_id)
    return SignedIn(reviewer, session_id) if reviewer is not None else None


async def checked_form(request: Request, signed_in: SignedIn) -> dict[str, str] | None:
    """The text fields a review page's form posted, or None when its CSRF token is missing or wrong."""
    form = {key: value for key, value in (await request.form()).items() if isinstance(value, str)}
    return form if same_secret(signed_in.csrf_token, form.get("csrf_token")) else None


def safe_next(target: str | None) -> str:
    """Where to go after signing in: only a path of our own review pages, never another site."""
    if target and target.startswith("/review/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/review/ab"


def login_redirect(request: Request) -> RedirectResponse:
    """Send a signed-out browser to the sign-in page, coming back here afterwards."""
    return RedirectResponse(f"/review/login?next={quote(request.url.path)}", status_code=303)


def _secure(request: Request, settings: Settings) -> bool:
    return settings.environment == "production" or request.url.scheme == "https"


def _cookie(
    response: Response, request: Request, settings: Settings, name: str, value: str, age: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=age,
        path="/review",
        httponly=True,
        samesite="strict",
        secure=_secure(request, settings),
    )


async def sign_in(response: Response, request: Request, state: StateDep, reviewer: ReviewerView) -> None:
    """Open a session for `reviewer` and set its cookie on `response`."""
    ttl = state.settings.review_session_ttl_s
    session_id = await run_in_threadpool(start_session, state.sessions, reviewer.id, timedelta(seconds=ttl))
    _cookie(response, request, state.settings, SESSION_COOKIE, session_id, ttl)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/review")


def sign_out(response: Response) -> None:
    """Drop the session cookie (the caller ends the session in the database)."""
    response.delete_cookie(SESSION_COOKIE, path="/review")


def login_form_token(request: Request) -> str:
    """The sign-in form's double-submit token: the one already in the browser's cookie, or a new one."""
    return request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)


def set_login_form_cookie(response: Response, request: Request, settings: Settings, token: str) -> None:
    """Store the sign-in form's token in its cookie (good for an hour)."""
    _cookie(response, request, settings, LOGIN_CSRF_COOKIE, token, 3600)


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    """A review page from `service/templates/` (autoescaped) with the security headers."""
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response


reviewer_bearer = HTTPBearer(
    auto_error=False, scheme_name="ReviewerToken", description="A reviewer token (`zantara reviewers add`)."
)


async def require_reviewer_api(
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(reviewer_bearer)],
) -> ReviewerView:
    """The reviewer calling the JSON API: bearer token, or session cookie (+ CSRF header on writes)."""
    token = credentials.credentials.strip() if credentials else None
    if token is not None:
        reviewer = await run_in_threadpool(reviewer_for_token, state.sessions, token)
        if reviewer is None:
            raise APIError(
                401,
                "Unknown or revoked reviewer token.",
                code="invalid_reviewer_token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return reviewer
    signed_in = await page_session(request, state)
    if signed_in is None:
        raise APIError(
            401,
            "The review API needs `Authorization: Bearer <reviewer token>` (see `zantara reviewers add`).",
            code="invalid_reviewer_token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if request.method not in {"GET", "HEAD", "OPTIONS"} and not same_secret(
        signed_in.csrf_token, request.headers.get(CSRF_HEADER)
    ):
        raise APIError(403, f"Missing or wrong {CSRF_HEADER} header.", code="csrf_failed")
    return signed_in.reviewer


ReviewerAPIDep = Annotated[ReviewerView, Depends(require_reviewer_api)]
