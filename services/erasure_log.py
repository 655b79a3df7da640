"""Reading the whole ``erasures`` topic: what a worker or a replay honours before it reads any event.

The topic is compacted and small (one record per erased customer), so it is read end to end at start-up
with a group-less consumer. Records that do not decode are skipped here; the live resolve stage
dead-letters them with their reason when it consumes the topic.
"""

from __future__ import annotations

import logging
import time

import msgspec
from kafka import KafkaConsumer

from schemas import erasure as erasure_codec
from schemas.erasure import ErasureRecord
from schemas.topics import ERASURES, full_name
from services.kafka_clients import make_consumer, topic_partitions
from services.settings import Settings

log = logging.getLogger(__name__)


def read_erasures(settings: Settings, timeout_s: float = 60.0) -> list[ErasureRecord]:
    """Every erasure record on the topic now, oldest first; raises ``TimeoutError`` if the end is not
    reached within ``timeout_s`` (the caller must not start without them)."""
    consumer = make_consumer(settings, "erasures", auto_offset_reset="earliest")
    try:
        return erasures_with(consumer, settings, timeout_s)
    finally:
        consumer.close()


def erasures_with(consumer: KafkaConsumer, settings: Settings, timeout_s: float = 60.0) -> list[ErasureRecord]:
    """``read_erasures`` with a group-less consumer the caller owns, made with ``auto_offset_reset="earliest"``
    (records compacted away meanwhile must not send it to the end); it is left with no partition assigned."""
    partitions = topic_partitions(consumer, full_name(ERASURES, settings.kafka.topic_prefix))
    if not partitions:
        raise RuntimeError("the erasures topic does not exist: run `rapport topics create`")
    consumer.assign(partitions)
    try:
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        out: list[ErasureRecord] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the erasures topic was not read to its end within {timeout_s} s")
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    try:
                        out.append(erasure_codec.decode(record.value or b""))
                    except msgspec.MsgspecError:
                        log.warning("skipping an undecodable erasure record at offset %d", record.offset)
        return out
    finally:
        consumer.assign([])
