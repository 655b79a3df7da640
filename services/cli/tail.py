"""``rapport tail TOPIC``: print a topic's records, for people looking at what flows."""

from __future__ import annotations

import sys
from typing import Annotated, TextIO

import typer
from kafka.consumer.fetcher import ConsumerRecord

from schemas.topics import CATALOGUE, full_name
from services.kafka_clients import make_consumer, topic_partitions
from services.settings import get_settings

_NAMES = [spec.name for spec in CATALOGUE]


def tail(
    topic: Annotated[str, typer.Argument(help=f"A catalogue topic: {', '.join(_NAMES)}.")],
    last: Annotated[
        int, typer.Option("--last", "-n", min=0, help="Start this many records before the end of each partition.")
    ] = 10,
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest retained record.")] = False,
    follow: Annotated[bool, typer.Option(help="Keep printing new records until interrupted.")] = True,
    headers: Annotated[bool, typer.Option(help="Print record headers (dead-letter reasons live there).")] = False,
) -> None:
    """Print records as `partition:offset key value`, one per line."""
    if topic not in _NAMES:
        raise typer.BadParameter(f"unknown topic {topic!r}; choose one of {', '.join(_NAMES)}")
    settings = get_settings()
    name = full_name(next(s for s in CATALOGUE if s.name == topic), settings.kafka.topic_prefix)
    consumer = make_consumer(settings, "tail")
    try:
        partitions = topic_partitions(consumer, name)
        if not partitions:
            raise typer.BadParameter(f"topic {name} does not exist on {settings.kafka.bootstrap_servers}")
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions)
        if from_beginning:
            consumer.seek_to_beginning()
        else:
            starts = consumer.beginning_offsets(partitions)
            for tp in partitions:
                consumer.seek(tp, max(starts[tp], ends[tp] - last))
        # Without --follow, stop at the end offsets seen at the start rather than chasing live traffic.
        remaining = {tp for tp in partitions if consumer.position(tp) < ends[tp]}
        out = sys.stdout
        while follow or remaining:
            for tp, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    if not follow and record.offset >= ends[tp]:
                        remaining.discard(tp)
                        break
                    _print(out, record, headers=headers)
                    if record.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
            out.flush()
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


def _print(out: TextIO, record: ConsumerRecord, *, headers: bool) -> None:
    key = record.key.decode("utf-8", "replace") if record.key else "-"
    out.write(f"{record.partition}:{record.offset} {key} {record.value.decode('utf-8', 'replace')}\n")
    if headers and record.headers:
        out.write("    " + " ".join(f"{k}={v.decode('utf-8', 'replace')}" for k, v in record.headers) + "\n")
