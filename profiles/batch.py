"""One apply batch over the profiles it touches: loaded once, folded record by record, written once. Pure.

The caller (the live worker's apply stage, a replay) loads the touched profiles and the erasure markers
of their ids, feeds the batch's ``events.resolved`` records in order, sends what they emit, and stores
``writes()`` with a compare-and-set on each profile's watermark.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import msgspec

from profiles.apply import NOT_DECODED, CorruptRecordError, apply_resolved, event_of, new_state_for
from profiles.config import FoldConfig
from profiles.erasure import event_ids
from profiles.fold import compact
from profiles.models.tracking import ModelTracking
from profiles.state import ProfileState, encode
from profiles.store import ProfileWrite, Stored, UnreadableProfileError, rfm_position
from schemas.events import AnyEvent
from schemas.resolved import Resolved


class _EventId(msgspec.Struct):
    event_id: str = ""


# Only the id: the event itself was validated when it was resolved.
_EVENT_ID: Final = msgspec.json.Decoder(_EventId)


class FoldFailedError(Exception):
    """Folding the record at position ``at`` raised: a defect, since every record the fold is given passed
    validation or was written by the resolver. Folding it again cannot succeed (the fold is pure), so the
    caller sets the record aside and folds the batch again without it, from the stored states: this fold's
    states may be half-changed."""

    def __init__(self, at: int, cause: Exception) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}"[:1000])
        self.at = at


class BatchFold:
    def __init__(
        self,
        stored: dict[str, Stored],
        erased: dict[str, str],
        config: FoldConfig,
        *,
        causes: bool = False,
        positional: bool = True,
        hooks: ModelTracking | None = None,
        decoded: Mapping[bytes, AnyEvent] = NOT_DECODED,
    ) -> None:
        """``stored``: every profile the batch's records are keyed by; ``erased``: the erasure receipt of
        those that were erased; ``causes``: keep each changed profile's last event id (``last_event_id``),
        which costs a decode per event and is only needed when something reacts to changes.

        ``positional=False`` is a replay's mode: its records have no ``events.resolved`` positions, so
        watermarks neither skip records nor move (the live worker's positions stay valid), duplicates are
        recognised by the stream marks and event ids alone, and ``writes()`` leaves out profiles the batch
        did not change (a replay of what a namespace already holds writes nothing).

        ``hooks`` (the models' snapshots and labels) sees every event the fold applies; ``decoded``: the
        records' events already decoded, by their JSON (a replay's resolution decoded them)."""
        self.causes = causes
        self.positional = positional
        self.hooks = hooks
        self.decoded = decoded
        # Replay mode: each profile's encoded state and event count before the batch (its change check).
        self.before: dict[str, bytes] = {}
        self.applied_before: dict[str, int] = {}
        self.stored = stored
        self.erased = dict(erased)
        self.config = config
        self.states: dict[str, ProfileState] = {}
        self.watermarks = {pid: s.watermark for pid, s in stored.items()}
        self.positions_before = {pid: rfm_position(s.decoded) if s.decoded else None for pid, s in stored.items()}
        self.deleted: dict[str, str] = {}  # profile id → erasure receipt
        self.forget: dict[str, set[str]] = {}  # erased profile id → ids whose links to it go (``_erase``)
        self.ingested: list[int] = []
        #: Per changed profile: its events.resolved partition, and the id of the last event applied to it
        #: (the cause of what its change triggers, e.g. segment transitions).
        self.partition_of: dict[str, int] = {}
        self.last_event_id: dict[str, str] = {}

    def include(self, stored: dict[str, Stored], erased: dict[str, str]) -> None:
        """More loaded profiles (and erasure receipts) for records still to come: a replay folds what its
        records emit in further rounds of the same batch."""
        for pid, loaded in stored.items():
            if pid not in self.stored:
                self.stored[pid] = loaded
                self.watermarks[pid] = loaded.watermark
                self.positions_before[pid] = rfm_position(loaded.decoded) if loaded.decoded else None
        for pid, receipt in erased.items():
            self.erased.setdefault(pid, receipt)

    def apply(self, record: Resolved, partition: int, at: int) -> list[Resolved]:
        """Fold one record at position ``at``; returns the records it emits. Raises ``CorruptRecordError`` or
        ``UnreadableProfileError`` (the record's profile does not decode; nothing changed), or
        ``FoldFailedError``."""
        try:
            return self._apply(record, partition, at)
        except (CorruptRecordError, UnreadableProfileError, MemoryError):
            raise
        except Exception as exc:
            raise FoldFailedError(at, exc) from exc

    def _apply(self, record: Resolved, partition: int, at: int) -> list[Resolved]:
        pid = record.profile_id
        if record.kind == "erase" and record.other_profile is not None:
            # The marker was set before this record was sent; it is missing only if Redis lost it.
            self.erased.setdefault(pid, record.other_profile)
        elif record.kind == "merge_out" and record.other_profile in self.erased:
            # Linked to a customer erased meanwhile (the identify was resolved just before the erasure): the
            # visitor's profile goes with the customer instead of being handed over to nobody.
            self.erased.setdefault(pid, self.erased[record.other_profile])
        if pid in self.erased:
            return self._erase(pid, record, partition)
        if self.positional and at <= self.watermarks[pid]:
            return []  # applied before: a redelivery after a crash or rebalance
        state = self.states.get(pid) or self.stored[pid].state or new_state_for(pid)
        if not self.positional and pid not in self.before:
            self._note_before(pid, state)
        if self.hooks is not None:
            self.hooks.partition = partition
        state, emitted = apply_resolved(
            state, record, partition=partition, offset=at, config=self.config, hooks=self.hooks, decoded=self.decoded
        )
        self.states[pid] = state
        if self.positional:
            self.watermarks[pid] = at
        self.partition_of[pid] = partition
        if self.causes:
            self._note_cause(pid, record)
        forwarded = bool(emitted) and any(e.kind == "forward" for e in emitted)  # counted where it lands, not twice
        if record.ingested_ms is not None and record.kind in ("event", "forward") and not forwarded:
            self.ingested.append(record.ingested_ms)
        return emitted

    def _erase(self, pid: str, record: Resolved, partition: int) -> list[Resolved]:
        """A record for an erased profile: nothing more is applied, and the profile goes (also when only
        in-flight events remain), with every id that it or its refused events tie to it.

        The erasure record names the ids the customer had when it was requested. An identify resolved while
        the API recorded it can still link more (a visitor id, an email) and be applied on either side of
        the erasure: what the profile knows when it goes and what its refused events carry are forgotten
        here, under the same receipt (docs/erasure.md)."""
        receipt = self.erased[pid]
        # An unreadable profile goes too: the ids its state holds are then only those the erasure names.
        known = self.states.pop(pid, None) or self.stored[pid].decoded
        self.partition_of[pid] = partition
        forget = self.forget.setdefault(pid, set())
        out: list[Resolved] = []
        if known is not None and pid not in self.deleted:
            forget.update(known.anonymous_ids, known.emails)
            # The visitors it absorbed leave tombstones keyed by their own ids: they go too.
            out += [Resolved(kind="erase", profile_id=v, other_profile=receipt) for v in known.absorbed]
        if record.kind in ("event", "forward"):
            forget.update(event_ids(event_of(record, self.decoded)))
        forget.discard(pid)
        # A visitor handed over to an erased customer goes even if it has no profile: its link must go.
        if record.kind in ("erase", "merge_out") or known is not None or forget:
            self.deleted[pid] = receipt
        if record.kind == "merge_in" and record.other_profile is not None:
            # A visitor handed over before the erasure but after its record was written (the erasure did
            # not know the link yet): its tombstone goes too.
            out.append(Resolved(kind="erase", profile_id=record.other_profile, other_profile=receipt))
        return out

    def _note_before(self, pid: str, state: ProfileState) -> None:
        stored = self.stored[pid]
        if stored.state is None:
            self.before[pid] = b""
        else:
            # The bytes as loaded: encoding the state again would give the same ones (a state written by an
            # older schema differs, and is then rewritten in the current one).
            self.before[pid] = stored.encoded if stored.encoded is not None else encode(state)
        self.applied_before[pid] = state.events_applied

    def _note_cause(self, pid: str, record: Resolved) -> None:
        if record.event is not None and record.kind in ("event", "forward"):
            self.last_event_id[pid] = _EVENT_ID.decode(record.event).event_id
        elif record.kind == "merge_in":
            self.last_event_id[pid] = f"merge:{record.other_profile}"

    def writes(self, updated_ms: int) -> list[ProfileWrite]:
        out = []
        for pid, state in self.states.items():
            compact(state, self.config)
            # An event counted is a change; otherwise only the encodings tell (a merge, a hand-over, marks).
            if (
                not self.positional
                and state.events_applied == self.applied_before[pid]
                and encode(state) == self.before[pid]
            ):
                continue
            state.updated_ms = updated_ms
            moved = rfm_position(state) != self.positions_before[pid]
            expected, partition = self.stored[pid].expected, self.partition_of.get(pid)
            # A replay keeps what it wrote decoded, with these bytes as the next chunk's ``before``.
            encoded = None if self.positional else encode(state)
            watermark = self.watermarks[pid]
            out.append(ProfileWrite(pid, expected, watermark, state, moved, partition=partition, encoded=encoded))
        for pid, erasure_id in self.deleted.items():
            stored = self.stored[pid]
            dropped = self.positions_before[pid] is not None
            forget = tuple(sorted(self.forget.get(pid, ())))
            out.append(
                ProfileWrite(
                    pid,
                    stored.expected,
                    stored.watermark,
                    None,
                    dropped,
                    erasure_id,
                    self.partition_of.get(pid),
                    forget=forget,
                )
            )
        return out
