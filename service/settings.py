"""All service settings in one pydantic-settings class (environment prefix `ZANTARA_`)."""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEMO_BASE_MODEL = "zantara-demo-base"
"""Sentinel base-model name: the tiny demo model, built under `var_dir/models/` on first start."""


class Settings(BaseSettings):
    """Service configuration; every field can be set as `ZANTARA_<FIELD>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="ZANTARA_", env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = "development"
    var_dir: Path = Field(Path("var"), description="Where the embedded defaults keep state.")
    database_url: str = Field("", description="SQLAlchemy URL; default: SQLite file under var_dir.")
    migrate_on_start: bool = Field(True, description="Run `alembic upgrade head` when the service starts.")

    engine: Literal["hf", "vllm", "openai"] = "hf"
    base_model: str = Field(DEMO_BASE_MODEL, description="Hub id or path; the default builds the demo model.")
    served_model_alias: str = Field("zantara", description="The routed model name the backend chat sends.")
    models_dir: Path | None = Field(
        None, description="Where the demo base model is built; default var_dir/models."
    )
    adapters_dir: Path | None = Field(None, description="Adapters loaded at start: DIR/NAME/VERSION/.")
    build_demo_adapter: bool = Field(True, description="With the demo base, also build the demo adapter.")
    device: str = Field("auto", description="torch device for the hf engine: auto, cpu, cuda.")
    max_batch_size: int = Field(32, ge=1, le=512)
    batch_window_s: float = Field(0.004, ge=0, le=1, description="Wait for companions of a lone request.")
    default_max_tokens: int = Field(256, ge=1)
    max_tokens_limit: int = Field(4096, ge=1)
    torch_threads: int = Field(
        0, ge=0, description="torch intra-op threads for the hf engine; 0: torch's default."
    )
    prefix_cache_tokens: int = Field(
        4096,
        ge=0,
        description="Prompt-prefix keys and values the hf engine keeps for reuse (tokens); 0: off.",
    )
    inject_system_prompt: bool = Field(True, description="Add ZANTARA's system prompt when none is sent.")

    default_rollout_percentage: float = Field(20.0, ge=0, le=100)
    rollout_cache_s: float = Field(2.0, ge=0, description="How long a replica trusts its cached rollout.")
    rollout_salt: str = Field("zantara", description="Salt of the sticky user hash (bucketing).")
    user_hash_salt: str = Field("", description="Salt for stored user keys; default: the rollout salt.")

    admin_token: str = Field("", description="Bearer token for /admin; generated into var_dir if empty.")
    reviewer_token: str = Field("", description="Bearer token for the review pages.")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Keys for /v1; empty: open."
    )

    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_secrets(self) -> Settings:
        if self.environment == "production":
            for name in ("admin_token", "reviewer_token"):
                if len(getattr(self, name)) < 16:
                    raise ValueError(f"ZANTARA_{name.upper()} must be set (16+ characters) in production")
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

    def ensure_admin_token(self) -> str:
        """The admin token; in development a random one is generated once and kept in var_dir."""
        if self.admin_token:
            return self.admin_token
        token_file = self.var_dir / "admin-token"
        if token_file.exists():
            self.admin_token = token_file.read_text().strip()
        else:
            token_file.parent.mkdir(parents=True, exist_ok=True)
            self.admin_token = secrets.token_urlsafe(24)
            token_file.write_text(self.admin_token + "\n")
            token_file.chmod(0o600)
        return self.admin_token
