"""OpenAI-shaped request and response models (chat completions, models, errors) and our own."""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
)

NO_NUL = r"^[^\x00]*$"
"""Pattern of every stored text field: PostgreSQL's `text` and `jsonb` cannot hold a NUL character."""

Text = Annotated[str, Field(pattern=NO_NUL)]
"""A string without NUL characters."""

NOT_BLANK = r"^[^\x00]*[^\s\x00][^\x00]*$"
"""No NUL characters and at least one that is not whitespace (what survives stripping), stated in the
schema so that generated clients and fuzzers know a blank text is refused."""


def _whole_number(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


WHOLE = BeforeValidator(_whole_number)
"""Takes an integer as JSON Schema has it: `2.0` is one too (strict models refuse `"2"` and `true`).
Put it after the bounds (`Annotated[int, Field(ge=1), WHOLE]`) so the schema states them."""


def _text_or_list(value: object) -> str:
    return "text" if isinstance(value, str) else "list"


@dataclass(frozen=True)
class RequestLimits:
    """The configurable bounds of a chat request (`ZANTARA_MAX_*`): checked here when the body is validated,
    stated in the app's OpenAPI schema by `service.limits`; the defaults mirror the settings' defaults."""

    max_tokens: int = 4096
    max_messages: int = 256
    max_message_chars: int = 65_536


request_limits: ContextVar[RequestLimits | None] = ContextVar("request_limits", default=None)
"""The limits of the app serving the current request (set per request by `service.limits`)."""


def _limits() -> RequestLimits:
    return request_limits.get() or RequestLimits()


def _check_chars(text: str) -> str:
    limit = _limits().max_message_chars
    if len(text) > limit:
        raise ValueError(f"at most {limit} characters per message, got {len(text)}")
    return text


class TextPart(BaseModel):
    """A text content part (`{"type": "text", "text": ...}`); the only part type we serve."""

    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: Text

    @field_validator("text")
    @classmethod
    def _text_within_limit(cls, value: str) -> str:
        return _check_chars(value)


class ChatMessage(BaseModel):
    """One chat message; content is a string or a list of text parts."""

    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "developer", "user", "assistant"] = Field(
        description="Who speaks; `developer` is treated as `system`."
    )
    content: Annotated[
        Annotated[Text, Tag("text")] | Annotated[list[TextPart], Tag("list")], Discriminator(_text_or_list)
    ] = Field(description="The message text.")
    name: Text | None = Field(None, max_length=256)

    @field_validator("content", mode="before")
    @classmethod
    def _content_must_be_text(cls, value: object) -> object:
        if not isinstance(value, str | list):
            raise ValueError("content must be a string or a list of text parts")
        return value

    @field_validator("content")
    @classmethod
    def _content_within_limit(cls, value: str | list[TextPart]) -> str | list[TextPart]:
        return _check_chars(value) if isinstance(value, str) else value

    def text(self) -> str:
        """The content as one string."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def for_template(self) -> dict[str, str]:
        """The message as the chat template expects it."""
        return {"role": "system" if self.role == "developer" else self.role, "content": self.text()}


class StreamOptions(BaseModel):
    """OpenAI's `stream_options`."""

    model_config = ConfigDict(strict=True)
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """`POST /v1/chat/completions` body (OpenAI's fields we honour; unknown ones are ignored). Strict types,
    as the schema states them: `"1"` is not a number, `0` not a boolean."""

    model_config = ConfigDict(extra="ignore", strict=True)
    model: str = Field(
        min_length=1,
        max_length=256,
        description="`zantara` (routed), the base model, or an adapter `NAME[@VERSION]`; "
        "GET /v1/models lists them, any other name is a 404.",
        examples=["zantara"],
    )
    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far.")
    temperature: float = Field(1.0, ge=0, le=2, description="0 is greedy decoding.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: Annotated[int, Field(ge=1), WHOLE] | None = Field(
        None, description="Upper bound of generated tokens."
    )
    max_completion_tokens: Annotated[int, Field(ge=1), WHOLE] | None = Field(
        None, description="Newer name of max_tokens."
    )
    stop: (
        Annotated[
            Annotated[Text, Tag("text")] | Annotated[list[Text], Field(max_length=4), Tag("list")],
            Discriminator(_text_or_list),
        ]
        | None
    ) = Field(None, description="Up to 4 stop strings.")
    seed: Annotated[int, Field(ge=-(2**53), le=2**53), WHOLE] | None = Field(
        None,
        description="Makes sampling reproducible. Within +-2**53, the integers every JSON parser keeps exact "
        "(a schema bound of 2**63 reads back as a float and lets clients send seeds it refuses).",
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=512, description="Bucketing key of the canary router.")
    n: Annotated[int, Field(ge=1, le=1), WHOLE] = Field(
        1, description="Only one choice per request is supported."
    )

    @field_validator("messages")
    @classmethod
    def _messages_within_limit(cls, value: list[ChatMessage]) -> list[ChatMessage]:
        limit = _limits().max_messages
        if len(value) > limit:
            raise ValueError(f"at most {limit} messages, got {len(value)}")
        return value

    @field_validator("max_tokens", "max_completion_tokens")
    @classmethod
    def _max_tokens_within_limit(cls, value: int | None, info: ValidationInfo) -> int | None:
        limit = _limits().max_tokens
        if value is not None and value > limit:
            raise ValueError(f"{info.field_name} must be at most {limit}, got {value}")
        return value

    def stop_strings(self) -> tuple[str, ...]:
        """`stop` as a tuple of non-empty strings."""
        if self.stop is None:
            return ()
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        return tuple(s for s in stops if s)

    def requested_max_tokens(self) -> int | None:
        """`max_completion_tokens` if given, else `max_tokens`."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class PromptTokensDetails(BaseModel):
    """How the prompt tokens were processed."""

    cached_tokens: int = Field(0, description="Prompt tokens taken from the prefix cache.")


class Usage(BaseModel):
    """Token accounting."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)


class AssistantMessage(BaseModel):
    """The answer message."""

    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    """One (the only) choice of a completion."""

    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class ChatCompletion(BaseModel):
    """`chat.completion` response; `id` is the interaction id used for feedback."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None


class DeltaMessage(BaseModel):
    """A streamed piece of the answer."""

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    """The choice inside a stream chunk."""

    index: int = 0
    delta: DeltaMessage
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """`chat.completion.chunk` server-sent event."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    """An entry of `/v1/models`; adapters carry `parent`, as in vLLM's server."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "nuzantara"
    root: str | None = None
    parent: str | None = None


class ModelList(BaseModel):
    """`/v1/models` response."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    """OpenAI's error object."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error envelope: `{"error": {...}}`."""

    error: ErrorBody
