"""Answers from any OpenAI-compatible server (our service, `vllm serve`, a hosted model) over HTTP.

Each variant is named explicitly with `model` (the base's name, an adapter's NAME@VERSION), so our
service's router is bypassed. Perplexity needs the prompt's log-probabilities: vLLM returns them for a
chat request with `prompt_logprobs`; a server that does not is reported as unavailable, never guessed.
The golden answer is sent as a closed assistant turn, so its tokens are the ones the in-process
evaluation scores (`training.evaluation.perplexity`): the answer and the end-of-turn token after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import httpx

from training.evaluation.data import EvalInputError, EvalItem
from training.evaluation.sources import BASE, TokenNLL, Variant


class HttpSource:
    """An `AnswerSource` talking to `endpoint` (`.../v1` or the server's root URL)."""

    def __init__(
        self,
        endpoint: str,
        base: str,
        adapters: Sequence[str],
        *,
        api_key: str | None = None,
        timeout: float = 300,
    ) -> None:
        root = endpoint.rstrip("/")
        self.url = root if root.endswith("/v1") else f"{root}/v1"
        self.description = f"endpoint {self.url}"
        self.base, self.adapters = base, list(adapters)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout)

    async def start(self) -> list[Variant]:
        """Check the endpoint answers and serves the base and every adapter named."""
        response = await self._request("GET", "/models")
        served = {str(card.get("id")) for card in response.get("data", []) if isinstance(card, dict)}
        missing = [name for name in [self.base, *self.adapters] if name not in served]
        if missing:
            raise EvalInputError(
                f"{self.url} does not serve {', '.join(map(repr, missing))}; it serves: "
                + ", ".join(sorted(served))
            )
        return [Variant(BASE, self.base)] + [Variant(name, name, name) for name in self.adapters]

    async def answer(self, variant: Variant, item: EvalItem, max_tokens: int) -> str:
        """One greedy chat completion."""
        body = {"model": variant.model, "messages": item.chat(), "temperature": 0, "max_tokens": max_tokens}
        response = await self._request("POST", "/chat/completions", body)
        return str(response["choices"][0]["message"].get("content") or "")

    async def golden_nll(
        self, variants: Sequence[Variant], items: Sequence[EvalItem], advance: Callable[[], None]
    ) -> dict[str, list[TokenNLL]] | None:
        """Golden-answer NLL from the server's prompt log-probabilities, or None if it offers none."""
        results: dict[str, list[TokenNLL]] = {}
        for variant in variants:
            scores = []
            for item in items:
                score = await self._item_nll(variant, item)
                if score is None:
                    return None
                scores.append(score)
                advance()
            results[variant.key] = scores
        return results

    async def _item_nll(self, variant: Variant, item: EvalItem) -> TokenNLL | None:
        """Ask for the prompt log-probs of question + golden answer (a closed assistant turn: its
        end-of-turn token counts, as in process), and the question alone for its length."""
        common = {"model": variant.model, "max_tokens": 1, "temperature": 0, "prompt_logprobs": 0}
        full = await self._request(
            "POST",
            "/chat/completions",
            {
                **common,
                "messages": [*item.chat(), {"role": "assistant", "content": item.reference}],
                "add_generation_prompt": False,
                "continue_final_message": False,
            },
        )
        logprobs = full.get("prompt_logprobs")
        if not isinstance(logprobs, list):
            return None
        prompt = await self._request("POST", "/chat/completions", {**common, "messages": item.chat()})
        start = int(prompt.get("usage", {}).get("prompt_tokens", 0))
        answer = [_token_logprob(entry) for entry in logprobs[start:]]
        if not answer or any(value is None for value in answer):
            return None
        return -sum(value for value in answer if value is not None), len(answer)

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = await self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise EvalInputError(f"cannot reach {self.url}: {exc or type(exc).__name__}") from None
        if response.status_code >= 400:
            raise EvalInputError(f"{self.url}{path} answered {response.status_code}: {_message(response)}")
        try:
            data = response.json()
        except ValueError:
            raise EvalInputError(f"{self.url}{path} did not answer JSON") from None
        if not isinstance(data, dict):
            raise EvalInputError(f"{self.url}{path} did not answer a JSON object")
        return data

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def _token_logprob(entry: Any) -> float | None:
    """The prompt token's log-probability from one vLLM `prompt_logprobs` entry ({token_id: {logprob}})."""
    if not isinstance(entry, dict) or len(entry) != 1:
        return None
    value = next(iter(entry.values()))
    return float(value["logprob"]) if isinstance(value, dict) and "logprob" in value else None


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300]
