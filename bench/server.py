"""Lets the scripts under `bench/` import the project (run as `python bench/NAME.py`) and start the
service through the tests' helper."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.served import Server, running_server  # noqa: E402 - needs the repository on sys.path

__all__ = ["REPO", "Server", "running_server"]
