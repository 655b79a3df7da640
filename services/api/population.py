"""The RFM population's quintile thresholds, shared by every read of one API process for a moment.

Scoring a buyer exactly needs three counts over the whole population per read (a round trip); the
thresholds give the same scores against the population as it was when they were read. Refreshed at most
every ``api.rfm_refresh_s``, by one request at a time while the others use the previous snapshot.
"""

from __future__ import annotations

import asyncio
import time

from profiles.rfm import RfmThresholds
from profiles.store import ProfileStore


class PopulationCache:
    def __init__(self, store: ProfileStore, refresh_s: float) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self._thresholds: RfmThresholds | None = None
        self._read_at = 0.0
        self._refreshing = asyncio.Lock()

    async def thresholds(self) -> RfmThresholds:
        if self._thresholds is not None and time.monotonic() - self._read_at < self.refresh_s:
            return self._thresholds
        if self._thresholds is not None and self._refreshing.locked():
            return self._thresholds  # another request is refreshing: no need to wait for it
        async with self._refreshing:
            if self._thresholds is None or time.monotonic() - self._read_at >= self.refresh_s:
                self._thresholds = await self.store.rfm_thresholds()
                self._read_at = time.monotonic()
            return self._thresholds
