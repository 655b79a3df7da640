"""A replay's batch (``positional=False``): it writes only the profiles it changed, hands the store the
bytes it compared, and folds events its resolution already decoded exactly as it would decode them."""

from __future__ import annotations

import pytest

import profiles.batch
from profiles.apply import CorruptRecordError, new_state_for
from profiles.batch import BatchFold, FoldFailedError
from profiles.state import encode
from profiles.store import ABSENT, Stored, watermark_bytes
from schemas.resolved import Resolved
from tests.unit.test_apply import CONFIG, event, parsed, resolved, run


def _stored(*raws: bytes) -> Stored:
    """A profile as loaded from Redis after ``raws`` (raw offsets 1, 2, …) were applied."""
    state = new_state_for("c-1")
    for offset, raw in enumerate(raws, start=1):
        state, _ = run(state, resolved(raw, "c-1", offset=offset))
    state.updated_ms = 7
    return Stored(3, state, watermark_bytes(3), encode(state))


def _replay_fold(stored: Stored) -> BatchFold:
    return BatchFold({"c-1": stored}, {}, CONFIG, positional=False)


def test_a_replay_of_what_a_profile_holds_writes_nothing() -> None:
    first, second = event(n=1, customer_id="c-1"), event(n=2, customer_id="c-1")
    fold = _replay_fold(_stored(first, second))
    fold.apply(resolved(first, "c-1", offset=1), 0, 1)
    fold.apply(resolved(second, "c-1", offset=2), 0, 2)
    assert fold.writes(99) == []


def test_a_new_event_is_written_with_the_bytes_of_the_state_written() -> None:
    first = event(n=1, customer_id="c-1")
    fold = _replay_fold(_stored(first))
    fold.apply(resolved(event(n=2, customer_id="c-1"), "c-1", offset=2), 0, 1)
    (write,) = fold.writes(99)
    assert write.state is not None
    assert write.state.events_applied == 2
    assert write.state.updated_ms == 99
    assert write.encoded == encode(write.state)


def test_a_profile_stored_in_other_bytes_is_rewritten_even_without_new_events() -> None:
    """What was loaded is the comparison base: bytes an older schema wrote differ from the current encoding,
    so the replay rewrites the profile in the current one (the state itself is the same)."""
    first = event(n=1, customer_id="c-1")
    loaded = _stored(first)
    older = Stored(loaded.watermark, loaded.state, loaded.expected, (loaded.encoded or b"") + b"\x00")
    fold = _replay_fold(older)
    fold.apply(resolved(first, "c-1", offset=1), 0, 1)
    (write,) = fold.writes(99)
    assert write.state is not None
    assert write.state.events_applied == 1


def test_events_decoded_by_the_resolution_fold_as_their_bytes_do() -> None:
    raws = [event(n=n, customer_id="c-1", at=1_740_000_000_000 + n * 60_000) for n in range(1, 6)]
    results = []
    for decoded in ({}, {raw: parsed(raw) for raw in raws}):
        fold = BatchFold({"c-1": Stored(-1, None, ABSENT)}, {}, CONFIG, positional=False, decoded=decoded)
        for offset, raw in enumerate(raws, start=1):
            fold.apply(resolved(raw, "c-1", offset=offset), 0, offset)
        (write,) = fold.writes(99)
        results.append(write.encoded)
    assert results[0] == results[1]


def test_an_event_decoded_beforehand_is_not_decoded_again() -> None:
    raw = event(n=1, customer_id="c-1")
    other = parsed(event(n=2, customer_id="c-1", kind="purchase"))
    fold = BatchFold({"c-1": Stored(-1, None, ABSENT)}, {}, CONFIG, positional=False, decoded={raw: other})
    fold.apply(resolved(raw, "c-1", offset=1), 0, 1)
    (write,) = fold.writes(99)
    assert write.state is not None
    assert write.state.orders == 1, "the event given for these bytes was folded"


def test_a_fold_that_raises_names_the_record_and_a_corrupt_record_stays_a_corrupt_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the callers tell apart: a defect (``FoldFailedError``, with the record's position: set aside and
    the batch folded again) from a record the resolver cannot have written (``CorruptRecordError``:
    dead-lettered, nothing changed)."""
    first = event(n=1, customer_id="c-1")
    fold = _replay_fold(_stored(first))
    with pytest.raises(CorruptRecordError):
        fold.apply(Resolved(kind="forward", profile_id="c-1", event=first), 0, 5)

    def defect(*_: object, **__: object) -> None:
        raise KeyError("bucket")

    monkeypatch.setattr(profiles.batch, "apply_resolved", defect)
    with pytest.raises(FoldFailedError, match=r"^KeyError: 'bucket'$") as failed:
        fold.apply(resolved(event(n=2, customer_id="c-1"), "c-1", offset=2), 0, 6)
    assert failed.value.at == 6
    assert isinstance(failed.value.__cause__, KeyError)
