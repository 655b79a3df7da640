"""``rapport produce --rate``: a topic's metadata wait must not turn into a burst of catch-up sends."""

from __future__ import annotations

import time
from typing import Any, cast

from services.producer import _Pacer


class _SlowMetadata:
    """What the pacer uses of a producer: ``partitions_for``, which blocks on a topic's first metadata."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        self.asked: list[str] = []

    def partitions_for(self, topic: str) -> set[int]:
        self.asked.append(topic)
        time.sleep(self.wait_s)
        return {0}


def test_the_send_after_a_metadata_wait_still_keeps_the_pace() -> None:
    producer = _SlowMetadata(wait_s=0.3)
    pacer = _Pacer(cast(Any, producer), rate=10.0, started=time.monotonic())
    pacer.before_send("clicks")  # 0.3 s of metadata: three sends' worth at 10/s
    began = time.monotonic()
    pacer.after_send(1)
    # Had the wait counted against the schedule, the pacer would be 0.2 s behind and not sleep at all.
    assert time.monotonic() - began >= 0.05


def test_metadata_is_awaited_once_per_topic() -> None:
    producer = _SlowMetadata(wait_s=0.0)
    pacer = _Pacer(cast(Any, producer), rate=1e9, started=time.monotonic())
    for topic in ("clicks", "emails", "clicks", "clicks", "emails"):
        pacer.before_send(topic)
    assert producer.asked == ["clicks", "emails"]
