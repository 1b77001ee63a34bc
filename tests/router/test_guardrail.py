"""The canary guardrail: the rating test and decisions on planted numbers, then whole checks on real
rows in SQLite and PostgreSQL (rollback after `threshold` failures, stepping and promotion, one lease
holder acting), and the service running it in the background."""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from database.engine import create_db_engine, make_session_factory
from database.migrate import upgrade
from database.models import Interaction, Rating, utcnow
from feedback.canary_stats import ArmStats, CanaryStats
from feedback.registry import get_version, record_version
from router.guardrail import (
    GuardrailConfig,
    Verdict,
    compare_fact_errors,
    compare_ratings,
    decide,
    judge,
    next_weight,
    run_check,
)
from router.rollout import RolloutStore
from service.app import create_app
from service.guardrail_task import Guardrail
from service.metrics import Metrics
from tests.conftest import admin_headers, running

CANARY, LIVE = "zantara-demo@v2", "zantara-demo@v1"
GOOD = [5, 4, 4, 5, 3, 4, 5, 4]  # mean 4.25
BAD = [1, 2, 2, 3, 1, 2, 4, 1]  # mean 2.0
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


# --- the judge and the decisions, on planted numbers ------------------------------------------------


def arm(ratings: list[int], *, target: str = "canary", requests: int | None = None, errors: int = 0,
        s_per_token: float = 0.1, users: int | None = None) -> ArmStats:  # fmt: skip
    """One arm whose every rating comes from a user of its own (unless `users` says how many served)."""
    stars = tuple(ratings.count(star) for star in range(1, 6))
    served = len(ratings) if requests is None else requests
    return ArmStats(target, None, stars, len(ratings), served, errors, served if users is None else users,
                    served, s_per_token, s_per_token)  # fmt: skip


def stats(canary: ArmStats, control: ArmStats, fresh: int = 0) -> CanaryStats:
    return CanaryStats(EPOCH, EPOCH, canary, control, fresh, fresh)


CONFIG = GuardrailConfig(threshold=3, min_samples=30, step_weights=(20, 50, 100))


def test_mann_whitney_u_counts_wins_and_halves_ties() -> None:
    # canary [1, 3] vs control [2, 3]: 1 beats nothing, 3 beats 2 and ties 3 -> U = 1.5
    assert compare_ratings([1, 3], [2, 3]).u_statistic == 1.5
    worse = compare_ratings(BAD * 5, GOOD * 5)
    assert worse.u_statistic < 0.2 * 40 * 40 and worse.p_value < 1e-6 and worse.gap == 2.25
    assert compare_ratings(GOOD * 5, GOOD * 5).p_value > 0.4
    assert compare_ratings(GOOD * 5, BAD * 5).p_value > 0.99  # one-sided: better is never "worse"
    assert compare_ratings([4] * 40, [4] * 40).p_value == 1.0
    with pytest.raises(ValueError):
        compare_ratings([5], [4, 4])


def test_clearly_worse_ratings_fail_equal_ones_pass_too_few_wait() -> None:
    failed = judge(stats(arm(BAD * 5), arm(GOOD * 5, target="live")), CONFIG)
    assert failed.result == "fail" and failed.test is not None and failed.test.p_value < CONFIG.alpha
    assert "rated worse than live" in failed.reasons[0]
    assert judge(stats(arm(GOOD * 5), arm(GOOD * 5, target="base")), CONFIG).result == "pass"
    assert judge(stats(arm(GOOD * 5), arm(BAD * 5, target="base")), CONFIG).result == "pass"
    waiting = judge(stats(arm(BAD * 3), arm(GOOD * 5)), CONFIG)  # 24 canary ratings < 30
    assert (waiting.result, waiting.test) == ("waiting", None)
    assert "need 30 ratings from 20 distinct users per arm" in waiting.reasons[0]


def test_a_significant_difference_smaller_than_the_margin_passes_a_large_unproven_one_waits() -> None:
    rng = random.Random(7)
    control = [rng.choice([3, 4, 4, 5]) for _ in range(3000)]
    slightly = [max(1, star - (rng.random() < 0.15)) for star in control]  # ~0.15 stars lower, n=3000
    small = judge(stats(arm(slightly), arm(control)), CONFIG)
    assert small.test is not None and small.test.p_value < CONFIG.alpha and small.test.gap < 0.25
    assert small.result == "pass"
    unproven = judge(stats(arm([5, 1] * 15 + [4, 2] * 1), arm([4, 4, 3, 5] * 8)), CONFIG)
    assert unproven.test is not None and unproven.test.gap >= 0.25 and unproven.test.p_value >= CONFIG.alpha
    assert unproven.result == "waiting" and "inconclusive" in unproven.reasons[0]
    # lower at 98% by rank, and 0.5 stars lower on average, but not yet surely by more than 0.25
    mild = judge(stats(arm([4, 3, 4, 3] * 10), arm([4, 4, 4, 3] * 10)), CONFIG)
    assert mild.test is not None and mild.test.p_value < CONFIG.alpha and mild.test.gap == 0.25
    assert mild.test.gap_lower_bound(CONFIG.confidence) < CONFIG.min_effect <= mild.test.gap
    assert mild.result == "waiting"


def test_error_rate_and_latency_limits_fail_even_with_good_or_few_ratings() -> None:
    errors = judge(stats(arm(GOOD * 5, requests=100, errors=6), arm(GOOD * 5)), CONFIG)
    assert errors.result == "fail" and "error rate 0.060 > 0.05" in errors.reasons[0]
    assert judge(stats(arm(GOOD * 5, requests=100, errors=5), arm(GOOD * 5)), CONFIG).result == "pass"
    few_ratings = judge(stats(arm([5], requests=40, errors=10), arm([])), CONFIG)
    assert few_ratings.result == "fail"
    slow = judge(stats(arm(GOOD * 5, s_per_token=0.16), arm(GOOD * 5, s_per_token=0.1)), CONFIG)
    assert slow.result == "fail" and "1.60x" in slow.reasons[0] and "(limit 1.5x)" in slow.reasons[0]
    assert (
        judge(stats(arm(GOOD * 5, s_per_token=0.14), arm(GOOD * 5, s_per_token=0.1)), CONFIG).result == "pass"
    )
    # too few requests, or too few distinct users behind them, to judge the error rate yet
    assert judge(stats(arm([5], requests=10, errors=10), arm([])), CONFIG).result == "waiting"
    assert judge(stats(arm([5], requests=40, errors=10, users=19), arm([])), CONFIG).result == "waiting"


def test_the_critical_error_test_is_a_one_sided_two_proportion_z_test() -> None:
    worse = compare_fact_errors(10, 100, 0, 100)  # pooled 0.05: z = 0.1 / sqrt(0.05 * 0.95 * 0.02)
    assert worse.z == pytest.approx(3.2444, abs=1e-4) and worse.p_value == pytest.approx(5.89e-4, rel=1e-2)
    assert (worse.canary_rate, worse.control_rate) == (0.1, 0.0)
    assert compare_fact_errors(1, 100, 0, 100).p_value > 0.1, "one error in a hundred proves nothing"
    assert compare_fact_errors(0, 100, 10, 100).p_value > 0.99, "one-sided: a better canary never fails"
    assert compare_fact_errors(0, 50, 0, 80).p_value == 0.5, "no errors anywhere: no spread, no evidence"
    canary = replace(arm(GOOD * 5, requests=100), fact_checked=100, fact_critical=10)
    control = replace(arm(GOOD * 5, target="base", requests=100), fact_checked=100, fact_critical=0)
    config = GuardrailConfig(min_fact_answers=100)
    failed = judge(stats(canary, control), config)
    assert failed.result == "fail" and failed.fact_test is not None
    assert any("critical fact errors 0.100 vs base's 0.000" in reason for reason in failed.reasons)
    too_few = GuardrailConfig(min_fact_answers=101)
    assert judge(stats(canary, control), too_few).result == "pass", "below the minimum sample: not judged"
    assert judge(stats(canary, control), too_few).fact_test is None


def test_decisions_follow_flaggers_threshold_and_step_weights() -> None:
    fail, ok, wait = Verdict("fail", (), None), Verdict("pass", (), None), Verdict("waiting", (), None)

    def action(
        verdict: Verdict, failed: int = 0, share: float = 20, fresh: int = 30, users: int = 30, **config: Any
    ) -> Any:
        chosen = decide(
            verdict,
            failed_checks=failed,
            percentage=share,
            fresh_canary_ratings=fresh,
            fresh_canary_users=users,
            config=GuardrailConfig(**{"threshold": 3, "step_weights": (20, 50, 100), **config}),
        )
        return chosen and (chosen.action, chosen.percentage)

    assert action(fail, failed=2) is None
    assert action(fail, failed=3) == ("auto-rollback", 0)
    assert action(wait) is None
    assert action(ok) == ("auto-step", 50)
    assert action(ok, share=50) == ("auto-step", 100)
    assert action(ok, share=100) == ("auto-promote", 0)
    assert action(ok, share=50, max_weight=50) == ("auto-promote", 0)
    assert action(ok, fresh=29) is None  # no fresh evidence at the current share yet
    assert action(ok, fresh=50, users=19) is None  # fresh ratings, but from too few users
    assert action(ok, step_weights=()) is None  # stepping is off by default
    assert (
        next_weight(10, CONFIG) == 20 and next_weight(20, CONFIG) == 50 and next_weight(100, CONFIG) is None
    )
    assert next_weight(20, GuardrailConfig(step_weights=(20, 50, 100), max_weight=40)) == 40


def _simulate(
    canary_probs: list[float], control_probs: list[float], runs: int, seed: int
) -> list[int | None]:
    """Per simulated canary: the check (1-based) that rolls it back, or None. 10 ratings per arm
    arrive each interval, checked 30 times on the cumulative period with the default settings."""
    config, rng = GuardrailConfig(), random.Random(seed)
    outcome: list[int | None] = []
    for _ in range(runs):
        canary: list[int] = []
        control: list[int] = []
        failed, rolled = 0, None
        for check in range(1, 31):
            canary += rng.choices(range(1, 6), canary_probs, k=10)
            control += rng.choices(range(1, 6), control_probs, k=10)
            result = judge(stats(arm(canary), arm(control, target="base")), config).result
            failed = failed + 1 if result == "fail" else 0
            if failed >= config.threshold:
                rolled = check
                break
        outcome.append(rolled)
    return outcome


def test_repeated_looks_rarely_roll_back_an_equal_canary_and_catch_a_worse_one() -> None:
    typical = [0.05, 0.1, 0.2, 0.35, 0.3]  # mean 3.75
    equal = _simulate(typical, typical, runs=60, seed=1)
    assert sum(r is not None for r in equal) <= 1  # under 2% after 30 looks each
    worse = _simulate([0.2, 0.25, 0.25, 0.2, 0.1], typical, runs=20, seed=2)  # mean 2.75
    assert all(r is not None and r <= 15 for r in worse), worse  # 7 at the earliest: 30 ratings + 5 checks


# --- whole checks on real rows ----------------------------------------------------------------------


def _store(sessions: sessionmaker[Session]) -> RolloutStore:
    return RolloutStore(sessions, default_percentage=0, cache_s=60)


def _register(sessions: sessionmaker[Session], *keys: str) -> None:
    with sessions.begin() as session:
        for key in keys:
            name, version = key.split("@")
            record_version(
                session, name=name, version=version, path=f"/adapters/{version}", base_model="demo"
            )


def _status(sessions: sessionmaker[Session], key: str) -> str:
    with sessions() as session:
        entry = get_version(session, key)
        assert entry is not None
        return entry.status


def plant(
    sessions: sessionmaker[Session],
    target: str,
    adapter: str | None,
    stars: list[int],
    *,
    at: datetime | None = None,
    unrated: int = 0,
    errors: int = 0,
    latency_s: float = 0.5,
    completion_tokens: int = 7,
    user: str | None = "",
    key: str | None = None,
    fact_checked: bool = False,
    fact_critical: int = 0,
) -> None:
    """Served interactions of one arm, rated `stars` (plus `unrated` more, `errors` of them failed),
    each for a user of its own unless `user` (a user key hash; None: none) names one for all; with
    `fact_checked`, each read by the fact check, the last `fact_critical` of them with a critical error."""
    at = at or utcnow()
    name, _, version = (adapter or "").partition("@")
    with sessions.begin() as session:
        for index, rating in enumerate([*stars, *[None] * unrated]):
            interaction_id = f"chatcmpl-{uuid.uuid4().hex}"
            session.add(
                Interaction(
                    id=interaction_id,
                    created_at=at,
                    user_hash=uuid.uuid4().hex if user == "" else user,
                    key_hash=key,
                    model_requested="zantara",
                    routed=True,
                    variant="base" if adapter is None else "tuned",
                    target=target,
                    adapter_name=name or None,
                    adapter_version=version or None,
                    messages=[{"role": "user", "content": "Apa itu NIB?"}],
                    answer="" if index < errors else "NIB adalah nomor induk berusaha.",
                    finish_reason="error" if index < errors else "stop",
                    prompt_tokens=5,
                    completion_tokens=completion_tokens,
                    latency_s=latency_s,
                    ttft_s=0.1,
                    params={},
                    fact_critical=(
                        int(index >= len(stars) + unrated - fact_critical) if fact_checked else None
                    ),
                )
            )
            if rating is not None:
                session.add(Rating(interaction_id=interaction_id, stars=rating, created_at=at))


def test_threshold_failed_checks_in_a_row_roll_back_with_the_numbers(
    sessions: sessionmaker[Session],
) -> None:
    _register(sessions, CANARY, LIVE)
    first, second = _store(sessions), _store(sessions)  # two replicas
    first.change(percentage=0, adapter=None, live_adapter=LIVE, actor="ops", action="promote")
    first.change(percentage=20, adapter=CANARY, actor="ops", action="set", reason="new version")
    start = utcnow() + timedelta(seconds=1)
    plant(sessions, "canary", CANARY, BAD * 5, at=start)
    plant(sessions, "live", LIVE, GOOD * 5, at=start)
    plant(sessions, "base", None, BAD * 20, at=start)  # not the control while an adapter is live
    plant(sessions, "pinned", CANARY, GOOD * 20, at=start)  # pinned requests belong to no arm
    config = GuardrailConfig(threshold=3, interval_s=60)

    def check(store: RolloutStore, after_s: float) -> Any:
        return run_check(sessions, store, config, now=start + timedelta(seconds=after_s))

    assert check(first, 1).failed_checks == 1
    assert check(first, 61).failed_checks == 2 and len(first.history()) == 2
    rolled = check(second, 121)  # the other replica continues the count
    assert (rolled.result, rolled.action, rolled.failed_checks) == ("fail", "auto-rollback", 3)
    event = second.history(1)[0]
    assert (event.action, event.actor, event.from_percentage, event.to_percentage) == (
        "auto-rollback",
        "guardrail",
        20,
        0,
    )
    assert (event.from_adapter, event.to_live) == (CANARY, LIVE)
    details = event.details
    assert details["samples"] == {"canary": 40, "control": 40}
    assert details["means"] == {"canary": 2.0, "control": 4.25}
    assert details["control"] == {"target": "live", "adapter": LIVE}
    assert details["u_statistic"] < 200 and details["p_value"] < 1e-6
    assert details["gap"] == 2.25 and 1.5 < details["gap_lower_bound"] < 2.25
    assert (details["threshold"], details["failed_checks"]) == (3, 3)
    assert details["error_rates"] == {"canary": 0.0, "control": 0.0}
    assert details["latency"]["median_s_per_token"] == {"canary": 0.071429, "control": 0.071429}
    assert details["users"] == {"canary": {"rated": 40, "served": 40}, "control": {"rated": 40, "served": 40}}
    assert (details["min_users"], details["ratings"]) == (20, {"canary": 40, "control": 40})
    assert "failed checks in a row" in event.reason and "rated worse than live" in event.reason
    assert second.current().percentage == 0 and second.current().live_adapter == LIVE
    assert _status(sessions, CANARY) == "rejected" and _status(sessions, LIVE) == "live"
    assert check(first, 181).result is None  # no active canary: nothing to check


def test_a_passing_check_breaks_the_row(sessions: sessionmaker[Session]) -> None:
    store = _store(sessions)
    store.change(percentage=20, adapter=CANARY, actor="ops", action="set")
    start = utcnow() + timedelta(seconds=1)
    plant(sessions, "canary", CANARY, GOOD * 5, at=start)
    plant(sessions, "base", None, GOOD * 5, at=start)
    config = GuardrailConfig(threshold=2, interval_s=60)
    assert run_check(sessions, store, config, now=start + timedelta(seconds=1)).result == "pass"
    plant(sessions, "canary", CANARY, BAD * 30, at=start + timedelta(seconds=30))
    later = run_check(sessions, store, config, now=start + timedelta(seconds=61))
    assert (later.result, later.failed_checks, later.action) == ("fail", 1, None)
    assert later.details["control"] == {"target": "base", "adapter": None}
    last = run_check(sessions, store, config, now=start + timedelta(seconds=121))
    assert (last.failed_checks, last.action) == (2, "auto-rollback")


def test_errors_roll_back_too(sessions: sessionmaker[Session]) -> None:
    store = _store(sessions)
    store.change(percentage=20, adapter=CANARY, actor="ops", action="set")
    start = utcnow()
    plant(sessions, "canary", CANARY, [5] * 10, unrated=30, errors=4, at=start)  # 4 of 40 failed
    config = GuardrailConfig(threshold=1)
    checked = run_check(sessions, store, config, now=start + timedelta(seconds=1))
    assert (checked.result, checked.action) == ("fail", "auto-rollback")
    assert checked.details["error_rates"]["canary"] == 0.1 and checked.details["requests"]["canary"] == 40
    assert [e.action for e in store.history()] == ["auto-rollback", "set"]


def test_a_canary_with_significantly_more_critical_fact_errors_rolls_back_with_the_numbers(
    sessions: sessionmaker[Session],
) -> None:
    _register(sessions, CANARY, LIVE)
    store = _store(sessions)
    store.change(percentage=0, adapter=None, live_adapter=LIVE, actor="ops", action="promote")
    store.change(percentage=20, adapter=CANARY, actor="ops", action="set")
    start = utcnow() + timedelta(seconds=1)
    # ratings alike (no rating verdict against it), but 12 of 60 canary answers contradict a verified
    # fact against 1 of 60 of the live adapter's
    plant(sessions, "canary", CANARY, GOOD * 5, unrated=20, at=start, fact_checked=True, fact_critical=12)
    plant(sessions, "live", LIVE, GOOD * 5, unrated=20, at=start, fact_checked=True, fact_critical=1)
    plant(sessions, "canary", CANARY, [], unrated=30, at=start)  # not checked (yet): not counted
    below = GuardrailConfig(threshold=1, min_fact_answers=61)
    waited = run_check(sessions, store, below, now=start + timedelta(seconds=1))
    assert (waited.result, waited.action) == ("pass", None), waited.verdict
    assert waited.details["fact_errors"]["checked"] == {"canary": 60, "control": 60}
    assert waited.details["fact_errors"]["p_value"] is None
    config = GuardrailConfig(threshold=1, min_fact_answers=60)
    rolled = run_check(sessions, store, config, now=start + timedelta(seconds=1))
    assert (rolled.result, rolled.action) == ("fail", "auto-rollback")
    event = store.history(1)[0]
    assert (event.action, event.actor, event.from_adapter, event.to_live) == (
        "auto-rollback",
        "guardrail",
        CANARY,
        LIVE,
    )
    facts = event.details["fact_errors"]
    assert facts["critical"] == {"canary": 12, "control": 1} and facts["checked"] == {
        "canary": 60,
        "control": 60,
    }
    assert facts["rates"] == {"canary": 0.2, "control": 0.0167}
    assert facts["p_value"] < 0.02 and facts["z"] > 2.05 and facts["min_answers"] == 60
    assert facts["confidence"] == 0.98
    assert "critical fact errors 0.200 vs live's 0.017" in event.reason
    assert event.details["means"] == {"canary": 4.25, "control": 4.25}
    assert _status(sessions, CANARY) == "rejected"


def test_stepping_20_50_100_then_promotion(sessions: sessionmaker[Session]) -> None:
    _register(sessions, CANARY)
    store = _store(sessions)
    store.change(percentage=20, adapter=CANARY, actor="ops", action="set")
    config = GuardrailConfig(min_samples=30, step_weights=(20, 50, 100))
    plant(sessions, "canary", CANARY, GOOD * 3)
    plant(sessions, "base", None, GOOD * 5)
    assert run_check(sessions, store, config).result == "waiting"  # 24 canary ratings
    plant(sessions, "canary", CANARY, GOOD)
    stepped = run_check(sessions, store, config)
    assert (stepped.result, stepped.action, stepped.after and stepped.after.percentage) == (
        "pass",
        "auto-step",
        50,
    )
    idle = run_check(sessions, store, config)  # nothing new rated at 50% yet
    assert (idle.result, idle.action, idle.details["fresh_canary_ratings"]) == ("pass", None, 0)
    plant(sessions, "canary", CANARY, GOOD * 4)
    assert run_check(sessions, store, config).action == "auto-step"
    assert store.current().percentage == 100 and _status(sessions, CANARY) == "canary"
    plant(sessions, "canary", CANARY, GOOD * 4)
    promoted = run_check(sessions, store, config)
    assert promoted.action == "auto-promote"
    final = store.current()
    assert (final.adapter, final.percentage, final.live_adapter) == (None, 0, CANARY)
    assert _status(sessions, CANARY) == "live"
    events = store.history()
    assert [(e.action, e.from_percentage, e.to_percentage) for e in events] == [
        ("auto-promote", 100, 0),
        ("auto-step", 50, 100),
        ("auto-step", 20, 50),
        ("set", 0, 20),
    ]
    assert events[0].details["samples"] == {"canary": 96, "control": 40}
    assert events[1].details["percentage"] == {"from": 50, "to": 100}
    assert events[1].details["fresh_canary_ratings"] == 32


async def test_two_guardrails_racing_only_the_lease_holder_acts(sessions: sessionmaker[Session]) -> None:
    store = _store(sessions)
    store.change(percentage=20, adapter=CANARY, actor="ops", action="set")
    plant(sessions, "canary", CANARY, BAD * 5)
    plant(sessions, "base", None, GOOD * 5)
    config = GuardrailConfig(threshold=1)
    replicas = [
        Guardrail(sessions, _store(sessions), config, Metrics(), holder=f"replica-{i}") for i in range(2)
    ]
    outcomes = await asyncio.gather(*(replica.tick() for replica in replicas))
    acted = [i for i, outcome in enumerate(outcomes) if outcome is not None]
    assert len(acted) == 1, outcomes
    holder, other = replicas[acted[0]], replicas[1 - acted[0]]
    assert [e.action for e in store.history()] == ["auto-rollback", "set"]

    def decisions(guardrail: Guardrail) -> float:
        return (
            guardrail.metrics.registry.get_sample_value(
                "zantara_canary_decisions_total", {"action": "auto-rollback"}
            )
            or 0.0
        )

    assert (decisions(holder), decisions(other)) == (1.0, 0.0)
    assert holder.metrics.registry.get_sample_value("zantara_canary_checks_total", {"result": "fail"}) == 1
    assert holder.metrics.registry.get_sample_value(
        "zantara_rollout_changes_total", {"action": "auto-rollback"}
    )
    assert await other.tick() is None  # still held by the holder
    await holder.release()
    assert await other.tick() is not None


async def test_the_service_runs_the_guardrail_in_the_background(settings_factory, database_url: str) -> None:  # type: ignore[no-untyped-def]
    upgrade(database_url)
    engine = create_db_engine(database_url)
    sessions = make_session_factory(engine)
    _store(sessions).change(percentage=20, adapter="zantara-demo@v1", actor="ops", action="set")
    plant(sessions, "canary", "zantara-demo@v1", BAD * 2)
    plant(sessions, "base", None, GOOD * 2)
    engine.dispose()
    settings = settings_factory(
        database_url=database_url,
        canary_interval_s=0.2,
        canary_threshold=1,
        canary_min_samples=10,
        canary_min_users=10,
    )
    async with running(create_app(settings)) as client:
        for _ in range(100):
            events = (await client.get("/admin/rollout/events", headers=admin_headers())).json()
            if any(event["action"] == "auto-rollback" for event in events):
                break
            await asyncio.sleep(0.1)
        rolled = [event for event in events if event["action"] == "auto-rollback"]
        assert len(rolled) == 1, events
        assert rolled[0]["details"]["samples"] == {"canary": 16, "control": 16}
        assert (await client.get("/admin/rollout", headers=admin_headers())).json()["percentage"] == 0
        metrics = (await client.get("/metrics")).text
        assert 'zantara_canary_decisions_total{action="auto-rollback"} 1.0' in metrics
        assert 'zantara_canary_checks_total{result="fail"} 1.0' in metrics


# --- nobody steers the guardrail; legitimate traffic does not fail it ---------------------------------


def test_one_user_who_rates_many_canary_answers_counts_once(sessions: sessionmaker[Session]) -> None:
    store = _store(sessions)
    store.change(percentage=20, adapter=CANARY, actor="ops", action="set")
    start = utcnow() + timedelta(seconds=1)
    plant(sessions, "canary", CANARY, GOOD * 4, at=start)  # 32 users, one rating each
    plant(sessions, "canary", CANARY, [1] * 50, at=start, user="one-user")  # one user, 50 answers
    plant(
        sessions, "canary", CANARY, [1] * 30, at=start, user=None, key="one-key"
    )  # no user key: the API key
    plant(sessions, "canary", CANARY, [5], at=start + timedelta(seconds=1), user="one-user")  # the latest
    plant(sessions, "base", None, GOOD * 4, at=start)
    checked = run_check(sessions, store, GuardrailConfig(threshold=1), now=start + timedelta(seconds=2))
    assert (checked.result, checked.action) == ("pass", None), checked.verdict
    details = checked.details
    assert details["ratings"] == {"canary": 113, "control": 32}
    assert details["users"]["canary"] == {"rated": 34, "served": 34}
    assert details["stars"]["canary"] == [1, 0, 4, 16, 13]  # the key's one 1-star; the user's latest 5
    assert details["samples"] == {"canary": 34, "control": 32} and "latest rating" in details["rule"]
    assert store.current().canary_active


def test_below_the_minimum_distinct_users_no_decision_is_made(sessions: sessionmaker[Session]) -> None:
    store = _store(sessions)
    store.change(percentage=20, adapter=CANARY, actor="ops", action="set")
    start = utcnow() + timedelta(seconds=1)
    for user in range(10):  # 40 one- and two-star ratings, but from 10 users
        plant(sessions, "canary", CANARY, [1, 2, 1, 1], at=start, user=f"user-{user}")
    plant(sessions, "base", None, GOOD * 5, at=start)
    checked = run_check(sessions, store, GuardrailConfig(threshold=1), now=start + timedelta(seconds=1))
    assert (checked.result, checked.action) == ("waiting", None)
    assert "from 10 users" in checked.verdict.reasons[0] if checked.verdict else False
    assert checked.details["users"]["canary"] == {"rated": 10, "served": 10}
    assert checked.details["min_users"] == 20 and checked.details["ratings"]["canary"] == 40
    assert [e.action for e in store.history()] == ["set"]


def test_one_long_answer_passes_the_latency_check_a_canary_3x_slower_per_token_fails(
    sessions: sessionmaker[Session],
) -> None:
    store = _store(sessions)
    store.change(percentage=20, adapter=CANARY, actor="ops", action="set")
    config = GuardrailConfig(threshold=1)
    start = utcnow() + timedelta(seconds=1)
    plant(sessions, "canary", CANARY, [], unrated=98, at=start, latency_s=0.5)
    plant(sessions, "canary", CANARY, [], unrated=1, at=start, latency_s=45.0, completion_tokens=60)
    plant(sessions, "base", None, [], unrated=99, at=start, latency_s=0.5)
    legitimate = run_check(sessions, store, config, now=start + timedelta(seconds=1))
    assert (legitimate.result, legitimate.action) == ("waiting", None), legitimate.verdict
    latency = legitimate.details["latency"]
    assert latency["answers"] == {"canary": 99, "control": 99} and latency["ratio"] == 1.0
    assert latency["p90_s_per_token"] == {"canary": 0.071429, "control": 0.071429}

    store.change(percentage=20, adapter="zantara-demo@v3", actor="ops", action="set")
    later = start + timedelta(seconds=5)
    plant(sessions, "canary", "zantara-demo@v3", [], unrated=99, at=later, latency_s=1.5)  # 3x per token
    plant(sessions, "base", None, [], unrated=99, at=later, latency_s=0.5)
    slow = run_check(sessions, store, config, now=later + timedelta(seconds=1))
    assert (slow.result, slow.action) == ("fail", "auto-rollback")
    assert "3.00x" in slow.details["reasons"][0] and slow.details["latency"]["ratio"] == 3.0
    assert slow.details["limits"]["max_latency_ratio"] == 1.5


def test_the_guardrail_acts_only_on_the_rollout_it_checked(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ops promote the canary while the guardrail reads its (bad) numbers: the rollback the check
    decides must not take the now-live version down; it is recorded as skipped."""
    import router.guardrail

    _register(sessions, CANARY, LIVE)
    store, ops = _store(sessions), _store(sessions)
    store.change(percentage=0, adapter=None, live_adapter=LIVE, actor="ops", action="promote")
    store.change(percentage=20, adapter=CANARY, actor="ops", action="set")
    plant(sessions, "canary", CANARY, BAD * 5)
    plant(sessions, "live", LIVE, GOOD * 5)
    read = router.guardrail.collect

    def collect_while_ops_promote(*args: Any, **kwargs: Any) -> Any:
        stats = read(*args, **kwargs)
        if ops.current().canary_active:
            ops.promote(actor="ops", reason="looks fine to me")
        return stats

    monkeypatch.setattr(router.guardrail, "collect", collect_while_ops_promote)
    checked = run_check(sessions, store, GuardrailConfig(threshold=1))
    assert (checked.result, checked.action, checked.skipped) == ("fail", None, "auto-rollback")
    current = ops.current()
    assert (current.live_adapter, current.canary_active) == (CANARY, False)
    assert _status(sessions, CANARY) == "live" and _status(sessions, LIVE) == "retired"
    skipped, promoted = store.history(2)
    assert (skipped.action, skipped.actor, promoted.action) == (
        "auto-rollback-skipped",
        "guardrail",
        "promote",
    )
    assert (skipped.from_live, skipped.to_live, skipped.to_percentage) == (CANARY, CANARY, 0)
    assert "changed since it was read" in skipped.reason and skipped.details["samples"]["canary"] == 40
