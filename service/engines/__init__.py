"""Inference engines behind one protocol (`service.engines.base.Engine`)."""

from __future__ import annotations

from service.engines.base import Engine
from service.settings import Settings


def create_engine(settings: Settings, model_path: str) -> Engine:
    """The engine named by `ZANTARA_ENGINE`; only `hf` ships in this release."""
    if settings.engine == "hf":
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
    raise ValueError(f"ZANTARA_ENGINE={settings.engine!r} is not available in this release; use 'hf'.")
