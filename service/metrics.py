"""Prometheus metrics of one app instance (own registry, so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
            "Star ratings received, by variant and stars.",
            ["variant", "stars"],
            registry=r,
        )
        self.rating_stars = Histogram(
            "zantara_rating_stars",
            "Star ratings; _sum/_count is the mean satisfaction per variant.",
            ["variant"],
            buckets=(1, 2, 3, 4, 5),
            registry=r,
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
        for variant in ("base", "tuned"):
            for status in ("ok", "error"):
                self.requests.labels(variant, status)
            self.request_latency.labels(variant)
            self.time_to_first_token.labels(variant)
            self.generated_tokens.labels(variant)
            self.prompt_tokens.labels(variant)
            self.cached_prompt_tokens.labels(variant)
            self.rating_stars.labels(variant)
            for stars in range(1, 6):
                self.ratings.labels(variant, str(stars))
