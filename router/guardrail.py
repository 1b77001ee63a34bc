"""The canary guardrail: judge the canary's ratings, errors and latency against the control arm, and
roll it back, step its share up or promote it, each as an audited rollout event.

Flagger's analysis, applied to user ratings. Every `interval_s` one replica (the lease holder) runs
`run_check`:

- **judge** (`judge`): a one-sided Mann-Whitney U test (Kayenta's judge) of the canary's 1-5 star
  ratings against the control arm's over the canary period, each user's latest rating counted once
  per arm (`feedback.canary_stats`). The check *fails* when the canary is worse by a significant
  margin: its ratings are lower at `confidence` (p < 1 - confidence) *and* its mean trails by more
  than `min_effect` stars at the same confidence (the lower confidence bound of the gap is at least
  `min_effect`), or when its error rate is past its limit, or its median seconds per output token
  exceed the control's by more than `max_latency_ratio`, or its **critical-error rate** (answers whose
  figures contradict a verified fact of the registry, found by the background fact check, over the
  answers checked) is higher than the control's at the same `confidence`: a one-sided two-proportion
  z-test (pooled), once each arm has `min_fact_answers` checked answers from `min_users` users. Every
  other part needs `min_samples` ratings (or answers) from `min_users` distinct users per arm before it
  judges, so no single client decides.
  It *passes* with enough ratings per arm and an observed gap under `min_effect`; otherwise it is
  *waiting* for data.
- **decide** (`decide`): `threshold` failed checks in a row roll back (`auto-rollback`); a passing
  check with `step_weights` set, and `min_samples` fresh canary ratings from `min_users` users at
  the current share, steps the share to the next weight (`auto-step`) or, at `max_weight` or the
  last weight, promotes the canary (`auto-promote`).
- **act**: every action is a compare-and-set on the rollout the check read (`router.rollout.unchanged`,
  checked under the row lock): when someone changed the rollout meanwhile, nothing changes and the
  skipped action is an audit event of its own (`auto-rollback-skipped`, ...) with the numbers.

The failed checks in a row are not kept anywhere: they are replayed from the database, judging the
period as it stood at each earlier check time (`now - k * interval_s`), so whichever replica holds
the lease continues the count exactly where another one left it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import NormalDist, fmean, variance
from typing import Any, Literal

from sqlalchemy.orm import Session, sessionmaker

from database.models import utcnow
from feedback.canary_stats import USER_RULE, ArmStats, CanaryStats, canary_period, collect
from router.rollout import Rollout, RolloutConflict, RolloutStore, unchanged

Result = Literal["pass", "fail", "waiting"]
Action = Literal["auto-rollback", "auto-step", "auto-promote"]
ACTOR = "guardrail"


@dataclass(frozen=True)
class GuardrailConfig:
    """The guardrail's settings, in Flagger's words (the service fills them from `ZANTARA_CANARY_*`).

    interval_s: seconds between two checks. threshold: failed checks in a row before a rollback.
    min_samples: ratings per arm (answers, for errors and latency) before a check judges them.
    min_users: distinct users per arm behind those ratings (answers) before a check judges them.
    step_weights: canary shares to step through (empty: never step or promote automatically).
    max_weight: at or above this share a passing check promotes. max_error_rate: limit of the
    canary's failed-generation rate. max_latency_ratio: limit of the canary's median seconds per
    output token over the control's. confidence: of the rating test and the critical-error test.
    min_effect: how many stars the canary's mean must trail by (at `confidence`) for a check to fail.
    min_fact_answers: fact-checked answers per arm before the critical-error test judges.
    """

    interval_s: float = 60.0
    threshold: int = 5
    min_samples: int = 30
    min_users: int = 20
    step_weights: tuple[int, ...] = ()
    max_weight: float = 100.0
    max_error_rate: float = 0.05
    max_latency_ratio: float = 1.5
    confidence: float = 0.98
    min_effect: float = 0.25
    min_fact_answers: int = 100

    @property
    def alpha(self) -> float:
        """The rating test's significance level (1 - confidence)."""
        return 1.0 - self.confidence


@dataclass(frozen=True)
class RatingTest:
    """One-sided Mann-Whitney U test, H1: the canary's ratings are stochastically lower."""

    u_statistic: float
    """U of the canary sample (how often a canary rating beats a control rating, ties counting half)."""
    p_value: float
    canary_mean: float
    control_mean: float
    canary_n: int
    control_n: int
    gap_se: float
    """Standard error of the gap: sqrt(var_canary / n_canary + var_control / n_control)."""

    @property
    def gap(self) -> float:
        """How many stars the canary's mean trails the control's (negative: the canary is ahead)."""
        return self.control_mean - self.canary_mean

    def gap_lower_bound(self, confidence: float) -> float:
        """One-sided lower confidence bound of the gap (normal approximation, Welch standard error)."""
        return self.gap - NormalDist().inv_cdf(confidence) * self.gap_se

    @property
    def prob_canary_better(self) -> float:
        """U / (n1 n2): the chance a canary rating beats a control rating (ties half); 0.5 = equal."""
        return self.u_statistic / (self.canary_n * self.control_n)


@dataclass(frozen=True)
class FactErrorTest:
    """One-sided two-proportion z-test (pooled), H1: the canary's critical-error rate is higher."""

    canary_errors: int
    canary_n: int
    control_errors: int
    control_n: int
    z: float
    p_value: float

    @property
    def canary_rate(self) -> float:
        """Share of the canary's checked answers with a critical fact error."""
        return self.canary_errors / self.canary_n

    @property
    def control_rate(self) -> float:
        """Share of the control's checked answers with a critical fact error."""
        return self.control_errors / self.control_n


@dataclass(frozen=True)
class Verdict:
    """One check's result and why."""

    result: Result
    reasons: tuple[str, ...]
    test: RatingTest | None
    fact_test: FactErrorTest | None = None


@dataclass(frozen=True)
class CheckOutcome:
    """What one `run_check` saw and did (`result` None: no active canary, nothing checked)."""

    result: Result | None
    action: Action | None = None
    failed_checks: int = 0
    verdict: Verdict | None = None
    details: dict[str, Any] = field(default_factory=dict)
    after: Rollout | None = None
    skipped: Action | None = None
    """The action decided but not taken: the rollout changed after the check read it."""


def compare_ratings(canary: Sequence[int], control: Sequence[int]) -> RatingTest:
    """Mann-Whitney U of the canary's ratings against the control's, one-sided (canary lower), with
    the tie correction and continuity correction of the normal approximation (1-5 stars tie a lot)."""
    from scipy.stats import mannwhitneyu

    if len(canary) < 2 or len(control) < 2:
        raise ValueError("both arms need at least two ratings")
    result = mannwhitneyu(canary, control, alternative="less", method="asymptotic")
    return RatingTest(
        u_statistic=float(result.statistic),
        p_value=float(result.pvalue),
        canary_mean=fmean(canary),
        control_mean=fmean(control),
        canary_n=len(canary),
        control_n=len(control),
        gap_se=math.sqrt(variance(canary) / len(canary) + variance(control) / len(control)),
    )


def compare_fact_errors(
    canary_errors: int, canary_n: int, control_errors: int, control_n: int
) -> FactErrorTest:
    """The canary's critical-error share against the control's: z = (p1 - p2) / sqrt(p (1 - p) (1/n1 +
    1/n2)) with the pooled share p, one-sided p-value P(Z >= z). Equal shares of 0 or 1 (no spread)
    give z = 0, p = 0.5."""
    if canary_n < 1 or control_n < 1:
        raise ValueError("both arms need checked answers")
    pooled = (canary_errors + control_errors) / (canary_n + control_n)
    se = math.sqrt(pooled * (1 - pooled) * (1 / canary_n + 1 / control_n))
    z = (canary_errors / canary_n - control_errors / control_n) / se if se > 0 else 0.0
    return FactErrorTest(canary_errors, canary_n, control_errors, control_n, z, 1.0 - NormalDist().cdf(z))


def fact_error_test(stats: CanaryStats, config: GuardrailConfig) -> FactErrorTest | None:
    """The critical-error test of both arms, None while either has under `min_fact_answers` checked
    answers (or under `min_users` users served)."""
    canary, control = stats.canary, stats.control
    if not (
        enough_answers(canary, canary.fact_checked, config, config.min_fact_answers)
        and enough_answers(control, control.fact_checked, config, config.min_fact_answers)
    ):
        return None
    return compare_fact_errors(
        canary.fact_critical, canary.fact_checked, control.fact_critical, control.fact_checked
    )


def enough_ratings(arm: ArmStats, config: GuardrailConfig) -> bool:
    """The arm has `min_samples` ratings from `min_users` distinct users."""
    return arm.ratings >= config.min_samples and arm.rated >= config.min_users


def enough_answers(arm: ArmStats, count: int, config: GuardrailConfig, minimum: int | None = None) -> bool:
    """`count` of the arm's answers reach `minimum` (`min_samples` unless given), and it served
    `min_users` distinct users."""
    needed = config.min_samples if minimum is None else minimum
    return count >= needed and arm.served_users >= config.min_users


def latency_ratio(stats: CanaryStats, config: GuardrailConfig) -> float | None:
    """The canary's median seconds per output token over the control's; None while either arm has
    too few timed answers (or users) to compare."""
    canary, control = stats.canary, stats.control
    if not (enough_answers(canary, canary.timed, config) and enough_answers(control, control.timed, config)):
        return None
    if canary.median_s_per_token is None or not control.median_s_per_token:
        return None
    return canary.median_s_per_token / control.median_s_per_token


def judge(stats: CanaryStats, config: GuardrailConfig) -> Verdict:
    """Judge one check: fail (worse by a significant margin, or past a limit), pass, or waiting."""
    canary, control = stats.canary, stats.control
    failures: list[str] = []
    rate = canary.error_rate
    if enough_answers(canary, canary.requests, config) and rate is not None and rate > config.max_error_rate:
        failures.append(
            f"error rate {rate:.3f} > {config.max_error_rate} ({canary.errors} of {canary.requests} requests)"
        )
    ratio = latency_ratio(stats, config)
    if ratio is not None and ratio > config.max_latency_ratio:
        failures.append(
            f"median latency per output token {canary.median_s_per_token:.4f}s is {ratio:.2f}x "
            f"{control.target}'s {control.median_s_per_token:.4f}s (limit {config.max_latency_ratio}x)"
        )
    facts = fact_error_test(stats, config)
    if facts is not None and facts.p_value < config.alpha:
        failures.append(
            f"critical fact errors {facts.canary_rate:.3f} vs {control.target}'s {facts.control_rate:.3f} "
            f"({facts.canary_errors} of {facts.canary_n} vs {facts.control_errors} of {facts.control_n} "
            f"checked answers contradict a verified fact), two-proportion z={facts.z:.2f}, one-sided "
            f"p={facts.p_value:.2g} < {config.alpha:g}"
        )
    test = None
    if enough_ratings(canary, config) and enough_ratings(control, config):
        test = compare_ratings(canary.users_ratings, control.users_ratings)
        bound = test.gap_lower_bound(config.confidence)
        if test.p_value < config.alpha and bound >= config.min_effect:
            failures.append(
                f"rated worse than {control.target}: mean {test.canary_mean:.2f} vs "
                f"{test.control_mean:.2f} stars (gap {test.gap:.2f}, {config.confidence:.0%} lower bound "
                f"{bound:.2f} >= {config.min_effect}), Mann-Whitney U={test.u_statistic:g}, "
                f"one-sided p={test.p_value:.2g} < {config.alpha:g}, {canary.rated} vs {control.rated} users"
            )
    if failures:
        return Verdict("fail", tuple(failures), test, facts)
    if test is None:
        return Verdict(
            "waiting",
            (
                f"ratings: canary {canary.ratings} from {canary.rated} users, {control.target} "
                f"{control.ratings} from {control.rated} users; need {config.min_samples} ratings from "
                f"{config.min_users} distinct users per arm",
            ),
            None,
            facts,
        )
    if test.gap >= config.min_effect:
        return Verdict(
            "waiting",
            (
                f"inconclusive: canary trails {control.target} by {test.gap:.2f} stars, not yet "
                f"significantly more than {config.min_effect} (p={test.p_value:.2g})",
            ),
            test,
            facts,
        )
    return Verdict(
        "pass",
        (
            f"mean {test.canary_mean:.2f} vs {control.target} {test.control_mean:.2f} stars "
            f"(p={test.p_value:.2g}), within limits",
        ),
        test,
        facts,
    )


def next_weight(percentage: float, config: GuardrailConfig) -> float | None:
    """The share the canary steps to from `percentage`; None when the next passing step promotes."""
    if percentage >= config.max_weight:
        return None
    higher = [weight for weight in config.step_weights if weight > percentage]
    return min(min(higher), config.max_weight) if higher else None


@dataclass(frozen=True)
class Decision:
    """An automatic action and the canary's share after it (0 after a rollback or a promotion)."""

    action: Action
    percentage: float


def decide(
    verdict: Verdict,
    *,
    failed_checks: int,
    percentage: float,
    fresh_canary_ratings: int,
    fresh_canary_users: int,
    config: GuardrailConfig,
) -> Decision | None:
    """The automatic action a check leads to, if any."""
    if verdict.result == "fail":
        return Decision("auto-rollback", 0.0) if failed_checks >= config.threshold else None
    fresh = fresh_canary_ratings >= config.min_samples and fresh_canary_users >= config.min_users
    if verdict.result != "pass" or not config.step_weights or not fresh:
        return None
    weight = next_weight(percentage, config)
    return Decision("auto-promote", 0.0) if weight is None else Decision("auto-step", weight)


def run_check(
    sessions: sessionmaker[Session],
    store: RolloutStore,
    config: GuardrailConfig,
    *,
    actor: str = ACTOR,
    now: datetime | None = None,
) -> CheckOutcome:
    """One guardrail step: read the rollout and both arms, judge, and act through `store`.

    Call it only while holding the guardrail's lease (one replica at a time)."""
    now = now or utcnow()
    rollout = store.fresh()
    if rollout.active_canary is None:
        return CheckOutcome(result=None)
    canary = rollout.active_canary
    with sessions() as session:
        since, step_since = canary_period(session, canary, changed_at=rollout.updated_at, now=now)

        def stats_at(until: datetime) -> CanaryStats:
            return collect(
                session,
                canary=canary,
                live=rollout.live_adapter,
                since=since,
                until=until,
                step_since=step_since,
            )

        stats = stats_at(now)
        verdict = judge(stats, config)
        failed = _failed_in_a_row(verdict, stats_at, since=since, now=now, config=config)
    decision = decide(
        verdict,
        failed_checks=failed,
        percentage=rollout.percentage,
        fresh_canary_ratings=stats.fresh_canary_ratings,
        fresh_canary_users=stats.fresh_canary_users,
        config=config,
    )
    details = check_details(stats, verdict, failed_checks=failed, config=config)
    if decision is None:
        return CheckOutcome(verdict.result, None, failed, verdict, details)
    action = decision.action
    details["percentage"] = {"from": rollout.percentage, "to": decision.percentage}
    reason = f"{action}: " + "; ".join(verdict.reasons)
    if action == "auto-rollback":
        reason += f"; {failed} failed checks in a row (threshold {config.threshold})"
    try:
        after = _act(store, action, decision.percentage, rollout, actor=actor, reason=reason, details=details)
    except RolloutConflict:
        # someone changed the rollout after this check read it: recorded as skipped, judged next interval
        return CheckOutcome(verdict.result, None, failed, verdict, details, skipped=action)
    return CheckOutcome(verdict.result, action, failed, verdict, details, after)


def _act(
    store: RolloutStore,
    action: Action,
    percentage: float,
    checked: Rollout,
    *,
    actor: str,
    reason: str,
    details: dict[str, Any],
) -> Rollout:
    """Take `action` only if the rollout is still the one the check judged (compare-and-set under the
    row lock; else `RolloutConflict`, audited as `<action>-skipped`); returns the rollout after it."""
    expect = [unchanged(checked)]
    if action == "auto-rollback":
        _, after = store.rollback(
            actor=actor, action=action, reason=reason, details=details, expect=expect, audit_conflict=True
        )
    elif action == "auto-promote":
        _, after = store.promote(
            actor=actor, action=action, reason=reason, details=details, expect=expect, audit_conflict=True
        )
    else:
        _, after = store.change(
            percentage=percentage,
            adapter=checked.adapter,
            actor=actor,
            action=action,
            reason=reason,
            details=details,
            expect=expect,
            audit_conflict=True,
        )
    return after


def _failed_in_a_row(
    verdict: Verdict,
    stats_at: Callable[[datetime], CanaryStats],
    *,
    since: datetime,
    now: datetime,
    config: GuardrailConfig,
) -> int:
    """Failed checks in a row ending with this one, replayed at the earlier check times (up to
    `threshold`; a check time before the canary period ends the row)."""
    if verdict.result != "fail":
        return 0
    failed = 1
    while failed < config.threshold:
        earlier = now - timedelta(seconds=config.interval_s * failed)
        if earlier < since or judge(stats_at(earlier), config).result != "fail":
            break
        failed += 1
    return failed


def check_details(
    stats: CanaryStats, verdict: Verdict, *, failed_checks: int, config: GuardrailConfig
) -> dict[str, Any]:
    """The numbers behind a check, JSON-ready (stored in the audit event of an automatic decision)."""
    test = verdict.test
    arms = {"canary": stats.canary, "control": stats.control}
    return {
        "result": verdict.result,
        "reasons": list(verdict.reasons),
        "canary": stats.canary.adapter,
        "control": {"target": stats.control.target, "adapter": stats.control.adapter},
        "since": stats.since.isoformat(),
        "until": stats.until.isoformat(),
        "rule": USER_RULE,
        "samples": {name: arm.rated for name, arm in arms.items()},
        "ratings": {name: arm.ratings for name, arm in arms.items()},
        "users": {name: {"rated": arm.rated, "served": arm.served_users} for name, arm in arms.items()},
        "stars": {name: list(arm.stars) for name, arm in arms.items()},
        "means": {name: _rounded(arm.mean) for name, arm in arms.items()},
        "test": "mann-whitney-u, one-sided (canary lower), asymptotic with tie correction",
        "u_statistic": test.u_statistic if test else None,
        "p_value": test.p_value if test else None,
        "prob_canary_better": _rounded(test.prob_canary_better) if test else None,
        "confidence": config.confidence,
        "min_effect": config.min_effect,
        "gap": _rounded(test.gap) if test else None,
        "gap_lower_bound": _rounded(test.gap_lower_bound(config.confidence)) if test else None,
        "min_samples": config.min_samples,
        "min_users": config.min_users,
        "fresh_canary_ratings": stats.fresh_canary_ratings,
        "fresh_canary_users": stats.fresh_canary_users,
        "threshold": config.threshold,
        "failed_checks": failed_checks,
        "interval_s": config.interval_s,
        "requests": {name: arm.requests for name, arm in arms.items()},
        "errors": {name: arm.errors for name, arm in arms.items()},
        "error_rates": {name: _rounded(arm.error_rate) for name, arm in arms.items()},
        "latency": {
            "measure": "seconds per output token (latency_s / completion_tokens), answers that did not fail",
            "answers": {name: arm.timed for name, arm in arms.items()},
            "median_s_per_token": {name: _rounded(arm.median_s_per_token, 6) for name, arm in arms.items()},
            "p90_s_per_token": {name: _rounded(arm.p90_s_per_token, 6) for name, arm in arms.items()},
            "ratio": _rounded(latency_ratio(stats, config)),
        },
        "fact_errors": {
            "measure": "answers with a critical fact error (a figure contradicting a verified registry "
            "fact) over the answers the background fact check has read",
            "test": "two-proportion z-test, one-sided (canary higher), pooled",
            "checked": {name: arm.fact_checked for name, arm in arms.items()},
            "critical": {name: arm.fact_critical for name, arm in arms.items()},
            "rates": {name: _rounded(arm.fact_error_rate) for name, arm in arms.items()},
            "z": _rounded(verdict.fact_test.z) if verdict.fact_test else None,
            "p_value": verdict.fact_test.p_value if verdict.fact_test else None,
            "confidence": config.confidence,
            "min_answers": config.min_fact_answers,
        },
        "limits": {"max_error_rate": config.max_error_rate, "max_latency_ratio": config.max_latency_ratio},
        "step_weights": list(config.step_weights),
        "max_weight": config.max_weight,
    }


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)
