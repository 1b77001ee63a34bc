"""vLLM's runtime adapter endpoints (admin token): `POST /v1/load_lora_adapter` and
`POST /v1/unload_lora_adapter`, answered as `vllm serve` answers them, so this service can stand where
vLLM stands and the `openai` engine (or anyone's vLLM tooling) can push adapter versions to it.

Success is a 200 with a plain-text message; a name already loaded is a 400, an adapter that cannot be
found (no PEFT adapter at `lora_path`, or nothing loaded under `lora_name`) a 404.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from service.adapters import load_and_register, read_metadata
from service.api import admin
from service.deps import StateDep, require_admin
from service.engines.base import AdapterInfo, InvalidRequestError
from service.errors import APIError
from service.protocol import ErrorResponse, Text

router = APIRouter(
    prefix="/v1",
    tags=["adapters"],
    dependencies=[Depends(require_admin)],
    responses={code: {"model": ErrorResponse} for code in (400, 401, 404, 409, 422)},
)


class LoadLoRAAdapter(BaseModel):
    """`POST /v1/load_lora_adapter` body, as vLLM takes it."""

    model_config = ConfigDict(strict=True)

    lora_name: str = Field(
        min_length=1,
        max_length=admin.ADAPTER_KEY_MAX,
        pattern=admin.ADAPTER_KEY,
        description="`NAME@VERSION`, or `NAME` (the version then comes from the adapter's zantara.json, "
        "else its folder name).",
    )
    lora_path: Text = Field(
        min_length=1, max_length=4096, description="A PEFT adapter directory on the inference server."
    )


class UnloadLoRAAdapter(BaseModel):
    """`POST /v1/unload_lora_adapter` body, as vLLM takes it."""

    model_config = ConfigDict(strict=True)

    lora_name: str = Field(
        min_length=1,
        max_length=admin.ADAPTER_KEY_MAX,
        pattern=admin.ADAPTER_KEY,
        description="`NAME@VERSION`, or `NAME` for its most recently loaded version.",
    )


def _adapter(body: LoadLoRAAdapter) -> AdapterInfo:
    """The adapter a load names: its version from the name, else zantara.json, else the folder."""
    name, _, version = body.lora_name.partition("@")
    if not version:
        try:
            version = str(read_metadata(Path(body.lora_path)).get("version") or Path(body.lora_path).name)
        except OSError:  # e.g. a name longer than the file system allows: the engine refuses the path
            version = Path(body.lora_path).name
    return AdapterInfo(name, version, body.lora_path)


@router.post("/load_lora_adapter", response_class=PlainTextResponse)
async def load_lora_adapter(body: LoadLoRAAdapter, state: StateDep) -> PlainTextResponse:
    """Load an adapter now and record it in the registry; 400 when it is loaded already, 404 when
    `lora_path` holds no PEFT adapter."""
    info = await run_in_threadpool(_adapter, body)
    try:
        await load_and_register(state, info)
    except InvalidRequestError as error:
        status = 404 if error.code == "invalid_adapter" else 400
        raise APIError(status, str(error), code=error.code, param=error.param) from None
    except OSError:
        raise APIError(
            404, f"No adapter found at {body.lora_path!r}.", code="invalid_adapter", param="lora_path"
        ) from None
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")


@router.post("/unload_lora_adapter", response_class=PlainTextResponse)
async def unload_lora_adapter(body: UnloadLoRAAdapter, state: StateDep) -> PlainTextResponse:
    """Unload an adapter (as `DELETE /admin/adapters/{key}` does); 404 when it is not loaded, 409 while
    the rollout sends users to it."""
    await admin.unload_adapter(body.lora_name, state)
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")
