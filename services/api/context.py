"""What a running API process holds: its clients, created in the app's lifespan (never at import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from profiles.config import FoldConfig
from profiles.store import ProfileStore
from services.api.collector import EventCollector
from services.api.draining import Draining
from services.api.keys import KeyStore
from services.api.metrics import ApiMetrics
from services.api.ratelimit import RateLimiter
from services.api.serving import ServingNamespace
from services.api.stream_slots import StreamSlots
from services.api.worker_view import WorkerView
from services.settings import Settings

if TYPE_CHECKING:
    from services.api.auth import KeyCache


@dataclass
class ApiContext:
    settings: Settings
    redis: Redis
    store: ProfileStore  # the configured namespace, the one the worker writes (its figures)
    serving: ServingNamespace  # what profile reads use: the promoted namespace
    fold_config: FoldConfig
    keys: KeyStore
    key_cache: KeyCache
    limiter: RateLimiter
    collector: EventCollector
    metrics: ApiMetrics
    workers: WorkerView
    draining: Draining  # set when the process is asked to stop: long-lived responses end
    streams: StreamSlots  # the segment-change streams open
