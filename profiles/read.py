"""The profile read model shared by ``rapport profile get`` and the API: any known id → the view.

A read is a fixed number of round trips whatever the number of ids: resolve every id and load the profiles
stored under the ids themselves (one pipeline), load those reached through an alias or an email (one
MGET, often none), follow the few merged-away ones (one more MGET, rare), rank the buyers in the RFM
population (one pipeline; none when the caller holds the population's ``RfmThresholds``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from profiles.config import FoldConfig
from profiles.erasure import erasure_record, requested_ids
from profiles.models.scoring import Score, ServedModel, score_all
from profiles.models.specs import ModelSpec
from profiles.rfm import RfmScores, RfmThresholds
from profiles.state import ANON_PREFIX, ProfileState, new_profile
from profiles.store import ProfileStore, Resolution, Stored, UnreadableProfileError, rfm_position
from profiles.timeutil import iso
from profiles.view import render
from schemas.erasure import ErasureRecord


class AsOfBeforeLastEventError(ValueError):
    """The view is defined for instants at or after the profile's latest event."""

    def __init__(self, as_of_ms: int, last_event_ms: int) -> None:
        super().__init__(f"as_of {iso(as_of_ms)} is before the profile's last event, {iso(last_event_ms)}")
        self.as_of_ms = as_of_ms
        self.last_event_ms = last_event_ms


@dataclass(frozen=True, slots=True)
class ProfileRead:
    """What one requested id gave: the view, or why there is none (``view`` and ``error`` both None:
    no profile has the id)."""

    view: dict[str, Any] | None = None
    error: AsOfBeforeLastEventError | UnreadableProfileError | None = None


async def read_profile(
    store: ProfileStore, any_id: str, config: FoldConfig, *, as_of_ms: int | None, now_ms: int
) -> dict[str, Any] | None:
    """The canonical profile of a customer id, anonymous id or email, or None if no profile has it.

    ``as_of_ms`` defaults to ``now_ms`` (the caller's clock), or to the profile's latest event if that is
    later; an explicit ``as_of_ms`` before the profile's latest event is refused
    (``AsOfBeforeLastEventError``) rather than answered with numbers that mean nothing.
    """
    result = (await read_profiles(store, [any_id], config, as_of_ms=as_of_ms, now_ms=now_ms))[any_id]
    if result.error is not None:
        raise result.error
    return result.view


async def read_profiles(
    store: ProfileStore,
    any_ids: Sequence[str],
    config: FoldConfig,
    *,
    as_of_ms: int | None,
    now_ms: int,
    thresholds: RfmThresholds | None = None,
    resolution: Resolution | None = None,
) -> dict[str, ProfileRead]:
    """``read_profile`` of each id (duplicates read once), with per-id errors instead of exceptions.

    RFM scores are exact against the population now, or against ``thresholds`` when given (a recent
    snapshot of the population, which saves a round trip per read). ``resolution``: the ids' resolution
    if the caller already read it (``ProfileStore.queue_resolution``)."""
    ids = list(dict.fromkeys(any_ids))
    canonical = await _canonical(store, ids, resolution)
    live = {s.decoded.profile_id: s.decoded for s in canonical.values() if s is not None and s.decoded is not None}
    if thresholds is not None:
        positions = {pid: rfm_position(state) for pid, state in live.items()}
        ranks = {pid: None if p is None else thresholds.scores(p) for pid, p in positions.items()}
    else:
        exact = await store.rfm_ranks_of(list(live.values()))
        ranks = {pid: r.scores() if r is not None else None for pid, r in zip(live, exact, strict=True)}
    out: dict[str, ProfileRead] = {}
    for any_id in ids:
        found = canonical[any_id]
        if found is not None and found.unreadable is not None:
            out[any_id] = ProfileRead(error=found.unreadable)
        elif found is None or found.decoded is None:
            out[any_id] = ProfileRead()
        else:
            pid = found.decoded.profile_id
            out[any_id] = _view(live[pid], found.watermark, ranks[pid], config, as_of_ms=as_of_ms, now_ms=now_ms)
    return out


@dataclass(frozen=True, slots=True)
class ScoresRead:
    """What one requested id gave: the profile id and its scores, or why there are none (both None: no
    profile has the id)."""

    profile_id: str | None = None
    scores: dict[str, Score] | None = None
    error: AsOfBeforeLastEventError | UnreadableProfileError | None = None


async def read_scores(
    store: ProfileStore,
    any_ids: Sequence[str],
    config: FoldConfig,
    specs: Mapping[str, ModelSpec],
    models: Mapping[str, ServedModel],
    *,
    as_of_ms: int | None,
    now_ms: int,
    resolution: Resolution | None = None,
) -> dict[str, ScoresRead]:
    """Every model's score for each id's canonical profile at ``as_of_ms`` (default: now, or the profile's
    latest event if later; earlier than that is refused, as for profiles). ``resolution`` as for
    ``read_profiles``."""
    ids = list(dict.fromkeys(any_ids))
    canonical = await _canonical(store, ids, resolution)
    out: dict[str, ScoresRead] = {}
    for any_id in ids:
        found = canonical[any_id]
        if found is not None and found.unreadable is not None:
            out[any_id] = ScoresRead(found.unreadable.profile_id, error=found.unreadable)
            continue
        state = None if found is None else found.decoded
        if state is None:
            out[any_id] = ScoresRead()
            continue
        last = state.last_event_ms or 0
        if as_of_ms is not None and as_of_ms < last:
            out[any_id] = ScoresRead(state.profile_id, error=AsOfBeforeLastEventError(as_of_ms, last))
            continue
        at = max(now_ms, last) if as_of_ms is None else as_of_ms
        out[any_id] = ScoresRead(state.profile_id, score_all(state, at, config, specs, models, computed_at_ms=now_ms))
    return out


async def canonical_states(store: ProfileStore, any_ids: Sequence[str]) -> dict[str, ProfileState | None]:
    """The state each id resolves to (following merged visitors); None where no profile has the id."""
    canonical = await _canonical(store, any_ids)
    return {any_id: None if found is None else found.state for any_id, found in canonical.items()}


async def canonical_state(store: ProfileStore, any_id: str) -> ProfileState | None:
    """``canonical_states`` of one id."""
    return (await canonical_states(store, [any_id]))[any_id]


async def erasure_of(store: ProfileStore, erasure_id: str, requested_id: str, *, requested_at_ms: int) -> ErasureRecord:
    """The record of erasing ``requested_id`` now: the customer it resolves to with its ids, less the ids
    linked to another customer (``erasure_record``); for an id no profile has, the spellings of it that no
    other profile has. A customer whose stored profile does not decode is erased too, with the ids its links
    name: an erasure must not wait for a repair."""
    spellings = requested_ids(requested_id)
    found = await _canonical(store, spellings)  # the other spellings in the same round trips
    mine = found[requested_id]
    state = None if mine is None else mine.decoded
    if mine is not None and mine.unreadable is not None:
        state = await _known_of_unreadable(store, mine.unreadable.profile_id)
    owners = await store.link_owners([*state.anonymous_ids, *state.emails]) if state is not None else {}
    held = [i for i in spellings if i != requested_id and found[i] is not None]
    return erasure_record(erasure_id, requested_id, state, requested_at_ms=requested_at_ms, owners=owners, held=held)


async def _known_of_unreadable(store: ProfileStore, profile_id: str) -> ProfileState:
    """What the store knows of a profile whose state does not decode: its id and, for a customer, the ids its
    links name."""
    if profile_id.startswith(ANON_PREFIX):
        return new_profile(profile_id, None)
    state = new_profile(profile_id, profile_id)
    state.anonymous_ids, state.emails = await store.links_of(profile_id)
    return state


async def _canonical(
    store: ProfileStore, any_ids: Sequence[str], resolution: Resolution | None = None
) -> dict[str, Stored | None]:
    """The stored canonical profile of each id, in a fixed number of round trips: resolve every id and
    load the profiles stored under the ids themselves (one pipeline; skipped when the caller already holds
    this ``resolution``), then those reached through an alias or an email (one MGET, often none), then the
    customers of merged-away visitors (one more, rare)."""
    first = resolution if resolution is not None else await store.resolve_and_load(any_ids)
    resolved, stored = first.resolved, dict(first.stored)
    others = [pid for pid in dict.fromkeys(resolved.values()) if pid is not None and pid not in stored]
    if others:
        stored.update(await store.load(others))
    merged = {pid: s.decoded.merged_into for pid, s in stored.items() if s.decoded and s.decoded.merged_into}
    if merged:
        targets = await store.load(list(dict.fromkeys(merged.values())))
        stored.update({pid: targets[target] for pid, target in merged.items()})
    out: dict[str, Stored | None] = {}
    for any_id in any_ids:
        pid = resolved[any_id]
        out[any_id] = None if pid is None or pid not in stored else stored[pid]
    return out


def _view(
    state: ProfileState, watermark: int, rfm: RfmScores | None, config: FoldConfig, *, as_of_ms: int | None, now_ms: int
) -> ProfileRead:
    last = state.last_event_ms or 0
    if as_of_ms is None:
        at = max(now_ms, last)
    elif as_of_ms < last:
        return ProfileRead(error=AsOfBeforeLastEventError(as_of_ms, last))
    else:
        at = as_of_ms
    view = render(state, at, config, rfm=rfm, watermark=watermark)
    view["meta"]["computed_at"] = iso(now_ms)
    return ProfileRead(view=view)
