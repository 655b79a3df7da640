"""The one configuration object for every Rapport process.

Values come from the environment (prefix ``RAPPORT_``, nested sections joined by ``__``, e.g.
``RAPPORT_KAFKA__TOPIC_PREFIX=test-``) or from a ``.env`` file in the working directory. Nothing here
opens a connection: processes build their clients from these values when they start.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import AwareDatetime, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from profiles.config import FoldConfig
from profiles.namespaces import check_name
from schemas.validation import OLDEST_TIMESTAMP, ValidationLimits

if TYPE_CHECKING:
    from profiles.models.specs import ModelSpec


class StackSettings(BaseModel):
    """The local Kafka + Redis stack that ``rapport stack up`` runs without Docker."""

    state_dir: Path = Field(Path(".rapport/stack"), description="PID files, logs, Kafka and Redis data.")
    cache_dir: Path = Field(
        Path("~/.cache/rapport").expanduser(),
        description="Kafka jars fetched from Maven Central, shared by every checkout.",
    )
    kafka_version: str = "3.9.1"
    kafka_port: int = Field(9092, ge=1, le=65535)
    kafka_controller_port: int = Field(9093, ge=1, le=65535)
    kafka_heap: str = Field("1g", description="JVM -Xmx/-Xms for the broker.")
    redis_port: int = Field(6379, ge=1, le=65535)
    start_timeout_s: float = 120.0


class KafkaSettings(BaseModel):
    bootstrap_servers: str = Field("", description="Defaults to the local stack's broker.")
    topic_prefix: str = Field("", description="Prepended to every catalogue topic (test isolation).")
    event_partitions: int = Field(6, ge=1, description="Partitions of the raw and resolved event topics.")
    replication_factor: int = Field(1, ge=1)
    client_id: str = "rapport"
    bootstrap_timeout_s: float = Field(
        10.0,
        gt=0,
        description="How long a blocking Kafka client (commands, the API's lag figures, a replay's plan and "
        "hand-over) tries to reach a broker before giving up; kafka-python's default, 30 s, left an operator "
        "waiting half a minute to hear that Kafka is down.",
    )
    commit_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Longest wait for a consumer group's offset commit before it is given up (the worker leaves "
        "the offsets to its next commit; the webhook deliverer and the trainer wait it out as an outage), and for "
        "a stopping process's producer to deliver its last records: aiokafka waits for the broker for as long as "
        "it is down, and a stop or the liveness beat must not wait that long.",
    )

    @property
    def bootstrap_timeout_ms(self) -> int:
        return round(self.bootstrap_timeout_s * 1000)


class RedisSettings(BaseModel):
    url: str = Field("", description="Defaults to the local stack's Redis.")
    max_connections: int = Field(
        100,
        ge=1,
        description="Connections one process opens to Redis at most. A command that finds them all busy waits "
        "for one (up to pool_timeout_s): redis-py's own pool refused it instead, and a burst of 400 concurrent "
        "API requests got 210-300 answers 503 redis_unavailable from a healthy Redis.",
    )
    pool_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Longest wait for a free connection; past it the command fails as if Redis were down "
        "(503 from the API, a paused retry in the workers).",
    )


class StreamSettings(BaseModel):
    """The stream workers' batch runtime (``streams/``)."""

    max_poll_records: int = Field(3000, ge=1, description="Most records handed to one batch.")
    fetch_max_wait_ms: int = Field(
        10,
        ge=0,
        le=1500,
        description="Longest time the broker holds a fetch that has not gathered fetch_min_bytes (docs/streams.md).",
    )
    fetch_min_bytes: int = Field(
        16 * 1024,
        ge=1,
        description="Bytes the broker gathers before answering a fetch: fewer, fuller batches under load, at the "
        "price of up to fetch_max_wait_ms per hop at low rates (docs/streams.md).",
    )
    commit_interval_s: float = Field(1.0, gt=0, description="How often applied offsets are committed to Kafka.")
    tick_interval_s: float = Field(
        0.25,
        gt=0,
        description="Longest time between two handler ticks: how late a due segment timer can start (a tick "
        "with nothing due costs one Redis round trip).",
    )
    retry_initial_s: float = Field(0.1, gt=0, description="First pause after a failed batch (then doubled).")
    retry_max_s: float = Field(5.0, gt=0, description="Longest pause between two attempts of a batch.")
    stop_grace_s: float = Field(
        10.0,
        gt=0,
        description="How long a stopping worker, or one losing partitions, lets its batch in flight finish before "
        "abandoning it (streams/batch_consumer.py): a batch waits for Kafka's acknowledgements for as long as the "
        "broker is down.",
    )
    session_timeout_s: float = Field(
        10.0, ge=6, description="A worker silent this long loses its partitions (broker minimum 6 s)."
    )
    heartbeat_interval_s: float = Field(2.0, gt=0)
    instance_id: str = Field(
        "",
        description="Kafka static membership: a restarted worker with the same id gets its partitions back "
        "without a rebalance. Empty: dynamic membership.",
    )
    log_level: str = "INFO"
    stats_interval_s: float = Field(
        10.0, gt=0, description="How often a worker logs its throughput and freshness (and once more when it stops)."
    )
    owned_profiles_cached: int = Field(
        50_000, ge=0, description="Profiles a worker keeps decoded between batches (see streams/owned_states.py)."
    )
    gc_young_threshold: int = Field(
        50_000,
        ge=1,
        description="Allocations between two young-generation garbage collections in a worker (CPython's "
        "default is 700; see docs/streams.md).",
    )
    replay_gc_young_threshold: int = Field(
        1_000_000,
        ge=1,
        description="The same in `rapport replay`, which has no latency to keep: fewer, longer young collections "
        "(a replay ~5% faster than with the worker's 50,000; see docs/streams.md).",
    )
    liveness_file: str = Field(
        "",
        description="A file the worker, trainer and deliverer touch every second while their main loop goes "
        "round, retry pauses included (streams/liveness.py): for an exec liveness probe. Empty: none.",
    )
    clock_offset_s: float = Field(
        0.0,
        description="Added to the worker's clock (validation's 'now', segment timers). For tests and demos that "
        "need time to pass: never set it in production.",
    )


class ProfileSettings(BaseModel):
    """The profile definition's parameters (``docs/profile.md``) and where profiles live."""

    namespace: str = Field("live", description="Redis key namespace (``profiles.namespaces.check_name``).")
    base_currency: str = Field("EUR", pattern=r"^[A-Z]{3}$")
    fx_rates: dict[str, float] = Field(
        default_factory=lambda: {"EUR": 1.0, "USD": 0.92, "GBP": 1.17},
        description="Base-currency units per unit of each currency; purchases in others are dead-lettered.",
    )
    affinity_half_life_days: float = Field(14.0, gt=0)
    lapsed_after_days: int = Field(60, ge=1)
    dedup_memory: int = Field(64, ge=1, le=4096, description="Recent event ids a profile remembers per source stream.")
    session_memory_days: int = Field(90, ge=1)
    session_memory_max: int = Field(
        1024, ge=16, le=65536, description="Session ids a profile remembers at most, those seen last (docs/profile.md)."
    )
    affinity_categories_max: int = Field(
        256, ge=16, le=65536, description="Categories a profile keeps an affinity for, the strongest (docs/profile.md)."
    )
    max_anonymous_ids: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Anonymous ids a customer may hold; past it a link is refused (docs/profile.md).",
    )
    max_emails: int = Field(
        100,
        ge=1,
        le=1_000_000,
        description="Emails a customer may name; past it an email is refused (docs/profile.md).",
    )

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return check_name(value)  # a ValueError, which pydantic reports as a validation error

    def fold_config(self) -> FoldConfig:
        return FoldConfig(
            base_currency=self.base_currency,
            fx_rates={**self.fx_rates, self.base_currency: 1.0},
            affinity_half_life_days=self.affinity_half_life_days,
            lapsed_after_days=self.lapsed_after_days,
            dedup_memory=self.dedup_memory,
            session_memory_days=self.session_memory_days,
            session_memory_max=self.session_memory_max,
            max_anonymous_ids=self.max_anonymous_ids,
            max_emails=self.max_emails,
            affinity_categories_max=self.affinity_categories_max,
        )


class ValidationSettings(BaseModel):
    max_event_bytes: int = Field(64 * 1024, ge=256, description="Larger payloads are rejected unparsed.")
    future_tolerance_s: float = Field(
        300.0, ge=0, description="How far ahead of the validator's clock an event timestamp may be."
    )
    oldest_timestamp: AwareDatetime = Field(
        OLDEST_TIMESTAMP, description="Events dated before this instant are rejected (timestamp_too_old)."
    )

    def limits(self) -> ValidationLimits:
        return ValidationLimits(self.max_event_bytes, timedelta(seconds=self.future_tolerance_s), self.oldest_timestamp)


class ApiSettings(BaseModel):
    """The serving API (``rapport api``)."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    key_cache_s: float = Field(
        5.0, ge=0, description="How long a process trusts a looked-up API key: a revocation takes effect within it."
    )
    default_rate_per_s: float = Field(100.0, gt=0, description="Requests per second of a key created without one.")
    preview_max_profiles: int = Field(50_000, ge=1, description="Most profiles a segment preview scans.")
    max_change_streams: int = Field(
        100,
        ge=1,
        description="Segment-change streams (SSE) one API process holds open at once; each holds a Kafka "
        "consumer. Past it, 503 too_many_streams.",
    )
    serving_refresh_s: float = Field(
        1.0, ge=0, description="How often an API process re-reads which namespace it serves (after a promote)."
    )
    rfm_refresh_s: float = Field(
        1.0, ge=0, description="How old the RFM population's quintile thresholds behind served scores may be."
    )
    produce_timeout_s: float = Field(
        5.0, gt=0, description="Longest wait for Kafka's acknowledgement of posted events before answering 503."
    )
    retry_after_s: int = Field(5, ge=1, description="Retry-After of a 503 while Kafka is unavailable.")
    graceful_shutdown_s: int = Field(
        20,
        ge=1,
        description="How long a stopped API process lets running requests finish before cancelling them; under "
        "Kubernetes' grace period (deploy/k8s/api.yaml, 30 s).",
    )
    max_batch_events: int = Field(500, ge=1)
    max_batch_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Largest request body (an events batch); larger ones are answered 413 before any route parses "
        "them (services/api/middleware.py).",
    )
    max_batch_ids: int = Field(1000, ge=1)
    gc_young_threshold: int = Field(
        50_000, ge=1, description="Allocations between two young-generation collections (services/gc_tuning.py)."
    )
    hot_reads: bool = Field(
        True,
        description="Answer plain GET profile and GET scores requests beneath FastAPI's routing, in one Redis "
        "round trip (services/api/hot_reads.py); off: the routes answer every request.",
    )
    log_level: str = "INFO"


class WebhookSettings(BaseModel):
    """``rapport deliver``: segment changes POSTed to registered webhooks."""

    max_attempts: int = Field(6, ge=1, description="Attempts per change and endpoint before it is dead-lettered.")
    backoff_base_s: float = Field(0.5, gt=0, description="First retry delay; doubled per attempt, with jitter.")
    backoff_max_s: float = Field(30.0, gt=0)
    timeout_s: float = Field(5.0, gt=0, description="Longest wait for an endpoint's answer.")
    max_registered: int = Field(
        1000,
        ge=1,
        description="Webhooks a namespace may have; one more is refused (409 too_many_webhooks). Each is a Kafka "
        "consumer in every deliverer: 1,000 idle ones took 26-43% of a core and ~300 MB (bench.run webhooks).",
    )
    max_requests: int = Field(
        100,
        ge=1,
        description="Requests one deliverer has in flight at once, over every webhook (its HTTP connections). A "
        "change waiting for one is not attempted yet: timeout_s starts once it is sent.",
    )
    retry_after_max_s: float = Field(
        300.0, ge=0, description="Longest wait an endpoint's Retry-After header is granted before the next attempt."
    )
    start_from: Literal["latest", "earliest"] = Field(
        "latest",
        description="Where a webhook with no committed position starts in segments.changes: at its registration, "
        "or at the oldest retained change (services/webhooks/starts.py).",
    )
    batch_budget_s: float = Field(
        60.0,
        gt=0,
        le=240,
        description="Longest one webhook's part works on a fetched batch before committing what it delivered and "
        "fetching again: under aiokafka's max_poll_interval (300 s), past which it would leave its group.",
    )
    refresh_s: float = Field(
        2.0, gt=0, description="How often the deliverer re-reads the registrations: new webhooks start, removed stop."
    )
    private_targets: bool = Field(
        False,
        description="Let webhooks reach loopback, private and link-local addresses (receivers inside the "
        "deployment); off, only public ones (services/webhooks/targets.py).",
    )
    gc_young_threshold: int = Field(
        50_000, ge=1, description="Allocations between two young-generation collections (services/gc_tuning.py)."
    )


class ModelSettings(BaseModel):
    """The online models (docs/models.md): definitions of the scores, the trainer, serving."""

    enabled: bool = Field(True, description="The worker takes snapshots and sends labelled examples.")
    watermark_lag_s: float = Field(
        3600.0, ge=0, description="Event-time watermark = how far every input was folded (markers) minus this."
    )
    idle_partition_s: float = Field(
        5.0, gt=0, description="A raw partition read to its end for this long stops holding the watermark back."
    )
    progress_interval_s: float = Field(
        1.0, gt=0, description="Progress markers through events.resolved go out at most this often per worker."
    )
    secret: SecretStr = Field(
        SecretStr(""),
        description="HMAC key signing model snapshots; the trainer refuses to run and serving to load without one.",
    )
    purchase_horizon_days: float = Field(7.0, gt=0)
    churn_horizon_days: float = Field(30.0, gt=0)
    clv_horizon_days: float = Field(90.0, gt=0)
    email_open_hours: float = Field(48.0, gt=0)
    min_examples: int = Field(500, ge=1, description="Labelled examples a model needs before it serves scores.")
    metrics_window: int = Field(1000, ge=10, description="Examples the rolling metrics cover.")
    snapshot_every_examples: int = Field(1000, ge=1, description="A snapshot after this many new examples...")
    snapshot_every_s: float = Field(30.0, gt=0, description="...or this long after the last one, if it learned.")
    keep_versions: int = Field(5, ge=1, description="Snapshots kept per model (the newest).")
    reload_s: float = Field(2.0, gt=0, description="How often serving processes look for a new model version.")
    segment_sweep_s: float = Field(
        300.0,
        ge=0,
        description="Shortest time between two evaluations of every existing profile against a segment whose "
        "rule reads scores, when the served model versions changed (each scores every profile).",
    )

    def specs(self) -> dict[str, ModelSpec]:
        from profiles.models.specs import default_specs  # noqa: PLC0415 - River takes a second to import

        return default_specs(
            purchase_horizon_days=self.purchase_horizon_days,
            churn_horizon_days=self.churn_horizon_days,
            clv_horizon_days=self.clv_horizon_days,
            email_open_hours=self.email_open_hours,
            min_examples=self.min_examples,
        )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAPPORT_", env_nested_delimiter="__", env_file=".env", extra="ignore")

    stack: StackSettings = StackSettings()
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    validation: ValidationSettings = ValidationSettings()
    stream: StreamSettings = StreamSettings()
    profile: ProfileSettings = ProfileSettings()
    api: ApiSettings = ApiSettings()
    webhooks: WebhookSettings = WebhookSettings()
    models: ModelSettings = ModelSettings()

    @model_validator(mode="after")
    def _default_to_local_stack(self) -> Settings:
        if not self.kafka.bootstrap_servers:
            self.kafka.bootstrap_servers = f"127.0.0.1:{self.stack.kafka_port}"
        if not self.redis.url:
            self.redis.url = f"redis://127.0.0.1:{self.stack.redis_port}/0"
        return self

    @property
    def profile_group_id(self) -> str:
        """The consumer group of the profile workers of this namespace."""
        return self.profile_group_of(self.profile.namespace)

    def profile_group_of(self, namespace: str) -> str:
        """The consumer group of the profile workers of ``namespace``."""
        return f"{self.kafka.topic_prefix}rapport-profiles-{namespace}"

    def trainer_group_of(self, namespace: str) -> str:
        """The consumer group of the trainers of ``namespace`` (the member assigned the partition trains)."""
        return f"{self.kafka.topic_prefix}rapport-trainer-{namespace}"

    def webhook_group_of(self, namespace: str) -> str:
        """The consumer group the webhook deliverers of ``namespace`` shared until 2026-12-07; now the prefix of
        each webhook's own group (``webhook_part_group``), and where those started (services/webhooks/starts.py)."""
        return f"{self.kafka.topic_prefix}rapport-webhooks-{namespace}"

    def webhook_part_group(self, namespace: str, webhook_id: str) -> str:
        """The consumer group of one webhook's deliveries: its position is its own."""
        return f"{self.webhook_group_of(namespace)}.{webhook_id}"

    def writer_groups_of(self, namespace: str) -> tuple[str, ...]:
        """The consumer groups of every long-running process that writes ``namespace``'s keys."""
        return self.profile_group_of(namespace), self.trainer_group_of(namespace), self.webhook_group_of(namespace)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
