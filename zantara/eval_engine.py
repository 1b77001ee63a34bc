"""`zantara eval` in process: answers from the very engine the service runs, adapters loaded the same way.

Training never imports service, so the engine-backed answer source lives here and the service's CLI
hands it to `training.evaluation.cli.build_eval_command`. Answers are greedy (temperature 0) through
`Engine.prepare` and `stream`; perplexity is computed with transformers on the same weights after the
engine has been closed (so a large model is never held twice).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from service.adapters import read_metadata
from service.engines.base import AdapterInfo, Engine, EngineError, SamplingParams, generate
from service.settings import Settings
from training.evaluation.cli import EvalHooks, build_eval_command
from training.evaluation.data import EvalInputError, EvalItem
from training.evaluation.sources import BASE, TokenNLL, Variant


class EngineSource:
    """An `AnswerSource` backed by the service's engine (`ZANTARA_ENGINE`, `hf` by default)."""

    def __init__(self, settings: Settings, base_model: str | None, adapters: Sequence[str]) -> None:
        self.settings = settings
        self.base_model = base_model
        self.specs = list(adapters)
        self.description = "in process"
        self.model_path = ""
        self.adapters: list[AdapterInfo] = []
        self._engine: Engine | None = None

    async def start(self) -> list[Variant]:
        """Resolve the base model and adapters, start the engine and load the adapters into it."""
        from service.engines import create_engine

        self.adapters = [resolve_adapter(spec, self.settings.resolved_adapters_dir) for spec in self.specs]
        self.model_path = await asyncio.to_thread(self._model_path)
        self.description = f"in process ({self.settings.engine} engine, {self.model_path})"
        self._engine = create_engine(self.settings, self.model_path)
        try:
            await self._engine.start()
        except (OSError, ValueError, EngineError) as exc:
            raise EvalInputError(f"cannot load the base model {self.model_path!r}: {exc}") from None
        for info in self.adapters:
            try:
                await self._engine.load_adapter(info)
            except (OSError, ValueError, EngineError) as exc:
                raise EvalInputError(f"cannot load adapter {info.key} from {info.path}: {exc}") from None
        name = self.base_model or self.settings.base_model
        return [Variant(BASE, name)] + [Variant(info.key, info.key, info.key) for info in self.adapters]

    async def answer(self, variant: Variant, item: EvalItem, max_tokens: int) -> str:
        """The greedy answer, through the same prepare/stream path as a chat request."""
        assert self._engine is not None, "start() first"
        sampling = SamplingParams(max_tokens=None, temperature=0.0)
        try:
            prompt = self._engine.prepare(item.chat(), sampling)
            prompt = replace(prompt, max_tokens=min(prompt.max_tokens, max_tokens))
            return (await generate(self._engine, prompt, sampling, variant.adapter)).text
        except EngineError as exc:
            raise EvalInputError(f"{variant.key} could not answer {item.id}: {exc}") from None

    async def golden_nll(
        self, variants: Sequence[Variant], items: Sequence[EvalItem], advance: Callable[[], None]
    ) -> dict[str, list[TokenNLL]] | None:
        """Golden-answer NLL with transformers on the same weights (the engine is closed first)."""
        from training.evaluation.perplexity import golden_nll

        await self.close()
        paths = {info.key: info.path for info in self.adapters}
        return await asyncio.to_thread(
            golden_nll, self.model_path, paths, variants, items, advance, self.settings.device
        )

    async def close(self) -> None:
        """Stop the engine (idempotent)."""
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.close()

    def _model_path(self) -> str:
        """The base model: a directory, a hub id (`owner/name`), or the settings' (demo built if missing)."""
        if self.base_model is not None:
            if Path(self.base_model).exists():
                return str(Path(self.base_model).resolve())
            if re.fullmatch(r"[\w.-]+/[\w.-]+", self.base_model) and not self.base_model.startswith("."):
                return self.base_model
            raise EvalInputError(f"base model {self.base_model!r} is neither a directory nor a hub id")
        if self.settings.uses_demo_model:
            from training.demo.model import ensure_demo_base

            return str(ensure_demo_base(self.settings.demo_base_path).resolve())
        return self.settings.base_model


def resolve_adapter(spec: str, adapters_dir: Path) -> AdapterInfo:
    """An adapter directory (name and version from its `zantara.json`, else the folder names) or
    `NAME@VERSION` under the adapters folder; anything else is bad input."""
    path = Path(spec)
    if not (path / "adapter_config.json").is_file() and "@" in spec:
        name, version = spec.split("@", 1)
        path = adapters_dir / name / version
    if not (path / "adapter_config.json").is_file():
        raise EvalInputError(
            f"unknown adapter {spec!r}: not an adapter directory (with adapter_config.json) "
            f"nor NAME@VERSION under {adapters_dir}"
        )
    path = path.resolve()
    meta = read_metadata(path)
    return AdapterInfo(
        str(meta.get("name") or path.parent.name), str(meta.get("version") or path.name), str(path), meta
    )


def _in_process(base_model: str | None, adapters: list[str]) -> EngineSource:
    settings = Settings()
    return EngineSource(settings, base_model, adapters)


eval_command = build_eval_command(
    EvalHooks(in_process=_in_process, database_url=lambda: Settings().resolved_database_url)
)
