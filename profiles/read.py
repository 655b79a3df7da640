"""The profile read model shared by ``rapport profile get`` and the API: any known id → the view."""

from __future__ import annotations

from typing import Any

from profiles.config import FoldConfig
from profiles.store import ProfileStore
from profiles.view import render


class AsOfBeforeLastEventError(ValueError):
    """The view is defined for instants at or after the profile's latest event."""

    def __init__(self, as_of_ms: int, last_event_ms: int) -> None:
        super().__init__(f"as_of {as_of_ms} is before the profile's last event {last_event_ms}")
        self.last_event_ms = last_event_ms


async def read_profile(
    store: ProfileStore, any_id: str, config: FoldConfig, *, as_of_ms: int | None, now_ms: int
) -> dict[str, Any] | None:
    """The canonical profile of a customer id, anonymous id or email, or None if no profile has it.

    ``as_of_ms`` defaults to ``now_ms`` (the caller's clock); an explicit ``as_of_ms`` before the
    profile's latest event is refused rather than answered with numbers that mean nothing.
    """
    profile_id = await store.resolve_id(any_id)
    if profile_id is None:
        return None
    stored = (await store.load([profile_id]))[profile_id]
    if stored.state is not None and stored.state.merged_into is not None:
        stored = (await store.load([stored.state.merged_into]))[stored.state.merged_into]
    state = stored.state
    if state is None:
        return None
    last = state.last_event_ms or 0
    if as_of_ms is None:
        as_of_ms = max(now_ms, last)
    elif as_of_ms < last:
        raise AsOfBeforeLastEventError(as_of_ms, last)
    ranks = await store.rfm_ranks(state)
    return render(state, as_of_ms, config, rfm=ranks, watermark=stored.watermark)
