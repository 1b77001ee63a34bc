"""The tiny demo model the service runs on by default: built by `zantara serve` (first start) and
`zantara demo-model`, before the app starts, so that serving never needs the training code."""

from __future__ import annotations

from service.settings import Settings
from training.demo.model import DEMO_ADAPTER, ensure_demo_adapter, ensure_demo_base


def build_demo_models(settings: Settings) -> None:
    """With the default base model: build the tiny demo base and demo adapter if they are missing."""
    base = ensure_demo_base(settings.demo_base_path)
    if settings.build_demo_adapter:
        name, version = DEMO_ADAPTER
        ensure_demo_adapter(base, settings.resolved_adapters_dir / name / version)


def needs_demo_models(settings: Settings) -> bool:
    """Whether `serve` builds them: the demo base model is the one served here (a router tier, the
    `openai` engine, holds no model)."""
    return settings.uses_demo_model and settings.engine != "openai"
