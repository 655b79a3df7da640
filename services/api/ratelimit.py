"""Per-key rate limits shared by every API process: GCRA (a token bucket kept as one timestamp) in Redis.

Each key may make ``rate`` requests per second with bursts of up to ``rate`` requests (one second's worth).
The script keeps the key's "theoretical arrival time" and answers, atomically, whether this request fits
and otherwise how long to wait. Redis's clock is used, so API processes need not agree on time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from redis.asyncio import Redis

# Sets ``wait`` to 0 when the request fits (and counts it), else to the microseconds until it would.
_GCRA_CHECK: Final = """
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now_us)
if tat < now_us then tat = now_us end
local allowed_at = tat - burst
local wait = 0
if now_us < allowed_at then
  wait = allowed_at - now_us
else
  local new_tat = tat + interval
  redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now_us) / 1000) + 1000)
end
"""
_GCRA: Final = _GCRA_CHECK + "return wait\n"
# The check, then (only if admitted) the values of KEYS[2..]: a request's rate limit and its reads in one
# command. One command, not a pipeline of two: redis-py's pipeline machinery costs ~50 µs of Python per
# request, a fifth of a profile read's budget (docs/benchmarks.md, "Serving API").
_GCRA_THEN_MGET: Final = (
    _GCRA_CHECK
    + """
if wait > 0 then return {wait} end
local values = redis.call('MGET', unpack(KEYS, 2))
table.insert(values, 1, 0)
return values
"""
)


class RateLimiter:
    def __init__(self, redis: Redis) -> None:
        self._script = redis.register_script(_GCRA)
        self._admit_and_read = redis.register_script(_GCRA_THEN_MGET)

    async def wait_s(self, key_id: str, rate_per_s: float) -> float:
        """0 if the request may go ahead (and is counted), else seconds until it would be allowed."""
        wait_us = await self._script(keys=[_key(key_id)], args=_args(rate_per_s))
        return wait_seconds(wait_us)

    async def admit_and_read(self, key_id: str, rate_per_s: float, keys: Sequence[str]) -> tuple[float, list[object]]:
        """``wait_s``'s check and, if it lets the request through, the values of ``keys`` (``MGET``), in one
        command: (0, values), or (seconds to wait, []) with nothing read. The keys must be in the rate-limit
        key's Redis (the namespace's reads are not cluster-ready: docs/streams.md)."""
        reply = await self._admit_and_read(keys=[_key(key_id), *keys], args=_args(rate_per_s))
        if not isinstance(reply, list) or not reply:
            raise TypeError(f"the rate-limit script answered {reply!r}")
        return wait_seconds(reply[0]), reply[1:]


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
