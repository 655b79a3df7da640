"""A file a long-running stream process touches while its main loop goes round: an exec liveness probe.

The worker, the trainer and the webhook deliverer have no HTTP server. Each touches
``stream.liveness_file`` (when set) from its main loop: every fetch, including empty ones while idle, every
pause of a retried batch, and every second a batch waits for Kafka's acknowledgements (``streams.outbox``):
waiting out a Redis or Kafka outage is backpressure, which a restart would not cure. A loop that no longer
goes round — a call that never returns, a loop task that died in a process still running — leaves the
file's modification time behind, and the orchestrator's probe (``deploy/k8s``: the file is younger than a
minute) restarts the process.

>>> import pathlib, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "run" / "alive"
>>> beat = Liveness(str(path), every_s=60.0)
>>> beat(); path.exists()
True
>>> Liveness("")()  # not configured: nothing to do
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)


class Liveness:
    def __init__(self, path: str, every_s: float = 1.0) -> None:
        """``path``: the file to touch (empty: none); ``every_s``: touched at most this often."""
        self.path = Path(path) if path else None
        self.every_s = every_s
        self._last = float("-inf")
        self._failing = False

    def __call__(self) -> None:
        if self.path is None or time.monotonic() - self._last < self.every_s:
            return
        self._last = time.monotonic()
        try:
            try:
                os.utime(self.path)
            except FileNotFoundError:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.touch()
        except OSError as exc:
            # The probe will fail and restart the process; say why once rather than on every beat.
            if not self._failing:
                log.error("cannot touch the liveness file %s: %s", self.path, exc)
            self._failing = True
        else:
            self._failing = False
