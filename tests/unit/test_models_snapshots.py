"""Signed snapshots: what was signed loads; anything else is refused before a byte is unpickled."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from profiles.models.snapshots import (
    MAGIC,
    SnapshotMeta,
    SnapshotRejectedError,
    dump_snapshot,
    load_snapshot,
    read_meta,
    retain,
)
from profiles.models.specs import PURCHASE_PROPENSITY, default_specs
from profiles.models.trainer import ModelTrainer, restore

SECRET = b"s3cret-for-tests"
META = SnapshotMeta(name="m", version=7, created_at_ms=1, examples_seen=42, horizon_ms=5, metrics={"roc_auc": 0.8})


class Bomb:
    """Unpickling this would run code: the refusal tests prove it never happens."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (pytest.fail, ("unpickled unverified bytes",))


def flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 1]) + blob[at + 1 :]


def test_a_signed_snapshot_round_trips_with_its_metadata() -> None:
    blob = dump_snapshot(META, {"weights": [1.0, 2.0]}, SECRET)
    loaded = load_snapshot(blob, SECRET)
    assert loaded.meta == META
    assert loaded.payload == {"weights": [1.0, 2.0]}
    assert read_meta(blob, SECRET) == META


@pytest.mark.parametrize("where", ["magic", "tag", "meta", "payload", "last"])
def test_a_tampered_snapshot_is_refused(where: str) -> None:
    blob = dump_snapshot(META, [1, 2, 3], SECRET)
    at = {"magic": 0, "tag": len(MAGIC) + 3, "meta": len(MAGIC) + 32 + 10, "payload": len(blob) - 5, "last": -1}[where]
    with pytest.raises(SnapshotRejectedError):
        load_snapshot(flip(blob, at % len(blob)), SECRET)


def test_a_snapshot_signed_with_another_secret_is_refused() -> None:
    with pytest.raises(SnapshotRejectedError, match="signature"):
        load_snapshot(dump_snapshot(META, Bomb(), b"another secret"), SECRET)


def test_unsigned_and_truncated_bytes_are_refused_without_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*_: object, **__: object) -> None:
        pytest.fail("pickle.loads was called")

    monkeypatch.setattr(pickle, "loads", never)
    for blob in (pickle.dumps(Bomb()), b"", MAGIC, dump_snapshot(META, 1, SECRET)[:-3], MAGIC + pickle.dumps(Bomb())):
        with pytest.raises(SnapshotRejectedError):
            load_snapshot(blob, SECRET)


def test_a_payload_grafted_under_a_valid_header_is_refused() -> None:
    good = dump_snapshot(META, 1, SECRET)
    evil = dump_snapshot(META, Bomb(), b"attacker")
    header = len(MAGIC) + 32
    with pytest.raises(SnapshotRejectedError):
        load_snapshot(good[:header] + evil[header:], SECRET)


def test_an_empty_secret_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        dump_snapshot(META, 1, b"")
    with pytest.raises(ValueError, match="empty"):
        load_snapshot(dump_snapshot(META, 1, SECRET), b"")


def test_a_trainer_snapshot_must_hold_a_trainer_for_the_configured_definition() -> None:
    spec = default_specs()[PURCHASE_PROPENSITY]
    trainer = ModelTrainer(spec)
    blob = dump_snapshot(trainer.snapshot_meta(1, 0), trainer, SECRET)
    assert restore(load_snapshot(blob, SECRET), spec).examples_seen == 0
    longer = default_specs(purchase_horizon_days=14)[PURCHASE_PROPENSITY]
    with pytest.raises(SnapshotRejectedError, match="another definition"):
        restore(load_snapshot(blob, SECRET), longer)
    with pytest.raises(SnapshotRejectedError, match="no model trainer"):
        restore(load_snapshot(dump_snapshot(META, {"not": "a trainer"}, SECRET), SECRET), spec)


def test_retention_keeps_the_newest_versions() -> None:
    assert retain([3, 1, 2], keep=5) == ([3, 2, 1], [])
    assert retain([10, 11, 9, 12], keep=2) == ([12, 11], [10, 9])
    with pytest.raises(ValueError, match="at least one"):
        retain([1], keep=0)
