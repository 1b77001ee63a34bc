"""Training-test names for the session's demo model (built once, by the root conftest's cache)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_base(demo_base_path: Path) -> Path:
    """The demo base model."""
    return demo_base_path


@pytest.fixture(scope="session")
def demo_adapter(demo_adapter_path: Path) -> Path:
    """The demo LoRA adapter trained on the seed bank's golden answers."""
    return demo_adapter_path
