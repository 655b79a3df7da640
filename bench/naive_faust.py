"""The naive baseline of the profile worker benchmark: a textbook Faust agent, one Redis round trip per write.

``python -m bench.naive_faust worker -l warn`` with the environment of a ``rapport`` process
(``RAPPORT_KAFKA__BOOTSTRAP_SERVERS``, ``RAPPORT_KAFKA__TOPIC_PREFIX``, ``RAPPORT_REDIS__URL``) and
``NAIVE_NAMESPACE`` (its Redis keys and consumer group). One agent over the five raw topics; for each
message: ``orjson.loads``, then ``HINCRBY`` and ``HSET`` on the customer's hash, each awaited on its own.
No batching, no pipelining, no identity resolution, no fold: much less work per event than the real worker.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import faust
import orjson
from redis.asyncio import Redis

from schemas.topics import RAW_EVENT_TOPICS, full_name

NAMESPACE = os.environ.get("NAIVE_NAMESPACE", "naive")
PREFIX = os.environ.get("RAPPORT_KAFKA__TOPIC_PREFIX", "")
BOOTSTRAP = os.environ.get("RAPPORT_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
REDIS_URL = os.environ.get("RAPPORT_REDIS__URL", "redis://127.0.0.1:6379/0")


def group_id(prefix: str, namespace: str) -> str:
    return f"{prefix}naive-faust-{namespace}"


app = faust.App(
    group_id(PREFIX, NAMESPACE),
    broker=[f"kafka://{server.strip()}" for server in BOOTSTRAP.split(",")],
    value_serializer="raw",
    key_serializer="raw",
    consumer_auto_offset_reset="earliest",
    broker_commit_interval=1.0,
    web_enabled=False,
    topic_disable_leader=True,
    table_standby_replicas=0,
    datadir=os.environ.get("NAIVE_DATADIR", tempfile.gettempdir()),
)
raw_topics = app.topic(*(full_name(spec, PREFIX) for spec in RAW_EVENT_TOPICS), value_type=bytes)
redis: Redis = Redis.from_url(REDIS_URL)


@app.agent(raw_topics)
async def naive_profiles(stream: Any) -> None:
    async for value in stream:
        try:
            event = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(event, dict):
            continue
        key = f"naive:{NAMESPACE}:{event.get('customer_id') or event.get('anonymous_id') or 'unknown'}"
        await redis.hincrby(key, "events", 1)
        await redis.hset(key, "last_ts", str(event.get("timestamp", "")))


if __name__ == "__main__":
    app.main()
