"""Per-key rate limits shared by every API process: GCRA (a token bucket kept as one timestamp) in Redis.

Each key may make ``rate`` requests per second with bursts of up to ``rate`` requests (one second's worth).
The script keeps the key's "theoretical arrival time" and answers, atomically, whether this request fits
and otherwise how long to wait. Redis's clock is used, so API processes need not agree on time.
"""

from __future__ import annotations

from typing import Final

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

_GCRA: Final = """
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now_us)
if tat < now_us then tat = now_us end
local allowed_at = tat - burst
if now_us < allowed_at then
  return allowed_at - now_us
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now_us) / 1000) + 1000)
return 0
"""


class RateLimiter:
    def __init__(self, redis: Redis) -> None:
        self._script = redis.register_script(_GCRA)

    async def wait_s(self, key_id: str, rate_per_s: float) -> float:
        """0 if the request may go ahead (and is counted), else seconds until it would be allowed."""
        wait_us = await self._script(keys=[_key(key_id)], args=_args(rate_per_s))
        return wait_seconds(wait_us)

    def queue(self, pipe: Pipeline, key_id: str, rate_per_s: float) -> None:
        """Queue ``wait_s``'s check on ``pipe`` (its reply goes through ``wait_seconds``): one round trip with
        the request's reads. EVAL, not EVALSHA: a pipeline holding a registered script first asks Redis
        whether the script exists, a round trip of its own; Redis caches the compiled body either way."""
        pipe.eval(_GCRA, 1, _key(key_id), *_args(rate_per_s))


def wait_seconds(reply: object) -> float:
    """The wait the script answered, in seconds."""
    if not isinstance(reply, int):
        raise TypeError(f"the rate-limit script answered {reply!r}")
    return reply / 1_000_000


def _key(key_id: str) -> str:
    return f"rapport:rl:{{{key_id}}}"


def _args(rate_per_s: float) -> list[int]:
    interval_us = max(1, round(1_000_000 / rate_per_s))
    burst_us = max(0, 1_000_000 - interval_us)  # up to one second's worth of requests at once
    return [interval_us, burst_us]
