"""A stored profile this version cannot decode (damaged, or written by an incompatible release): reading it
names it instead of failing the whole read, the fold refuses its records without changing anything, and an
erasure still deletes it. Before 2026-12-06 the decoding error failed every batch of the worker that read
it, which retried for ever: every customer of its partitions stopped updating."""

from __future__ import annotations

import pytest

from profiles.apply import new_state_for
from profiles.batch import BatchFold
from profiles.state import encode
from profiles.store import Stored, UnreadableProfileError, stored_from, watermark_bytes
from schemas.resolved import Resolved
from tests.unit.test_apply import CONFIG, event, resolved

RECEIPT = "er_" + "2" * 32
GARBAGE = watermark_bytes(41) + b"\xc1 not msgpack"


def test_bytes_that_do_not_decode_give_an_unreadable_profile_that_names_itself() -> None:
    stored = stored_from("c-bad", GARBAGE)
    assert (stored.watermark, stored.decoded, stored.expected) == (41, None, watermark_bytes(41))
    with pytest.raises(UnreadableProfileError, match="'c-bad' cannot be read") as raised:
        _ = stored.state
    assert raised.value.profile_id == "c-bad"
    short = stored_from("c-short", b"\x00\x01")
    assert (short.watermark, short.expected) == (-1, b"\x00\x01")
    assert short.unreadable is not None
    state = new_state_for("c-ok")
    good = stored_from("c-ok", watermark_bytes(3) + encode(state))
    assert (good.unreadable, good.state) == (None, state)


def test_the_fold_refuses_an_unreadable_profiles_records_and_applies_the_others() -> None:
    fold = BatchFold({"c-bad": stored_from("c-bad", GARBAGE), "c-ok": _absent()}, {}, CONFIG)
    with pytest.raises(UnreadableProfileError):
        fold.apply(resolved(event(n=1, customer_id="c-bad"), "c-bad", offset=1), 0, 50)
    fold.apply(resolved(event(n=2, customer_id="c-ok"), "c-ok", offset=2), 0, 51)
    (write,) = fold.writes(99)
    assert write.profile_id == "c-ok"
    assert write.state is not None
    assert write.state.events_applied == 1


def test_an_erasure_deletes_an_unreadable_profile() -> None:
    fold = BatchFold({"c-bad": stored_from("c-bad", GARBAGE)}, {}, CONFIG)
    fold.apply(Resolved(kind="erase", profile_id="c-bad", other_profile=RECEIPT), 0, 50)
    (write,) = fold.writes(99)
    assert (write.profile_id, write.state, write.erasure_id, write.expected) == (
        "c-bad",
        None,
        RECEIPT,
        watermark_bytes(41),
    )


def _absent() -> Stored:
    return Stored(-1, None, b"")
