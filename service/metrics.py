"""Prometheus metrics of one app instance (own registry, so tests can build many apps)."""

from __future__ import annotations

from functools import partial

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from feedback.answer_facts import SEVERITIES
from feedback.quality import AdapterQuality
from feedback.records import InteractionRecord, StoredRating, adapter_key
from feedback.spool import KINDS, Kind
from feedback.writer import FeedbackWriter

SERVED_BY = ["variant", "adapter", "target"]
"""Labels of every request, latency, token and rating metric: the variant (`base|tuned`), the adapter
(`NAME@VERSION`, "" for base) and the router's target (`base|live|canary`, `pinned` when the request
named its model), so dashboards can show each adapter version apart."""

ROLLOUT_ACTIONS = ("initial", "set", "promote", "rollback", "auto-rollback", "auto-step", "auto-promote")
EVAL_SCORES = ("fact_precision", "consistency")

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15)


class Metrics:
    """Every metric the service exports under the `zantara_` prefix."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "zantara_requests",
            "Chat completion requests by variant, adapter, target and outcome (variant none: refused "
            "before routing, status rejected for a 4xx, overloaded for the 503 of a full service).",
            [*SERVED_BY, "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "zantara_request_duration_seconds",
            "Chat completion latency, request to last token.",
            SERVED_BY,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "zantara_time_to_first_token_seconds",
            "Time from request to the first generated token.",
            SERVED_BY,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "zantara_prompt_tokens", "Prompt tokens processed.", SERVED_BY, registry=r
        )
        self.cached_prompt_tokens = Counter(
            "zantara_cached_prompt_tokens",
            "Prompt tokens whose keys and values came from the prefix cache (not prefilled again).",
            SERVED_BY,
            registry=r,
        )
        self.generated_tokens = Counter(
            "zantara_generated_tokens", "Completion tokens generated.", SERVED_BY, registry=r
        )
        self.ratings = Counter(
            "zantara_ratings",
            "Star ratings stored (first ratings and re-ratings), by variant, adapter, target and stars.",
            [*SERVED_BY, "stars"],
            registry=r,
        )
        self.ratings_replaced = Counter(
            "zantara_ratings_replaced",
            "Stored ratings replaced by a re-rating, by variant, adapter, target and the stars they had.",
            [*SERVED_BY, "stars"],
            registry=r,
        )
        self.rating_stars = Histogram(
            "zantara_rating_stars",
            "Star ratings stored. Mean satisfaction per variant, as the database holds it: "
            "(_sum - zantara_rating_stars_replaced_sum) / (_count - zantara_rating_stars_replaced_count).",
            SERVED_BY,
            buckets=(1, 2, 3, 4, 5),
            registry=r,
        )
        self.rating_stars_replaced = Histogram(
            "zantara_rating_stars_replaced",
            "Star ratings replaced by a re-rating (subtract from zantara_rating_stars).",
            SERVED_BY,
            buckets=(1, 2, 3, 4, 5),
            registry=r,
        )
        self.answer_fact_errors = Counter(
            "zantara_answer_fact_errors",
            "Figures of served answers that disagree with the fact registry, checked in the background: "
            "severity critical (contradicts a verified fact; the answer goes to the review queue) or "
            "warning (only against facts waiting for the team's confirmation).",
            [*SERVED_BY, "severity"],
            registry=r,
        )
        self.answers_fact_checked = Counter(
            "zantara_answers_fact_checked",
            "Served answers whose figures were checked against the fact registry.",
            SERVED_BY,
            registry=r,
        )
        self.answers_fact_critical = Counter(
            "zantara_answers_fact_critical",
            "Served answers with at least one critical fact error (the guardrail's critical-error rate "
            "is this over zantara_answers_fact_checked).",
            SERVED_BY,
            registry=r,
        )
        self.adapter_correction_rate = Gauge(
            "zantara_adapter_correction_rate",
            "Share of an adapter version's answers (served within ZANTARA_QUALITY_WINDOW_S) that reviewers "
            "corrected, read from the database every ZANTARA_QUALITY_REFRESH_S (every replica reads the "
            "same numbers: aggregate with max, not sum).",
            ["adapter"],
            registry=r,
        )
        self.adapter_raters = Gauge(
            "zantara_adapter_raters",
            "Distinct users who rated an adapter version's answers (served within "
            "ZANTARA_QUALITY_WINDOW_S), read like zantara_adapter_correction_rate.",
            ["adapter"],
            registry=r,
        )
        self.spool_pending = Gauge(
            "zantara_spool_pending",
            "Writes waiting in the local durable spool for the database, by kind.",
            ["kind"],
            registry=r,
        )
        self.interaction_buffer = Gauge(
            "zantara_interaction_buffer_pending",
            "Interactions waiting in memory to be written to the database.",
            registry=r,
        )
        self.feedback_dropped = Counter(
            "zantara_feedback_dropped",
            "Writes given up: interactions over the buffer limit or the spool's size, spooled ratings "
            "whose answer never came.",
            ["kind"],
            registry=r,
        )
        self.feedback_refused = Counter(
            "zantara_feedback_refused",
            "Ratings refused with a 503 by reason (spool_full: the database is away and the spool holds "
            "ZANTARA_SPOOL_MAX_BYTES).",
            ["reason"],
            registry=r,
        )
        self.feedback_dead_letters = Counter(
            "zantara_feedback_dead_letters",
            "Writes the database refused for their data (text it cannot hold, a constraint), set aside "
            "in the dead_letters table instead of blocking the writes behind them.",
            ["kind"],
            registry=r,
        )
        self.database_up = Gauge(
            "zantara_database_up", "1 while the database takes writes, 0 while they are spooled.", registry=r
        )
        self.rollout_percentage = Gauge(
            "zantara_rollout_percentage", "Share of users routed to the tuned variant (0-100).", registry=r
        )
        self.rollout_changes = Counter(
            "zantara_rollout_changes", "Rollout changes by action.", ["action"], registry=r
        )
        self.canary_decisions = Counter(
            "zantara_canary_decisions",
            "Automatic canary decisions by action (auto-rollback, auto-step, auto-promote).",
            ["action"],
            registry=r,
        )
        self.canary_checks = Counter(
            "zantara_canary_checks",
            "Canary guardrail checks by result (pass, fail, waiting).",
            ["result"],
            registry=r,
        )
        self.canary_p_value = Gauge(
            "zantara_canary_p_value",
            "One-sided p-value of the last canary rating test (canary rated lower); NaN when none ran.",
            registry=r,
        )
        self.adapter_eval_score = Gauge(
            "zantara_adapter_eval_score",
            "Evaluation scores (0-1) of each loaded adapter version from its gate report, by metric "
            "(fact_precision: critical-fact precision; consistency).",
            ["adapter", "metric"],
            registry=r,
        )
        for action in ROLLOUT_ACTIONS:
            self.rollout_changes.labels(action)
        for action in ("auto-rollback", "auto-step", "auto-promote"):
            self.canary_decisions.labels(action)
        for result in ("pass", "fail", "waiting"):
            self.canary_checks.labels(result)
        self.canary_p_value.set(float("nan"))
        self.adapters_loaded = Gauge(
            "zantara_adapters_loaded", "LoRA adapters loaded in the engine.", registry=r
        )
        self.model_ready = Gauge("zantara_model_ready", "1 when the model is loaded and serving.", registry=r)
        self.requests.labels("none", "", "none", "rejected")
        self.requests.labels("none", "", "none", "overloaded")
        for kind in KINDS:
            self.feedback_dropped.labels(kind)
            self.feedback_dead_letters.labels(kind)
        self.feedback_refused.labels("spool_full")
        self.serving("base", "", "base")

    def serving(self, variant: str, adapter: str, target: str) -> None:
        """Create every series of one (variant, adapter, target) at zero, so that rates and ratios
        exist in Prometheus before the first request or rating of a newly routed adapter."""
        served = (variant, adapter, target)
        for status in ("ok", "error", "cancelled"):
            self.requests.labels(*served, status)
        for metric in (
            self.request_latency,
            self.time_to_first_token,
            self.generated_tokens,
            self.prompt_tokens,
            self.cached_prompt_tokens,
            self.rating_stars,
            self.rating_stars_replaced,
            self.answers_fact_checked,
            self.answers_fact_critical,
        ):
            metric.labels(*served)
        for severity in SEVERITIES:
            self.answer_fact_errors.labels(*served, severity)
        for stars in range(1, 6):
            self.ratings.labels(*served, str(stars))
            self.ratings_replaced.labels(*served, str(stars))

    def adapter_scores(self, adapter: str, scores: dict[str, object]) -> None:
        """Export an adapter version's evaluation scores (those its gate report holds)."""
        for metric in EVAL_SCORES:
            value = scores.get(metric)
            if isinstance(value, int | float):
                self.adapter_eval_score.labels(adapter, metric).set(float(value))

    def count_refused(self, status: str) -> None:
        """A chat request refused before routing (limits, bad input)."""
        self.requests.labels("none", "", "none", status).inc()

    def count_rating(self, stored: StoredRating) -> None:
        """Count a rating once it is committed to the database (directly or from the spool): the new
        stars are added and the stars it replaced subtracted, so the mean matches the stored ratings."""
        served = (stored.variant, stored.adapter, stored.target or _target_before_0003(stored.variant))
        self.ratings.labels(*served, str(stored.stars)).inc()
        self.rating_stars.labels(*served).observe(stored.stars)
        if stored.replaced is not None:
            self.ratings_replaced.labels(*served, str(stored.replaced)).inc()
            self.rating_stars_replaced.labels(*served).observe(stored.replaced)

    def count_fact_check(self, record: InteractionRecord) -> None:
        """Count one answer's background fact check (the feedback writer's `on_checked`)."""
        adapter = adapter_key(record.adapter_name, record.adapter_version)
        served = (record.variant, adapter, record.target or "")
        self.answers_fact_checked.labels(*served).inc()
        if record.fact_critical:
            self.answers_fact_critical.labels(*served).inc()
            self.answer_fact_errors.labels(*served, "critical").inc(record.fact_critical)
        if record.fact_warnings:
            self.answer_fact_errors.labels(*served, "warning").inc(record.fact_warnings)

    def adapter_quality(self, qualities: list[AdapterQuality]) -> None:
        """Replace the per-adapter correction rate and rater gauges with a fresh reading."""
        self.adapter_correction_rate.clear()
        self.adapter_raters.clear()
        for quality in qualities:
            self.adapter_correction_rate.labels(quality.adapter).set(quality.correction_rate)
            self.adapter_raters.labels(quality.adapter).set(quality.raters)

    def watch_feedback(self, writer: FeedbackWriter) -> None:
        """Read the writer's spool, buffer, drops and database state at every scrape."""
        for kind in KINDS:
            self.spool_pending.labels(kind).set_function(partial(_spooled, writer, kind))
        self.interaction_buffer.set_function(lambda: writer.buffered)
        self.database_up.set_function(lambda: 1 if writer.database_up else 0)


def _target_before_0003(variant: str) -> str:
    """The target of an answer stored before targets were recorded: the tuned variant was the canary."""
    return "base" if variant == "base" else "canary"


def _spooled(writer: FeedbackWriter, kind: Kind) -> int:
    return writer.spooled()[kind]
