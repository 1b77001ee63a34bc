"""Inference engines behind one protocol (`service.engines.base.Engine`)."""

from __future__ import annotations

from service.engines.base import Engine
from service.settings import Settings


def create_engine(settings: Settings, model_path: str) -> Engine:
    """The engine named by `ZANTARA_ENGINE`: `hf` (transformers + PEFT), `vllm` (in-process vLLM) or
    `openai` (remote OpenAI-compatible servers such as `vllm serve`; `model_path` is not used)."""
    if settings.engine == "vllm":
        from service.engines.vllm import VLLMEngine

        return VLLMEngine.from_settings(settings, model_path)
    if settings.engine == "openai":
        from service.engines.openai import OpenAIEngine

        return OpenAIEngine.from_settings(settings)
    from service.engines.hf import HFEngine

    return HFEngine(
        model_path,
        device=settings.device,
        max_batch_size=settings.max_batch_size,
        batch_window_s=settings.batch_window_s,
        default_max_tokens=settings.default_max_tokens,
        torch_threads=settings.torch_threads,
        prefix_cache_tokens=settings.prefix_cache_tokens,
    )
