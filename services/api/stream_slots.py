"""How many segment-change streams (``GET /v1/segment-changes``) an API process holds open at once. Each
holds a Kafka consumer, its connections and its fetches: without a limit, clients that open streams and
never close them exhaust the process's memory and file descriptors, and the broker's connections.

>>> slots = StreamSlots(2)
>>> first, second, third = slots.take(), slots.take(), slots.take()
>>> third is None, slots.open
(True, 2)
>>> first.release(); first.release()  # a slot is given back once, however often it is released
>>> slots.open, slots.take() is not None
(1, True)
"""

from __future__ import annotations


class StreamSlots:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def take(self) -> Slot | None:
        """A slot for one more stream; None if ``limit`` are open."""
        if self.open >= self.limit:
            return None
        self.open += 1
        return Slot(self)


class Slot:
    def __init__(self, slots: StreamSlots) -> None:
        self._slots = slots
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._slots.open -= 1
