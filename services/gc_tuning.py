"""Garbage-collector settings of the long-running processes (the worker, the API, a replay, the deliverer)."""

from __future__ import annotations

import gc


def tune_gc(young_threshold: int) -> None:
    """Collect cyclic garbage less often, and never rescan what was loaded at start-up.

    A worker holds many small long-lived containers (the decoded profiles' buckets) and allocates fast;
    with CPython's default thresholds the collector's scans cost about a third of the pure fold time
    (docs/streams.md). An API process allocates a rendered view per request: with the defaults a full
    collection rescans everything imported at start-up (FastAPI, River, pydantic models), a pause of
    milliseconds in the latency tail. A replay keeps the profiles it wrote decoded, like a worker: with the
    defaults, collections scanning them were a fifth of its time. A deliverer with a thousand webhooks holds
    a thousand Kafka consumers and the changes waiting for a request slot: with the defaults, full collections
    were half its CPU. Reference counting still frees everything discarded at once: only cycles wait for a
    collection.
    """
    gc.freeze()
    gc.set_threshold(young_threshold, 50, 100)
