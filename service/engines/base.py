"""The small protocol every engine implements, and the request/response types it speaks.

The router and the HTTP API only ever see this protocol, so the transformers+PEFT engine, the
in-process vLLM engine and a remote OpenAI-compatible server are interchangeable.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class EngineError(Exception):
    """Base class of errors an engine reports to the API layer."""


class InvalidRequestError(EngineError):
    """The request cannot be served as asked (maps to HTTP 400)."""

    def __init__(self, message: str, *, code: str = "invalid_request", param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.param = param


class UnknownAdapterError(EngineError):
    """The named adapter is not loaded (maps to HTTP 404)."""


class EngineNotReadyError(EngineError):
    """The model is still loading (maps to HTTP 503)."""


class GenerationError(EngineError):
    """One request's generation failed (sampling, detokenizing, stop handling or delivery); the other
    requests of its batch go on."""


class EngineUnavailableError(EngineNotReadyError):
    """The engine stopped serving (its worker died, or the service shuts down); maps to HTTP 503."""


@dataclass(frozen=True)
class SamplingParams:
    """How to sample: OpenAI's knobs. `temperature == 0` means greedy."""

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class PromptCount:
    """Prompt tokens as counted by the server that generated the answer: a remote engine learns them
    with the answer's usage (None until then)."""

    tokens: int | None = None


@dataclass(frozen=True)
class PreparedPrompt:
    """A chat ready for an engine. A local engine renders it with the model's chat template, tokenizes
    it and checks it against the context; a remote engine keeps the `messages` for the server it
    forwards them to, which renders, checks and counts them (into `counted`)."""

    token_ids: tuple[int, ...]
    max_tokens: int
    messages: tuple[dict[str, str], ...] = field(default=(), compare=False)
    counted: PromptCount = field(default_factory=PromptCount, compare=False, repr=False)

    @property
    def prompt_tokens(self) -> int:
        """Number of prompt tokens (for usage accounting): as the generating server counted them, else
        the length of the tokenized prompt."""
        return self.counted.tokens if self.counted.tokens is not None else len(self.token_ids)


@dataclass
class Delta:
    """A piece of streamed output. `finish_reason` is set on the last one only; `cached_tokens`
    counts the prompt tokens whose keys and values came from the prefix cache."""

    text: str
    completion_tokens: int
    finish_reason: str | None = None
    cached_tokens: int = 0
    whole: bool = False
    """True for a whole answer received at once (`stream(..., whole=True)` from a remote engine): its
    arrival says nothing of when the first token was generated."""


@dataclass
class Completion:
    """A whole answer."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class AdapterInfo:
    """A loaded LoRA adapter, keyed `NAME@VERSION`."""

    name: str
    version: str
    path: str
    metadata: dict[str, object] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        """The unique `NAME@VERSION` key used in requests and headers."""
        return f"{self.name}@{self.version}"


@runtime_checkable
class Engine(Protocol):
    """What the service needs from an inference engine."""

    @property
    def model_name(self) -> str:
        """The base model's name as shown in `/v1/models`."""
        ...

    @property
    def ready(self) -> bool:
        """True once the model is loaded and requests can be served."""
        ...

    @property
    def alive(self) -> bool:
        """False once the engine can never serve again (its worker died): the liveness probe fails and
        the pod is restarted. True while the model still loads."""
        ...

    async def start(self) -> None:
        """Load the model and start serving (called once, in the background, at start-up)."""
        ...

    @property
    def prepare_blocks(self) -> bool:
        """True when `prepare` renders and tokenizes here (CPU work kept off the event loop); False when
        it only hands the messages on (a remote engine's server renders them)."""
        ...

    def prepare(self, messages: list[dict[str, str]], sampling: SamplingParams) -> PreparedPrompt:
        """Render and tokenize `messages`; raise InvalidRequestError if they cannot fit the context."""
        ...

    def stream(
        self, prompt: PreparedPrompt, sampling: SamplingParams, adapter: str | None, *, whole: bool = False
    ) -> AsyncGenerator[Delta, None]:
        """Generate with the base (`adapter=None`) or the adapter keyed `NAME@VERSION`, piece by piece.
        With `whole` the caller wants only the whole answer: an engine may then yield it as one `Delta`
        (a remote engine asks its server for one response instead of a stream of events)."""
        ...

    async def load_adapter(self, info: AdapterInfo) -> None:
        """Load an adapter at run time, without a restart."""
        ...

    async def unload_adapter(self, key: str) -> None:
        """Unload an adapter at run time; requests already running on it finish first."""
        ...

    def adapters(self) -> list[AdapterInfo]:
        """Adapters loaded now."""
        ...

    async def close(self) -> None:
        """Stop background work and free the model."""
        ...


def prepare_chat(
    tokenizer: Any,
    context: int,
    messages: list[dict[str, str]],
    sampling: SamplingParams,
    default_max_tokens: int,
) -> PreparedPrompt:
    """Apply `tokenizer`'s chat template to `messages`, tokenize, and check that the prompt plus
    max_tokens fit `context` tokens; without max_tokens, use `default_max_tokens` or the room left.
    A local engine's `prepare` (raises InvalidRequestError, code `context_length_exceeded`)."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) >= context:
        raise InvalidRequestError(
            f"This model's maximum context length is {context} tokens; the messages take "
            f"{len(ids)} tokens. Shorten the conversation.",
            code="context_length_exceeded",
            param="messages",
        )
    room = context - len(ids)
    if sampling.max_tokens is None:
        return PreparedPrompt(tuple(ids), min(default_max_tokens, room))
    if sampling.max_tokens > room:
        raise InvalidRequestError(
            f"max_tokens={sampling.max_tokens} plus the {len(ids)} prompt tokens exceeds this model's "
            f"maximum context length of {context} tokens; ask for at most {room}.",
            code="context_length_exceeded",
            param="max_tokens",
        )
    return PreparedPrompt(tuple(ids), sampling.max_tokens)


async def generate(
    engine: Engine, prompt: PreparedPrompt, sampling: SamplingParams, adapter: str | None
) -> Completion:
    """Collect an engine's stream into one completion (non-streaming requests)."""
    parts: list[str] = []
    tokens = 0
    finish = "stop"
    async for delta in engine.stream(prompt, sampling, adapter):
        parts.append(delta.text)
        tokens = delta.completion_tokens
        if delta.finish_reason:
            finish = delta.finish_reason
    return Completion("".join(parts), finish, prompt.prompt_tokens, tokens)
