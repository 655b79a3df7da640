"""What the command line answers when what it reads is not there, or not there yet, against the real
Redis: a status and a line a person (and a script) can act on."""

from __future__ import annotations

import asyncio

import pytest

from profiles.state import new_profile
from profiles.store import ABSENT, ProfileStore, ProfileWrite
from services.settings import Settings
from tests.kafka_support import rapport
from tests.redis_support import scratch_namespace

pytestmark = pytest.mark.integration
LAST_EVENT_MS = 1_764_547_200_000  # 2025-12-01T00:00:00Z


def test_reads_before_the_last_event_and_models_without_snapshots_say_so(
    settings: Settings, local_stack: object
) -> None:
    asyncio.run(_check(settings))


async def _check(settings: Settings) -> None:
    async with scratch_namespace(settings, "clireads") as (redis, namespace):
        state = new_profile("c-1", "c-1")
        state.last_event_ms = LAST_EVENT_MS
        await ProfileStore(redis, namespace).save([ProfileWrite("c-1", ABSENT, 0, state, True, partition=0)])
        env = {"RAPPORT_REDIS__URL": settings.redis.url, "RAPPORT_PROFILE__NAMESPACE": namespace}

        early = await asyncio.to_thread(rapport, "profile", "get", "c-1", "--as-of", "2025-01-01T00:00:00Z", env=env)
        assert early.returncode == 2, early.stderr
        said = " ".join(early.stderr.replace("│", " ").split())
        assert "as_of 2025-01-01T00:00:00.000Z is before the profile's last event, 2025-12-01T00:00:00.000Z" in said

        # No trainer ever wrote this namespace's models.
        release = await asyncio.to_thread(rapport, "models", "release", "purchase_propensity", env=env)
        assert (release.returncode, release.stderr) == (1, "purchase_propensity has no snapshot yet\n")
        unknown = await asyncio.to_thread(rapport, "models", "release", "purchase_propensities", env=env)
        assert unknown.returncode == 2
        assert "no model named 'purchase_propensities'" in unknown.stderr
