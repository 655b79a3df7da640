"""``rapport worker``: the stream worker that keeps profiles (resolve + apply stages)."""

from __future__ import annotations

from schemas.topics import ERASURES, RAW_EVENT_TOPICS, RESOLVED, full_name
from services.settings import get_settings
from streams.profile_handler import profile_handler
from streams.worker import run_worker


def worker() -> None:
    """Consume the raw topics, erasures and events.resolved until SIGTERM/SIGINT; profiles are kept in Redis."""
    settings = get_settings()
    prefix = settings.kafka.topic_prefix
    topics = [full_name(spec, prefix) for spec in (*RAW_EVENT_TOPICS, ERASURES, RESOLVED)]
    run_worker(settings, profile_handler, topics, group_id=settings.profile_group_id)
