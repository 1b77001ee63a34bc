"""All service settings in one pydantic-settings class (environment prefix `ZANTARA_`)."""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from knowledge.paths import FACTS_FILE

DEMO_BASE_MODEL = "zantara-demo-base"
"""Sentinel base-model name: the tiny demo model, built under `var_dir/models/` on first start."""

GPU_MEMORY_UTILIZATION = 0.90
"""vllm engine on a GPU: vLLM's default share of GPU memory when VLLM_GPU_MEMORY_UTILIZATION is unset."""
CPU_MEMORY_UTILIZATION = 0.40
"""vllm engine on vLLM's CPU build: the share of host RAM its worker may reserve when
VLLM_GPU_MEMORY_UTILIZATION is unset (vLLM's 0.9 would take a shared host's memory)."""


class Settings(BaseSettings):
    """Service configuration; every field can be set as `ZANTARA_<FIELD>` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="ZANTARA_",
        env_file=".env",
        extra="ignore",
        hide_input_in_errors=True,
        validate_by_name=True,  # fields read from several variables (aliases) are still set by name
    )

    environment: Literal["development", "production"] = Field(
        "development",
        description="`production` refuses missing or short tokens and keys, and missing API keys unless "
        "OPEN_ACCESS.",
    )
    var_dir: Path = Field(Path("var"), description="Where the embedded defaults keep state.")
    database_url: str = Field(
        "", repr=False, description="SQLAlchemy URL; default: SQLite file under var_dir."
    )
    migrate_on_start: bool = Field(True, description="Run `alembic upgrade head` when the service starts.")

    engine: Literal["hf", "vllm", "openai"] = Field(
        "hf",
        description="hf: transformers + PEFT in process; vllm: vLLM multi-LoRA in process; openai: a remote "
        "OpenAI-compatible server (UPSTREAM_URLS).",
    )
    base_model: str = Field(DEMO_BASE_MODEL, description="Hub id or path; the default builds the demo model.")
    served_model_alias: str = Field("zantara", description="The routed model name the backend chat sends.")
    models_dir: Path | None = Field(
        None, description="Where the demo base model is built; default var_dir/models."
    )
    adapters_dir: Path | None = Field(None, description="Adapters loaded at start: DIR/NAME/VERSION/.")
    build_demo_adapter: bool = Field(True, description="With the demo base, also build the demo adapter.")
    device: str = Field("auto", description="torch device for the hf engine: auto, cpu, cuda.")
    max_batch_size: int = Field(32, ge=1, le=512, description="Requests one forward pass decodes together.")
    batch_window_s: float = Field(0.004, ge=0, le=1, description="Wait for companions of a lone request.")
    default_max_tokens: int = Field(256, ge=1, description="max_tokens of a request that sets none.")
    max_tokens_limit: int = Field(4096, ge=1, description="The largest max_tokens accepted (422 beyond).")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Larger request bodies get a 413.")
    max_messages: int = Field(256, ge=1, description="Messages per chat request.")
    max_message_chars: int = Field(65_536, ge=1, description="Characters per message (or text part).")
    max_concurrent_requests_per_key: int = Field(
        16,
        ge=0,
        validation_alias=AliasChoices(
            "ZANTARA_MAX_CONCURRENT_REQUESTS_PER_KEY", "ZANTARA_MAX_STREAMS_PER_KEY"
        ),
        description="Chat requests (streamed or not) in flight per caller: its API key when it is one "
        "of API_KEYS, else its client address; beyond it a 429. 0: off. Also read from the old "
        "MAX_STREAMS_PER_KEY.",
    )
    max_concurrent_requests: int = Field(
        48,
        ge=0,
        description="Chat requests in flight over all callers (generating or waiting for the engine); "
        "beyond it a 503. 0: off.",
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1,::1",
        description="Proxies trusted to name the client in X-Forwarded-For (comma-separated addresses "
        "or networks, `*`: any); the header from anyone else is ignored.",
    )
    graceful_shutdown_s: int = Field(
        25, ge=0, description="On SIGTERM, how long running requests and streams may take to finish."
    )
    torch_threads: int = Field(
        0,
        ge=0,
        description="torch intra-op threads for the hf engine; 0: half the cores on a CPU, torch's "
        "default on a GPU.",
    )
    prefix_cache_tokens: int = Field(
        4096,
        ge=0,
        description="Prompt-prefix keys and values the hf engine keeps for reuse (tokens); 0: off.",
    )
    vllm_max_loras: int = Field(4, ge=1, description="vllm engine: adapters batched on the GPU at once.")
    vllm_max_lora_rank: int = Field(64, ge=1, description="vllm engine: the largest LoRA rank it accepts.")
    vllm_max_cpu_loras: int = Field(8, ge=1, description="vllm engine: adapters kept in CPU memory.")
    vllm_gpu_memory_utilization: float | None = Field(
        None,
        gt=0,
        le=1,
        description="vllm engine: share of GPU memory for weights and KV cache (on vLLM's CPU build: "
        "the share of host RAM its worker reserves, used only when VLLM_CPU_KVCACHE_SPACE_GIB is 0). "
        f"Default: {GPU_MEMORY_UTILIZATION} on a GPU, {CPU_MEMORY_UTILIZATION} on a CPU.",
    )
    vllm_cpu_kvcache_space_gib: int = Field(
        4,
        ge=0,
        description="vllm engine on vLLM's CPU build: GiB of host RAM for the KV cache, exported as "
        "VLLM_CPU_KVCACHE_SPACE before vLLM starts unless that is set already; 0: leave it unset (then "
        "VLLM_GPU_MEMORY_UTILIZATION's share of host RAM decides). Not used on a GPU.",
    )
    vllm_max_model_len: int | None = Field(
        None,
        ge=16,
        description="vllm engine: prompt + answer tokens; default: the model's max_position_embeddings "
        "(a larger value stops the start with an error).",
    )
    vllm_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="vllm engine: weights and activations; auto: the checkpoint's (fp32 checkpoints "
        "become bf16/fp16 on vLLM). float32 for token-exact comparisons with the hf engine.",
    )
    vllm_quantization: str | None = Field(None, description="vllm engine: e.g. awq, gptq, fp8; none: off.")
    vllm_tensor_parallel_size: int = Field(1, ge=1, description="vllm engine: GPUs one model spans.")
    inject_system_prompt: bool = Field(True, description="Add ZANTARA's system prompt when none is sent.")
    interaction_buffer_size: int = Field(
        10_000, ge=1, description="Interactions held in memory while they wait for the database."
    )
    spool_retry_s: float = Field(
        1.0, gt=0, le=60, description="While the database is down, how often it is tried again."
    )
    spool_orphan_ttl_s: float = Field(
        86_400.0, ge=0, description="How long a spooled rating of an unknown answer waits for it."
    )
    spool_max_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1,
        description="Payload bytes the spool holds at most: beyond it ratings get a 503 and interactions "
        "are dropped (counted). Keep it under the `var` volume's size.",
    )
    spool_max_tries: int = Field(
        3,
        ge=1,
        le=100,
        description="Replays of a spooled write the database refuses for its data before it is set aside "
        "in the dead_letters table.",
    )

    default_rollout_percentage: float = Field(
        20.0, ge=0, le=100, description="The canary share until ops first set one."
    )
    rollout_cache_s: float = Field(2.0, ge=0, description="How long a replica trusts its cached rollout.")
    adapter_sync_s: float = Field(
        2.0, gt=0, le=300, description="How often a replica loads the rollout's new live/canary versions."
    )
    rollout_salt: str = Field("zantara", description="Salt of the sticky user hash (bucketing).")
    user_hash_key: str = Field(
        "", repr=False, description="HMAC key of stored user keys (secret); generated into var_dir if empty."
    )

    admin_token: str = Field(
        "", repr=False, description="Bearer token for /admin; generated into var_dir if empty."
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, repr=False, description="Keys for /v1; empty: open."
    )
    open_access: bool = Field(
        False, description="Production: allow /v1 without API keys (production refuses to start otherwise)."
    )
    review_session_ttl_s: int = Field(
        12 * 3600, ge=60, description="How long a reviewer's sign-in (session cookie) lasts."
    )
    ab_overlap: int = Field(2, ge=1, le=20, description="Distinct reviewers who judge each blind A/B pair.")
    ab_lease_s: int = Field(
        1800, ge=10, description="How long a pair shown but not yet judged holds a reviewer's place."
    )
    canary_enabled: bool = Field(
        True, description="Run the canary guardrail (rollback always; stepping only with step weights)."
    )
    canary_interval_s: float = Field(60.0, gt=0, description="Seconds between guardrail checks.")
    canary_threshold: int = Field(5, ge=1, description="Failed checks in a row before an auto-rollback.")
    canary_min_samples: int = Field(
        30, ge=2, description="Ratings per arm (answers, for errors and latency) before a check judges them."
    )
    canary_min_users: int = Field(
        20, ge=1, description="Distinct users per arm behind those ratings (answers) before a check judges."
    )
    canary_step_weights: Annotated[list[int], NoDecode] = Field(
        default_factory=list, description="Canary shares to step through, e.g. 20,50,100; empty: no stepping."
    )
    canary_max_weight: float = Field(100.0, gt=0, le=100, description="From this share a pass promotes.")
    canary_max_error_rate: float = Field(0.05, ge=0, le=1, description="Canary failed-generation limit.")
    canary_max_latency_ratio: float = Field(
        1.5, gt=1, description="Limit of the canary's median seconds per output token over the control's."
    )
    canary_confidence: float = Field(0.98, gt=0.5, lt=1, description="Confidence of the rating test.")
    canary_min_effect: float = Field(
        0.25, ge=0, le=4, description="Stars the canary's mean must trail by for a significant test to fail."
    )

    dataset_reviews_required: int = Field(
        1, ge=1, le=10, description="Reviewers whose verdicts a dataset record needs before it is decided."
    )
    facts_path: Path = Field(
        FACTS_FILE,
        description="Fact registry the review queue checks corrected answers against, and served answers "
        "are checked against in the background.",
    )

    fact_check_enabled: bool = Field(
        True,
        description="Check every served answer's figures against the fact registry in the background "
        "(stored with the interaction, counted in zantara_answer_fact_errors_total; answers with a "
        "critical error go to the review queue).",
    )
    canary_fact_min_answers: int = Field(
        100,
        ge=2,
        description="Fact-checked answers per arm (from canary_min_users users) before the guardrail "
        "compares the canary's critical-error rate with the control's.",
    )
    quality_refresh_s: float = Field(
        60.0, gt=0, description="How often the per-adapter correction rate and rater gauges are read."
    )
    quality_window_s: float = Field(
        7 * 86400.0,
        gt=0,
        description="The answers (served this many seconds back) the per-adapter correction rate and "
        "raters count.",
    )

    host: str = Field("127.0.0.1", description="Bind address of `zantara serve`.")
    port: int = Field(8000, description="Port of `zantara serve`.")
    log_level: str = Field("info", description="Log level of the service and uvicorn.")

    upstream_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="openai engine: the OpenAI-compatible servers' `.../v1` base URLs (comma-separated).",
    )
    upstream_api_key: str = Field(
        "", repr=False, description="openai engine: bearer token sent to every upstream (secret)."
    )
    upstream_admin_token: str = Field(
        "",
        repr=False,
        description="openai engine: bearer token of the upstreams' adapter loads and unloads (their admin "
        "token, secret); empty: the upstream API key.",
    )
    upstream_timeout_s: float = Field(
        120.0, gt=0, description="openai engine: longest wait for an upstream's next byte or a connection."
    )
    upstream_connect_timeout_s: float = Field(
        3.0, gt=0, description="openai engine: longest wait to connect; past it, the next upstream is tried."
    )
    upstream_max_connections: int = Field(
        256, ge=1, description="openai engine: open connections per upstream (each streams one answer)."
    )

    @field_validator("api_keys", "upstream_urls", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("canary_step_weights", mode="before")
    @classmethod
    def _split_weights(cls, value: object) -> object:
        if isinstance(value, str):
            value = [int(part) for part in value.split(",") if part.strip()]
        if isinstance(value, list) and not all(0 < int(w) <= 100 for w in value):
            raise ValueError("canary step weights are shares within 1-100")
        return sorted(set(value)) if isinstance(value, list) else value

    @model_validator(mode="after")
    def _refuse_unsafe_secrets(self) -> Settings:
        if self.environment == "production":
            for name in ("admin_token", "user_hash_key"):
                if len(getattr(self, name)) < 16:
                    raise ValueError(f"ZANTARA_{name.upper()} must be set (16+ characters) in production")
            if not self.api_keys and not self.open_access:
                raise ValueError(
                    "ZANTARA_API_KEYS must be set in production (or ZANTARA_OPEN_ACCESS=true for an open /v1)"
                )
        return self

    @cached_property
    def resolved_database_url(self) -> str:
        """The configured database URL, or the embedded SQLite file under `var_dir`."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.var_dir / 'zantara.db').resolve()}"

    @property
    def demo_base_path(self) -> Path:
        """Where the demo base model lives."""
        return (self.models_dir or self.var_dir / "models") / DEMO_BASE_MODEL

    @property
    def resolved_adapters_dir(self) -> Path:
        """Folder scanned for adapters at start."""
        return self.adapters_dir if self.adapters_dir is not None else self.var_dir / "adapters"

    @property
    def uses_demo_model(self) -> bool:
        """True when the base model is the project's own tiny demo model."""
        return self.base_model == DEMO_BASE_MODEL

    def ensure_secrets(self) -> None:
        """Every secret the service needs: set, or (in development) generated once into var_dir."""
        self.ensure_admin_token()
        self.ensure_user_hash_key()

    def ensure_admin_token(self) -> str:
        """The admin token; in development a random one is generated once and kept in var_dir."""
        return self._ensure_secret("admin_token", "admin-token")

    def ensure_user_hash_key(self) -> str:
        """The HMAC key of stored user keys; in development generated once and kept in var_dir."""
        return self._ensure_secret("user_hash_key", "user-hash-key")

    def _ensure_secret(self, field: str, file_name: str) -> str:
        """`field` when set, else the one kept in `var_dir/file_name` (created, mode 0600, if missing)."""
        if getattr(self, field):
            return str(getattr(self, field))
        secret_file = self.var_dir / file_name
        if secret_file.exists():
            value = secret_file.read_text().strip()
        else:
            secret_file.parent.mkdir(parents=True, exist_ok=True)
            secret_file.touch(mode=0o600)
            value = secrets.token_urlsafe(24)
            secret_file.write_text(value + "\n")
        setattr(self, field, value)
        return value
