"""`POST /v1/chat/completions` (OpenAI-compatible, streaming or not) and `GET /v1/models`."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sse_starlette import EventSourceResponse

from service.chat import ChatCompletions
from service.deps import StateDep, caller_key_hash, require_api_key, state_of
from service.errors import http_status
from service.protocol import ChatCompletion, ChatCompletionRequest, ErrorResponse, ModelCard, ModelList


class CountedRoute(APIRoute):
    """Counts the requests refused before generation starts (bad body, auth, unknown model, not ready)
    in `zantara_requests_total{variant="none"}`: `rejected` for 4xx, `error` for 5xx. Failures during
    generation are counted by `ChatCompletions` under the variant that served them."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def counted(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                if not getattr(request.state, "generating", False):
                    status = "rejected" if http_status(exc) < 500 else "error"
                    state_of(request).metrics.count_refused(status)
                raise

        return counted


router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(require_api_key)])
completions = APIRouter(route_class=CountedRoute)

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 422, 503)
}


@completions.post("/chat/completions", response_model=ChatCompletion, responses=ERRORS)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    state: StateDep,
    x_zantara_user: Annotated[str | None, Header(max_length=512)] = None,
) -> JSONResponse | EventSourceResponse:
    """Answer a chat; `model: "zantara"` is routed (sticky per `user`), other names pin a variant."""
    user_key = x_zantara_user or body.user
    service = ChatCompletions(state, caller_key_hash(state, request.headers.get("authorization")))
    route, prompt, sampling = await service.prepare(body, user_key)
    request.state.generating = True
    if body.stream:
        events = await service.stream(body, user_key, route, prompt, sampling)
        return EventSourceResponse(events, headers=route.headers(), ping=15)
    completion = await service.complete(body, user_key, route, prompt, sampling)
    return JSONResponse(completion.model_dump(), headers=route.headers())


router.include_router(completions)


@router.get("/models", response_model=ModelList)
async def list_models(state: StateDep) -> ModelList:
    """The routed alias, the base model, and every loaded adapter (with `parent` = the base, and its
    `NAME@VERSION` as `root`: where an adapter lies on the server is nobody's business outside it)."""
    base = state.base_model_id
    cards = [ModelCard(id=state.settings.served_model_alias, root=base), ModelCard(id=base, root=base)]
    cards += [ModelCard(id=a.key, root=a.key, parent=base) for a in state.engine.adapters()]
    return ModelList(data=cards)
