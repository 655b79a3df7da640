"""The API under a burst of concurrent requests, more than a process has Redis connections: they wait for a
connection and are answered (``redis.max_connections``), not refused as if Redis were down. Until 2026-12-07
redis-py's pool refused every command past its 100 connections, and a burst of 400 reads of a healthy Redis
got 210–300 answers 503 ``redis_unavailable``. Only a wait past ``redis.pool_timeout_s`` is answered 503."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.api_support import create_key, running_api, store_simulated_profiles
from tests.kafka_support import Topics

pytestmark = pytest.mark.integration

BURST = 400


def _burst(base: str, key: str, paths: list[str]) -> Counter[tuple[int, str]]:
    """(status, error code or "") of every path, all requested at once."""

    async def run() -> Counter[tuple[int, str]]:
        limits = httpx.Limits(max_connections=len(paths), max_keepalive_connections=len(paths))
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as http:
            answers = await asyncio.gather(*(http.get(path) for path in paths))
        return Counter((a.status_code, a.json()["error"]["code"] if a.status_code >= 400 else "") for a in answers)

    return asyncio.run(run())


@pytest.mark.parametrize("hot_reads", ["true", "false"])
def test_a_burst_beyond_the_redis_connections_is_queued_not_refused(
    topics: Topics, tmp_path: Path, hot_reads: str
) -> None:
    namespace = topics.settings.profile.namespace
    known = [state.profile_id for state in store_simulated_profiles(topics.settings, namespace, 20)]
    key = create_key(topics.env, "--name", "burst", "--scopes", "profiles:read,scores:read", "--rate-limit", "100000")
    paths = [f"/v1/profiles/{known[i % len(known)]}" + ("/scores" if i % 2 else "") for i in range(BURST)]
    paths += [f"/v1/profiles/c-nobody-{i}" for i in range(BURST // 4)]
    env = {**topics.env, "RAPPORT_API__HOT_READS": hot_reads}
    with running_api(env, tmp_path / "api.log") as base:
        for _ in range(2):  # the second on warm connections
            assert _burst(base, key, paths) == {(200, ""): BURST, (404, "profile_not_found"): BURST // 4}
    # A pool of 4 connections serves the same burst, queued.
    with running_api({**env, "RAPPORT_REDIS__MAX_CONNECTIONS": "4"}, tmp_path / "api-4.log") as base:
        assert _burst(base, key, paths) == {(200, ""): BURST, (404, "profile_not_found"): BURST // 4}


def test_a_request_that_waits_past_the_pool_timeout_is_answered_503(topics: Topics, tmp_path: Path) -> None:
    """One connection and a wait of a millisecond at most: most of a burst cannot get the connection in time.
    They are answered 503 ``redis_unavailable`` (retry), never 500; the others are served."""
    namespace = topics.settings.profile.namespace
    known = store_simulated_profiles(topics.settings, namespace, 1)[0].profile_id
    key = create_key(topics.env, "--name", "burst", "--scopes", "profiles:read", "--rate-limit", "100000")
    env = {**topics.env, "RAPPORT_REDIS__MAX_CONNECTIONS": "1", "RAPPORT_REDIS__POOL_TIMEOUT_S": "0.001"}
    with running_api(env, tmp_path / "api.log") as base:
        got = _burst(base, key, [f"/v1/profiles/{known}"] * 200)
    assert set(got) <= {(200, ""), (503, "redis_unavailable")}, got
    assert got[503, "redis_unavailable"] > 0, got
    assert got[200, ""] > 0, got
