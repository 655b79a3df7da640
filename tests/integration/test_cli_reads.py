"""What the command line answers when what it reads is not there, or not there yet, against the real
Redis: a status and a line a person (and a script) can act on."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from profiles.model_store import ModelStore
from profiles.models.specs import CHURN_RISK
from profiles.namespaces import Namespaces
from profiles.state import new_profile
from profiles.store import ABSENT, ProfileStore, ProfileWrite
from services.settings import Settings
from tests.kafka_support import rapport
from tests.model_support import publish_churn_model
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


def test_reads_and_model_commands_follow_a_promotion_as_the_api_does(settings: Settings, local_stack: object) -> None:
    """After ``namespace promote NEW`` the API serves NEW's profiles and models. Until session 40 ``profile
    get``, ``scores get`` and the ``models`` commands kept reading (and rolling back) the configured
    namespace's: a rollback during an incident changed nothing served."""
    asyncio.run(_check_promoted(settings))


async def _check_promoted(settings: Settings) -> None:
    secret = "s" * 32
    async with (
        scratch_namespace(settings, "cliconf") as (redis, configured),
        scratch_namespace(settings, "clinew") as (_, promoted),
    ):
        state = new_profile("c-new", "c-new")
        state.last_event_ms = LAST_EVENT_MS
        await ProfileStore(redis, promoted).save([ProfileWrite("c-new", ABSENT, 0, state, True, partition=0)])
        first = await publish_churn_model(settings, promoted, 1.0, secret)
        second = await publish_churn_model(settings, promoted, 0.0, secret)
        await Namespaces(redis).promote(configured, promoted)
        env = {
            "RAPPORT_REDIS__URL": settings.redis.url,
            "RAPPORT_PROFILE__NAMESPACE": configured,
            "RAPPORT_MODELS__SECRET": secret,
            "RAPPORT_MODELS__MIN_EXAMPLES": "100",  # past its cold start: the model's own score
        }

        shown = await asyncio.to_thread(rapport, "profile", "get", "c-new", env=env)
        assert shown.returncode == 0, shown.stderr
        assert orjson.loads(shown.stdout)["profile_id"] == "c-new"
        scored = await asyncio.to_thread(rapport, "scores", "get", "c-new", env=env)
        assert scored.returncode == 0, scored.stderr
        churn = orjson.loads(scored.stdout)["scores"][CHURN_RISK]
        assert (churn["model_version"], churn["cold_start"]) == (second, False)

        rolled = await asyncio.to_thread(rapport, "models", "rollback", CHURN_RISK, str(first), env=env)
        assert rolled.returncode == 0, rolled.stderr
        assert await ModelStore(redis, promoted).pinned(CHURN_RISK) == first
        assert await ModelStore(redis, configured).pinned(CHURN_RISK) is None
        # The configured namespace, named: its own (it holds no profile).
        named = await asyncio.to_thread(rapport, "profile", "get", "c-new", "--namespace", configured, env=env)
        assert named.returncode == 1, named.stderr
        await redis.delete(f"rapport:ns:serving:{configured}", f"rapport:ns:superseded:{configured}")
