"""The one configuration object for every Rapport process.

Values come from the environment (prefix ``RAPPORT_``, nested sections joined by ``__``, e.g.
``RAPPORT_KAFKA__TOPIC_PREFIX=test-``) or from a ``.env`` file in the working directory. Nothing here
opens a connection: processes build their clients from these values when they start.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.validation import ValidationLimits


class StackSettings(BaseModel):
    """The local Kafka + Redis stack that ``rapport stack up`` runs without Docker."""

    state_dir: Path = Field(Path(".rapport/stack"), description="PID files, logs, Kafka and Redis data.")
    cache_dir: Path = Field(
        Path("~/.cache/rapport").expanduser(),
        description="Kafka jars fetched from Maven Central, shared by every checkout.",
    )
    kafka_version: str = "3.9.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_heap: str = Field("1g", description="JVM -Xmx/-Xms for the broker.")
    redis_port: int = 6379
    start_timeout_s: float = 120.0


class KafkaSettings(BaseModel):
    bootstrap_servers: str = Field("", description="Defaults to the local stack's broker.")
    topic_prefix: str = Field("", description="Prepended to every catalogue topic (test isolation).")
    event_partitions: int = Field(6, ge=1, description="Partitions of the raw and resolved event topics.")
    replication_factor: int = Field(1, ge=1)
    client_id: str = "rapport"


class RedisSettings(BaseModel):
    url: str = Field("", description="Defaults to the local stack's Redis.")


class ValidationSettings(BaseModel):
    max_event_bytes: int = Field(64 * 1024, ge=256, description="Larger payloads are rejected unparsed.")
    future_tolerance_s: float = Field(
        300.0, ge=0, description="How far ahead of the validator's clock an event timestamp may be."
    )

    def limits(self) -> ValidationLimits:
        return ValidationLimits(self.max_event_bytes, timedelta(seconds=self.future_tolerance_s))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAPPORT_", env_nested_delimiter="__", env_file=".env", extra="ignore")

    stack: StackSettings = StackSettings()
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    validation: ValidationSettings = ValidationSettings()

    @model_validator(mode="after")
    def _default_to_local_stack(self) -> Settings:
        if not self.kafka.bootstrap_servers:
            self.kafka.bootstrap_servers = f"127.0.0.1:{self.stack.kafka_port}"
        if not self.redis.url:
            self.redis.url = f"redis://127.0.0.1:{self.stack.redis_port}/0"
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
