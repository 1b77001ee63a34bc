"""The router's three targets: canary for its sticky share, live for the rest, base without a live."""

from __future__ import annotations

import random
from collections import Counter

from router.policy import choose_target
from router.rollout import Rollout

LOADED = {"z@v1": "z@v1", "z@v2": "z@v2", "z": "z@v2"}


def route(rollout: Rollout, user: str | None, loaded: dict[str, str] = LOADED) -> tuple[str, str | None]:
    decision = choose_target(user, rollout, "salt", random.Random(7), loaded=loaded.get)
    return decision.target, decision.adapter


def test_three_targets_in_their_shares_and_sticky_per_user() -> None:
    rollout = Rollout(20, "z@v2", None, "ops", live_adapter="z@v1")
    users = [f"user-{i}" for i in range(2000)]
    first = {user: route(rollout, user) for user in users}
    shares = Counter(target for target, _ in first.values())
    assert set(shares) == {"canary", "live"} and 0.17 < shares["canary"] / len(users) < 0.23
    assert all(route(rollout, user) == first[user] for user in users)
    assert {adapter for target, adapter in first.values() if target == "canary"} == {"z@v2"}
    assert {adapter for target, adapter in first.values() if target == "live"} == {"z@v1"}


def test_without_a_live_adapter_the_rest_get_the_base_model() -> None:
    rollout = Rollout(50, "z@v2", None, "ops")
    targets = Counter(route(rollout, f"u{i}")[0] for i in range(400))
    assert set(targets) == {"canary", "base"}


def test_raising_the_share_only_moves_users_to_the_canary() -> None:
    users = [f"u{i}" for i in range(1000)]
    low = Rollout(20, "z@v2", None, "ops", live_adapter="z@v1")
    high = Rollout(50, "z@v2", None, "ops", live_adapter="z@v1")
    before = {u for u in users if route(low, u)[0] == "canary"}
    after = {u for u in users if route(high, u)[0] == "canary"}
    assert before < after


def test_an_adapter_not_loaded_here_falls_back_to_the_next_target() -> None:
    only_v1 = {"z@v1": "z@v1"}
    rollout = Rollout(100, "z@v2", None, "ops", live_adapter="z@v1")
    assert route(rollout, "u", only_v1) == ("live", "z@v1")
    assert route(rollout, "u", {}) == ("base", None)
    assert route(Rollout(0, "z@v2", None, "ops", live_adapter=None), "u") == ("base", None)
    assert route(Rollout(100, "z", None, "ops"), "u") == ("canary", "z@v2")
