"""Session fixtures for the training tests: the tiny demo base model and its adapter, built once."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.demo_model import ensure_demo_adapter, ensure_demo_base


@pytest.fixture(scope="session")
def demo_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo base model, built into a session temp directory."""
    return ensure_demo_base(tmp_path_factory.mktemp("models") / "zantara-demo-base", progress=False)


@pytest.fixture(scope="session")
def demo_adapter(demo_base: Path) -> Path:
    """The demo LoRA adapter trained on the seed bank's golden answers."""
    return ensure_demo_adapter(demo_base, demo_base.parent / "zantara-demo-adapter", progress=False)
