"""Prometheus metrics of one app instance (own registry, so tests can build many apps)."""

from __future__ import annotations

from functools import partial

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from feedback.spool import KINDS, Kind
from feedback.store import StoredRating
from feedback.writer import FeedbackWriter

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15)


class Metrics:
    """Every metric the service exports under the `zantara_` prefix."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "zantara_requests",
            "Chat completion requests by variant and outcome (variant none: refused before routing).",
            ["variant", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "zantara_request_duration_seconds",
            "Chat completion latency, request to last token.",
            ["variant"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "zantara_time_to_first_token_seconds",
            "Time from request to the first generated token.",
            ["variant"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "zantara_prompt_tokens", "Prompt tokens processed.", ["variant"], registry=r
        )
        self.cached_prompt_tokens = Counter(
            "zantara_cached_prompt_tokens",
            "Prompt tokens whose keys and values came from the prefix cache (not prefilled again).",
            ["variant"],
            registry=r,
        )
        self.generated_tokens = Counter(
            "zantara_generated_tokens", "Completion tokens generated.", ["variant"], registry=r
        )
        self.ratings = Counter(
            "zantara_ratings",
            "Star ratings stored (first ratings and re-ratings), by variant and stars.",
            ["variant", "stars"],
            registry=r,
        )
        self.ratings_replaced = Counter(
            "zantara_ratings_replaced",
            "Stored ratings replaced by a re-rating, by variant and the stars they had.",
            ["variant", "stars"],
            registry=r,
        )
        self.rating_stars = Histogram(
            "zantara_rating_stars",
            "Star ratings stored. Mean satisfaction per variant, as the database holds it: "
            "(_sum - zantara_rating_stars_replaced_sum) / (_count - zantara_rating_stars_replaced_count).",
            ["variant"],
            buckets=(1, 2, 3, 4, 5),
            registry=r,
        )
        self.rating_stars_replaced = Histogram(
            "zantara_rating_stars_replaced",
            "Star ratings replaced by a re-rating (subtract from zantara_rating_stars).",
            ["variant"],
            buckets=(1, 2, 3, 4, 5),
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
            "Writes given up: interactions over the buffer limit, spooled ratings whose answer never came.",
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
        self.adapters_loaded = Gauge(
            "zantara_adapters_loaded", "LoRA adapters loaded in the engine.", registry=r
        )
        self.model_ready = Gauge("zantara_model_ready", "1 when the model is loaded and serving.", registry=r)
        self.requests.labels("none", "rejected")
        for kind in KINDS:
            self.feedback_dropped.labels(kind)
        for variant in ("base", "tuned"):
            for status in ("ok", "error"):
                self.requests.labels(variant, status)
            self.request_latency.labels(variant)
            self.time_to_first_token.labels(variant)
            self.generated_tokens.labels(variant)
            self.prompt_tokens.labels(variant)
            self.cached_prompt_tokens.labels(variant)
            self.rating_stars.labels(variant)
            self.rating_stars_replaced.labels(variant)
            for stars in range(1, 6):
                self.ratings.labels(variant, str(stars))
                self.ratings_replaced.labels(variant, str(stars))

    def count_rating(self, stored: StoredRating) -> None:
        """Count a rating once it is committed to the database (directly or from the spool): the new
        stars are added and the stars it replaced subtracted, so the mean matches the stored ratings."""
        self.ratings.labels(stored.variant, str(stored.stars)).inc()
        self.rating_stars.labels(stored.variant).observe(stored.stars)
        if stored.replaced is not None:
            self.ratings_replaced.labels(stored.variant, str(stored.replaced)).inc()
            self.rating_stars_replaced.labels(stored.variant).observe(stored.replaced)

    def watch_feedback(self, writer: FeedbackWriter) -> None:
        """Read the writer's spool, buffer, drops and database state at every scrape."""
        for kind in KINDS:
            self.spool_pending.labels(kind).set_function(partial(_spooled, writer, kind))
        self.interaction_buffer.set_function(lambda: writer.buffered)
        self.database_up.set_function(lambda: 1 if writer.database_up else 0)


def _spooled(writer: FeedbackWriter, kind: Kind) -> int:
    return writer.spooled()[kind]
