"""The aiokafka transport with the batch consumer and an idempotent producer plugged in.

Faust picks the transport in ``App._new_transport`` (overridden by ``streams.app.BatchApp``); the transport
names the classes it instantiates.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types.transports import ConsumerT, ProducerT

from streams.batch_consumer import BatchConsumer


class IdempotentProducer(faust_aiokafka.Producer):
    """Faust enables idempotence only with ``processing_guarantee="exactly_once"``; outputs of the batch
    runtime (resolved events, segment changes) are at-least-once but must not be duplicated by the
    producer's own retries."""

    logger = logging.getLogger(f"faust.{__name__}")  # see BatchConsumer.logger

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class BatchTransport(faust_aiokafka.Transport):
    Consumer: ClassVar[type[ConsumerT]] = BatchConsumer
    Producer: ClassVar[type[ProducerT]] = IdempotentProducer
