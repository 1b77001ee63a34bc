"""The router's policy: which of its three targets serves a user.

- `canary`: the rollout's canary adapter, for its sticky share of users;
- `live`: the live adapter, for everyone else;
- `base`: the base model, for everyone else while no adapter is live.

An adapter this replica has not loaded (yet) is skipped: its users get the next target down, so a
replica that is still hot-loading a new version keeps answering.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from router.bucketing import choose_variant
from router.rollout import Rollout

Target = Literal["base", "live", "canary"]


@dataclass(frozen=True)
class Decision:
    """Where one routed request goes: the target and its adapter (`NAME@VERSION`, None for base)."""

    target: Target
    adapter: str | None


def choose_target(
    user_key: str | None,
    rollout: Rollout,
    salt: str,
    rng: random.Random | None = None,
    *,
    loaded: Callable[[str], str | None],
) -> Decision:
    """Route one request: the canary for users in its sticky share, else live, else base.

    `loaded` resolves an adapter name to the loaded `NAME@VERSION` (None when not loaded here).
    """
    if rollout.adapter and rollout.percentage > 0:
        canary = loaded(rollout.adapter)
        if canary is not None and choose_variant(user_key, rollout.percentage, salt, rng) == "tuned":
            return Decision("canary", canary)
    live = loaded(rollout.live_adapter) if rollout.live_adapter else None
    if live is not None:
        return Decision("live", live)
    return Decision("base", None)
