"""FastAPI dependencies: the service state, authentication, the caller's identity.

They are `async def` although none of them awaits: FastAPI runs a plain `def` dependency in its thread
pool, one thread hop per dependency per request, which cost more than the work they do."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from feedback.records import api_key_hash
from service.errors import APIError
from service.state import ServiceState


def state_of(request: Request) -> ServiceState:
    """The live service state built by the lifespan."""
    return request.app.state.zantara  # type: ignore[no-any-return]


async def get_state(request: Request) -> ServiceState:
    """The live service state, as a dependency."""
    return state_of(request)


StateDep = Annotated[ServiceState, Depends(get_state)]


def _bearer(authorization: str | None) -> bytes | None:
    """The bearer token's raw bytes (ASGI hands header values over decoded as latin-1), or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        return token.encode("latin-1")
    except UnicodeEncodeError:  # not read from an HTTP header: compare the text's own bytes
        return token.encode()


def _matches(token: bytes | None, secrets: list[str]) -> bool:
    """Constant-time comparison of bytes: `compare_digest` refuses non-ASCII `str` (a 500 otherwise)."""
    return token is not None and any(hmac.compare_digest(token, s.encode()) for s in secrets if s)


def valid_api_key(authorization: str | None, keys: list[str]) -> str | None:
    """The configured API key that `authorization` carries as its bearer token, or None: the request
    limits count a caller by its key only when the key is real (anything else by its address)."""
    token = _bearer(authorization)
    return next((key for key in keys if _matches(token, [key])), None)


async def require_api_key(state: StateDep, authorization: Annotated[str | None, Header()] = None) -> None:
    """When `ZANTARA_API_KEYS` is set, `/v1` needs one of them as a bearer token."""
    check_api_key(state, authorization)


def check_api_key(state: ServiceState, authorization: str | None) -> None:
    """Raise the 401 of `require_api_key` unless `authorization` carries an API key (or none is set)."""
    keys = state.settings.api_keys
    if keys and not _matches(_bearer(authorization), keys):
        raise APIError(
            401,
            "Invalid or missing API key: send `Authorization: Bearer <key>`.",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


def caller_key_hash(state: ServiceState, authorization: str | None) -> str | None:
    """The stored hash (`api_key_hash`) of the API key in `authorization`, once `check_api_key` let it
    in; None when `/v1` is open: an answer is rated only by the key that received it."""
    token = _bearer(authorization)
    if not state.settings.api_keys or token is None:
        return None
    return api_key_hash(token, state.settings.ensure_user_hash_key())


async def require_admin(state: StateDep, authorization: Annotated[str | None, Header()] = None) -> None:
    """`/admin` needs the admin bearer token (`ZANTARA_ADMIN_TOKEN`)."""
    if not _matches(_bearer(authorization), [state.settings.admin_token]):
        raise APIError(
            401,
            "Admin endpoints need `Authorization: Bearer $ZANTARA_ADMIN_TOKEN`.",
            code="invalid_admin_token",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def actor(x_zantara_actor: Annotated[str | None, Header(max_length=200)] = None) -> str:
    """Who makes an admin change, for the audit trail (`X-Zantara-Actor`, default `admin`)."""
    return (x_zantara_actor or "admin").strip() or "admin"


ActorDep = Annotated[str, Depends(actor)]
