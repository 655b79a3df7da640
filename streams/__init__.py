"""Stream workers: Faust runs the consumer group, a batch runtime hands fetched batches to a handler.

- ``streams.handler``: the ``BatchHandler`` protocol and what it is given (``Batch``, ``RawRecord``).
- ``streams.app``: ``make_app(settings, handler_factory=…, topics=…, group_id=…)``.
- ``streams.worker``: ``run_worker(…)``, the process entry point.
- ``streams.batch_consumer``: the consumer, and the order of effects that makes them effectively-once.
"""
