"""WebhookStore's pauses against the real Redis: a pause held by ``rapport webhooks rewind`` neither overwrites
nor clears one that someone else sets or lifts meanwhile."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from services.redis_client import make_redis
from services.settings import Settings
from services.webhooks.store import Pause, TooManyWebhooksError, WebhookStore

pytestmark = pytest.mark.integration


def test_a_held_pause_is_given_back_only_while_it_is_still_the_one_held(
    settings: Settings, local_stack: object
) -> None:
    async def run() -> dict[str, object]:
        redis = make_redis(settings)
        namespace = f"whs-{uuid.uuid4().hex[:8]}"
        store = WebhookStore(redis, namespace)
        try:
            hook = (await store.register("https://example.com/hook", [])).webhook_id
            seen: dict[str, object] = {}
            seen["unregistered"] = await store.hold("wh_none", "rewinding")
            held = await store.hold(hook, "rewinding")
            seen["held"] = held
            seen["held again"] = await store.hold(hook, "rewinding")
            assert held is not None
            # Someone pauses it for their own reason meanwhile: the release leaves their pause.
            await store.pause(hook, "receiver maintenance")
            seen["released over another pause"] = await store.release(hook, held)
            seen["pause after"] = _reason(await store.get(hook))
            # Someone resumes it, then it is held and resumed again meanwhile: a release of the old hold
            # changes nothing.
            await store.resume(hook)
            seen["hold after a resume"] = (await store.hold(hook, "rewinding")) is not None
            await store.resume(hook)
            seen["released after a resume"] = await store.release(hook, held)
            seen["pause after a resume"] = _reason(await store.get(hook))
            # A pause it already had is not held, and stays.
            await store.pause(hook, "410")
            seen["held over a pause"] = await store.hold(hook, "rewinding")
            seen["pause kept"] = _reason(await store.get(hook))
            # The usual case: held, then released.
            await store.resume(hook)
            own = await store.hold(hook, "rewinding")
            assert own is not None
            seen["released"] = await store.release(hook, own)
            seen["pause at the end"] = _reason(await store.get(hook))
            await store.remove(hook)
            return seen
        finally:
            await redis.aclose()

    seen = asyncio.run(run())
    assert seen.pop("unregistered") is None
    held = seen.pop("held")
    assert isinstance(held, Pause)
    assert held.reason == "rewinding"
    assert seen == {
        "held again": None,
        "released over another pause": False,
        "pause after": "receiver maintenance",
        "hold after a resume": True,
        "released after a resume": False,
        "pause after a resume": None,
        "held over a pause": None,
        "pause kept": "410",
        "released": True,
        "pause at the end": None,
    }


def _reason(found: tuple[object, Pause | None] | None) -> str | None:
    assert found is not None
    return None if found[1] is None else found[1].reason


def test_registrations_past_the_limit_are_refused_and_pauses_do_not_count(
    settings: Settings, local_stack: object
) -> None:
    async def run() -> tuple[list[str], int]:
        redis = make_redis(settings)
        store = WebhookStore(redis, f"whs-{uuid.uuid4().hex[:8]}")
        outcomes: list[str] = []

        async def register() -> None:
            try:
                outcomes.append((await store.register("https://example.com/hook", [], limit=2)).webhook_id)
            except TooManyWebhooksError as exc:
                outcomes.append(f"refused at {exc.limit}")

        try:
            await register()
            await register()
            await store.pause(outcomes[0], "maintenance")  # a pause is a field of the same hash
            await register()
            await store.remove(outcomes[1])
            await register()
            # Ten at once for one place left: one is registered.
            await store.remove(outcomes[0])
            await asyncio.gather(*(register() for _ in range(10)))
            return outcomes, len(await store.all())
        finally:
            await redis.aclose()

    outcomes, registered = asyncio.run(run())
    assert outcomes[2] == "refused at 2"
    assert outcomes[3].startswith("wh_")
    assert sorted(o.startswith("wh_") for o in outcomes[4:]) == [False] * 9 + [True]
    assert registered == 2
