"""One change to one endpoint: signed, POSTed, retried with jittered backoff, dead-lettered when the endpoint
never accepts it within ``webhooks.max_attempts``.

Retries wait ``backoff_base_s × 2^(attempt−1)`` (capped at ``backoff_max_s``), drawn from the upper half of
that — jitter, so endpoints recovering from an outage are not hit by every deliverer at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from urllib.parse import urlsplit

import aiohttp

from services.settings import WebhookSettings
from services.webhooks.signature import sign
from services.webhooks.store import Delivery, Webhook
from services.webhooks.targets import PublicResolver, literal_refusal
from streams.backoff import Backoff
from streams.liveness import Liveness

log = logging.getLogger(__name__)

#: (change id, segment, the record's bytes)
Change = tuple[str, str, bytes]


class Sender:
    def __init__(
        self, settings: WebhookSettings, session: aiohttp.ClientSession, alive: Liveness | None = None
    ) -> None:
        """``alive``: beaten at every attempt, since one change can take a minute of retries."""
        self.settings = settings
        self.session = session
        self.alive = alive or Liveness("")

    async def send(self, hook: Webhook, change: Change, stop: asyncio.Event) -> Delivery | None:
        """How ``change``'s delivery to ``hook`` ended; None if ``stop`` was set between its attempts (it was
        not delivered: the next deliverer sends it)."""
        change_id, segment, body = change
        status: int | None = None
        error: str | None = None
        pauses = Backoff(self.settings.backoff_base_s, self.settings.backoff_max_s).pauses()
        for attempt in range(1, self.settings.max_attempts + 1):
            self.alive()
            status, error = await self._post(hook, change_id, body)
            if status is not None and 200 <= status < 300:
                return Delivery(
                    change_id=change_id,
                    segment=segment,
                    status="delivered",
                    attempts=attempt,
                    last_status_code=status,
                    at_ms=int(time.time() * 1000),
                )
            if attempt < self.settings.max_attempts:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), next(pauses))
                if stop.is_set():
                    return None
        log.warning("dead-lettered change %s for webhook %s", change_id, hook.webhook_id)
        return Delivery(
            change_id=change_id,
            segment=segment,
            status="dead_lettered",
            attempts=self.settings.max_attempts,
            last_status_code=status,
            last_error=error,
            at_ms=int(time.time() * 1000),
        )

    async def _post(self, hook: Webhook, change_id: str, body: bytes) -> tuple[int | None, str | None]:
        """The endpoint's status code, or None and why there was no answer."""
        if not self.settings.private_targets:
            host = urlsplit(hook.url).hostname or ""
            refused = literal_refusal(host)
            if refused is not None:
                return None, refused
        headers = {
            "Content-Type": "application/json",
            "Rapport-Change-Id": change_id,
            "Rapport-Webhook-Id": hook.webhook_id,
            "Rapport-Signature": sign(hook.secret, body, int(time.time())),
        }
        try:
            timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
            # Not following redirects: a receiver could send the deliverer on to an address it may not reach.
            async with self.session.post(
                hook.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                return response.status, None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except TimeoutError:
            return None, f"no answer within {self.settings.timeout_s} s"
        except (aiohttp.ClientError, OSError) as exc:
            return None, str(exc) or type(exc).__name__


def client_session(settings: WebhookSettings) -> aiohttp.ClientSession:
    """The deliverer's HTTP client: it connects only to public addresses unless private targets are allowed
    (``services.webhooks.targets``). Created in a running event loop."""
    resolver = None if settings.private_targets else PublicResolver()
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver))
