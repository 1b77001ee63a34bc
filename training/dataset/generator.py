"""Question generators: a client for any OpenAI-compatible endpoint, and the offline rules.

`EndpointClient` posts to `{base_url}/chat/completions` (our own service, a vLLM server or a hosted
model) with retries. `ModelGenerator` asks it for variations, synthetic questions and draft answers,
keeps only lines that pass the register and personal-data rules, and tops up from the offline rules
when the model gives too few. When the endpoint fails it warns once and the rest of the build runs
offline, so a build never depends on a model being reachable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import httpx
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from knowledge.pii import find_pii
from knowledge.register import question_register_problem
from training.dataset.rephrase import rephrase
from training.dataset.similarity import content_words, normalize

API_KEY_ENV = "ZANTARA_GENERATOR_API_KEY"
REGISTER_GUIDE: dict[str, str] = {
    "formal": "formal dan baku (boleh menyebut pasal atau peraturan, tanpa partikel santai)",
    "business": "bisnis yang sopan dan lugas, seperti klien korporat bertanya ke konsultan",
    "casual": "santai sehari-hari dengan partikel natural seperti nih, dong, sih, ya, kok",
}
_BULLET = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s*")


class GeneratorUnavailable(Exception):
    """The endpoint could not be reached or answered with something other than a completion."""


@dataclass(frozen=True)
class EndpointConfig:
    """Where the OpenAI-compatible endpoint is and how to call it."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    temperature: float = 0.8
    max_tokens: int = 512

    @classmethod
    def from_env(cls, base_url: str, model: str) -> EndpointConfig:
        """A config whose API key comes from `ZANTARA_GENERATOR_API_KEY` (if set)."""
        return cls(base_url=base_url.rstrip("/"), model=model, api_key=os.environ.get(API_KEY_ENV) or None)


def _retryable(error: BaseException) -> bool:
    if isinstance(error, httpx.TransportError):
        return True
    return isinstance(error, httpx.HTTPStatusError) and error.response.status_code in (
        408,
        429,
        500,
        502,
        503,
        504,
    )


class EndpointClient:
    """A minimal chat-completions client (one system and one user message in, text out)."""

    def __init__(self, config: EndpointConfig, http: httpx.Client | None = None) -> None:
        self.config = config
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._http = http or httpx.Client(timeout=config.timeout_s, headers=headers)

    def complete(self, system: str, user: str) -> str:
        """The assistant's text for one exchange; `GeneratorUnavailable` after retries run out."""
        try:
            return self._complete(system, user)
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise GeneratorUnavailable(f"{self.config.base_url}: {exc}") from exc

    @retry(
        retry=retry_if_exception(_retryable),
        stop=stop_after_attempt(3),
        wait=wait_exponential(multiplier=0.5, max=4),
        reraise=True,
    )
    def _complete(self, system: str, user: str) -> str:
        response = self._http.post(
            f"{self.config.base_url}/chat/completions",
            json={
                "model": self.config.model,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
                "temperature": self.config.temperature,
                "max_tokens": self.config.max_tokens,
            },
        )
        response.raise_for_status()
        content = response.json()["choices"][0]["message"]["content"]
        if not isinstance(content, str):
            raise ValueError("the completion has no text content")
        return content

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._http.close()


def parse_questions(text: str) -> list[str]:
    """One question per line: bullets, numbering and quotes dropped, commentary lines skipped."""
    questions: list[str] = []
    for line in text.splitlines():
        cleaned = _BULLET.sub("", line).strip().strip("\"'“”").strip()
        if not cleaned or cleaned.endswith(":") or len(cleaned.split()) < 3 or len(cleaned.split()) > 80:
            continue
        questions.append(cleaned)
    return questions


def acceptable(question: str, register: str, topic: str, taken: set[str], min_overlap: float) -> bool:
    """True when a generated question fits its register, has no personal data, is new and on topic."""
    if normalize(question) in taken or find_pii(question):
        return False
    if question_register_problem(register, question) is not None:
        return False
    topic_words = content_words(topic)
    overlap = len(content_words(question) & topic_words) / max(1, len(topic_words))
    return overlap >= min_overlap


class Generator:
    """Offline generator: rule-based variations, no model needed. Subclassed by `ModelGenerator`."""

    name = "rules"

    def variations(
        self, question: str, bases: Sequence[str], register: str, count: int, key: str, avoid: Collection[str]
    ) -> list[tuple[str, str]]:
        """Up to `count` (text, generator name) variations of `question` in `register`."""
        return [(text, "rules") for text in rephrase(bases, register, count, key, avoid)]

    def synthetic(
        self, topic: str, persona: str, register: str, complexity: str, count: int, avoid: Collection[str]
    ) -> list[str]:
        """New questions on `topic` from a model; the offline generator has none to offer."""
        return []

    def answer(self, question: str, reference: str) -> str | None:
        """A draft answer from a model, using `reference` as ground truth; offline: none."""
        return None


class ModelGenerator(Generator):
    """Asks an OpenAI-compatible endpoint first; falls back to the rules (with one warning) on failure."""

    def __init__(self, client: EndpointClient, warn: Callable[[str], None]) -> None:
        self.client = client
        self.name = f"model:{client.config.model}"
        self._warn = warn
        self.available = True

    def variations(
        self, question: str, bases: Sequence[str], register: str, count: int, key: str, avoid: Collection[str]
    ) -> list[tuple[str, str]]:
        """Model variations that pass the rules, topped up with rule-based ones to reach `count`."""
        taken = {normalize(text) for text in [*avoid, *bases]}
        prompt = (
            f"Tulis {count} variasi pertanyaan berikut dalam bahasa Indonesia yang natural "
            f"(bukan terjemahan), dengan gaya {REGISTER_GUIDE[register]}. Maknanya harus tetap sama. "
            f"Satu pertanyaan per baris, tanpa nomor dan tanpa penjelasan.\n\nPertanyaan: {question}"
        )
        found: list[tuple[str, str]] = []
        for line in self._ask(prompt):
            if len(found) < count and acceptable(line, register, question, taken, min_overlap=0.5):
                taken.add(normalize(line))
                found.append((line, self.name))
        rules = super().variations(
            question, bases, register, count - len(found), key, [*avoid, *(t for t, _ in found)]
        )
        return found + rules

    def synthetic(
        self, topic: str, persona: str, register: str, complexity: str, count: int, avoid: Collection[str]
    ) -> list[str]:
        """Model-written questions by a given persona, register and complexity, filtered by the rules."""
        prompt = (
            f"Tulis {count} pertanyaan berbeda dari seorang {persona} asing di Indonesia tentang topik ini: "
            f"{topic}\nGaya bahasa: {REGISTER_GUIDE[register]}. Kompleksitas: {complexity}. Bahasa Indonesia "
            "yang natural, bukan terjemahan. Satu pertanyaan per baris, tanpa nomor dan tanpa penjelasan."
        )
        taken = {normalize(text) for text in avoid}
        found: list[str] = []
        for line in self._ask(prompt):
            if len(found) < count and acceptable(line, register, topic, taken, min_overlap=0.3):
                taken.add(normalize(line))
                found.append(line)
        return found

    def answer(self, question: str, reference: str) -> str | None:
        """A draft answer grounded in `reference` (the golden answer of the seed), or None on failure."""
        if not self.available:
            return None
        prompt = (
            "Jawab pertanyaan berikut dalam bahasa Indonesia yang natural, dengan gaya bahasa yang sama "
            "dengan penanya. Gunakan HANYA fakta dari jawaban acuan; jangan menambah angka lain.\n\n"
            f"Jawaban acuan:\n{reference}\n\nPertanyaan: {question}"
        )
        text = self._complete(prompt)
        return text.strip() or None if text is not None else None

    def _ask(self, prompt: str) -> list[str]:
        text = self._complete(prompt)
        return parse_questions(text) if text else []

    def _complete(self, prompt: str) -> str | None:
        if not self.available:
            return None
        try:
            return self.client.complete("Kamu penulis data latih berbahasa Indonesia yang teliti.", prompt)
        except GeneratorUnavailable as exc:
            self.available = False
            self._warn(f"generator endpoint failed ({exc}); continuing with the offline rules")
            return None
